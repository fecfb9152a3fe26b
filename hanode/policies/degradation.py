"""Degradation policies of one model, switched by its pressure with hysteresis (pure).

Each policy engages when the model's pressure (:func:`hanode.policies.admission.pressure`)
reaches its ``engage`` level and releases only once it falls to its ``release`` level, so a
pressure hovering at one mark does not flap. While engaged, a new request of a class that may
be degraded is changed before it is sent:

- ``max_tokens``: its max_tokens (or max_completion_tokens) is capped, set if absent. The cap
  tightens as pressure grows (``cap x engage / pressure``) but never below ``floor``: a
  reasoning model spends its first tokens thinking, a tight cap would leave none to answer.
- ``prompt``: prompts estimated above ``max_prompt_tokens`` are refused with 400
  ``context_length_exceeded`` (estimated as UTF-8 bytes / 4: the router has no tokenizer).
- ``temperature``: a temperature above the cap is lowered to it (absent: set to it).

Fallback to a smaller model is decided by capacity, not by these levels (router/admission.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

POLICIES = ("max_tokens", "prompt", "temperature")
BYTES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Levels:
    engage: float
    release: float


@dataclass(frozen=True, slots=True)
class DegradeConfig:
    """A model's policies; a None value leaves that policy off."""

    max_tokens: int | None = None
    max_tokens_floor: int = 0
    max_prompt_tokens: int | None = None
    temperature: float | None = None
    levels: dict[str, Levels] = field(
        default_factory=lambda: {
            "max_tokens": Levels(1.2, 0.9),
            "temperature": Levels(1.5, 1.0),
            "prompt": Levels(2.0, 1.2),
        }
    )

    def enabled(self) -> tuple[str, ...]:
        on = {
            "max_tokens": self.max_tokens is not None,
            "prompt": self.max_prompt_tokens is not None,
            "temperature": self.temperature is not None,
        }
        return tuple(p for p in POLICIES if on[p])


@dataclass(frozen=True, slots=True)
class Change:
    policy: str
    engaged: bool
    pressure: float


class DegradeState:
    """Which of a model's policies are engaged; :meth:`update` moves them with hysteresis."""

    __slots__ = ("config", "engaged", "policies", "pressure")

    def __init__(self, config: DegradeConfig) -> None:
        self.config = config
        self.policies = config.enabled()
        self.engaged: set[str] = set()
        self.pressure = 0.0

    def update(self, pressure: float) -> list[Change]:
        self.pressure = pressure
        if not self.policies:
            return []
        changes: list[Change] = []
        for policy in self.policies:
            levels = self.config.levels[policy]
            if policy not in self.engaged and pressure >= levels.engage:
                self.engaged.add(policy)
                changes.append(Change(policy, True, pressure))
            elif policy in self.engaged and pressure <= levels.release:
                self.engaged.discard(policy)
                changes.append(Change(policy, False, pressure))
        return changes

    def cap(self) -> int | None:
        """The max_tokens cap now, or None while that policy is released."""
        cfg = self.config
        if "max_tokens" not in self.engaged or cfg.max_tokens is None:
            return None
        engage = cfg.levels["max_tokens"].engage
        scaled = cfg.max_tokens
        if math.isfinite(self.pressure) and self.pressure > engage:
            scaled = math.floor(cfg.max_tokens * engage / self.pressure)
        elif not math.isfinite(self.pressure):
            scaled = 0
        return max(cfg.max_tokens_floor, scaled, 1)


class PromptTooLong(Exception):
    def __init__(self, estimated: int, limit: int) -> None:
        super().__init__(
            f"this model is degraded under load: prompts are limited to about {limit} tokens "
            f"for now, this one has about {estimated}; shorten it or retry later"
        )
        self.estimated = estimated
        self.limit = limit


def prompt_tokens(body: dict[str, Any]) -> int:
    """An estimate of the prompt's tokens from its text (bytes / 4; token arrays counted)."""
    total = 0
    prompt = body.get("prompt")
    messages = body.get("messages")
    parts: list[Any] = []
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        parts.extend(prompt)
    elif prompt is not None:
        parts.append(prompt)
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict):
                content = m.get("content")
                if isinstance(content, list):
                    parts.extend(c.get("text", "") for c in content if isinstance(c, dict))
                else:
                    parts.append(content)
    for p in parts:
        if isinstance(p, str):
            total += len(p.encode())
        elif isinstance(p, list):
            total += len(p) * BYTES_PER_TOKEN
    return math.ceil(total / BYTES_PER_TOKEN)


def degrade(state: DegradeState, body: dict[str, Any]) -> list[str]:
    """Apply the engaged policies to ``body`` in place; returns those that changed it.
    Raises :class:`PromptTooLong` when the prompt policy refuses it."""
    applied: list[str] = []
    cfg = state.config
    engaged = state.engaged
    if "prompt" in engaged and cfg.max_prompt_tokens is not None:
        estimated = prompt_tokens(body)
        if estimated > cfg.max_prompt_tokens:
            raise PromptTooLong(estimated, cfg.max_prompt_tokens)
    cap = state.cap()
    if cap is not None:
        key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        asked = body.get(key)
        if not isinstance(asked, int) or asked > cap:
            body[key] = cap
            applied.append("max_tokens")
    if "temperature" in engaged and cfg.temperature is not None:
        t = body.get("temperature")
        if not isinstance(t, int | float) or t > cfg.temperature:
            body["temperature"] = cfg.temperature
            applied.append("temperature")
    return applied
