"""[[classes]] (request classes, docs/degradation.md) and [[api_keys]] (keys naming their class)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from hanode.policies.classes import (
    DEFAULT_CLASSES,
    HASH_PREFIX,
    KeyGrant,
    RequestClass,
    merge_classes,
)
from hanode.policies.degradation import DegradeConfig, Levels
from hanode.router.admission_config import AdmissionConfig, ModelAdmission
from hanode.settings.api_keys import MIN_API_KEY_LENGTH
from hanode.settings.reader import Table
from hanode.settings.schema import build, required, setting, settings
from hanode.settings.sections_cluster import ModelConfig
from hanode.settings.sections_node import RouterConfig
from hanode.settings.value_checks import NAME_RE

SHA256_RE = re.compile(r"[0-9a-f]{64}")
__all__ = ["HASH_PREFIX", "ClassConfig", "KeyConfig"]


@dataclass(frozen=True, slots=True)
@settings
class ClassConfig:
    name: str = required(
        "class name (interactive, internal, batch are built in: a block of that name "
        "replaces the default)",
        example="interactive",
        pattern=NAME_RE,
        to=RequestClass,
    )
    priority: int = setting("0 is served first; higher waits for lower", ge=0, to=RequestClass)
    availability_target: float = setting(
        "share of requests that must succeed (the SLO; its error budget drives the burn rates)",
        gt=0,
        le=0.99999,
        to=RequestClass,
    )
    queue_timeout_s: float = setting(
        "how long a request may wait for capacity before it gets 429 with Retry-After",
        ge=0,
        to=RequestClass,
    )
    max_queue: int = setting(
        "requests of this class waiting per model on this router at most (0: never wait)",
        ge=0,
        to=RequestClass,
    )
    capacity_share: float = setting(
        "share of a model's capacity its requests may hold at once; the rest stays free for "
        "more urgent classes, so they need not wait for a place",
        gt=0,
        le=1,
        to=RequestClass,
    )
    degrade: bool = setting(
        "its requests may be degraded under pressure (max_tokens, prompt, temperature caps)",
        to=RequestClass,
    )
    fallback: bool = setting(
        "its requests may go to the model's fallback chain when the model is out of capacity "
        "or gone",
        to=RequestClass,
    )


def check_classes(t: Table, c: ClassConfig, earlier: Sequence[tuple[int, ClassConfig]]) -> None:
    if any(e.name == c.name for _, e in earlier):
        t.error("name", f"class {c.name!r} is configured twice")


@dataclass(frozen=True, slots=True)
@settings
class KeyConfig:
    name: str = required(
        "a label for this key (metrics, fairness between keys; never the key itself)",
        example="chat-frontend",
        pattern=NAME_RE,
    )
    key: str | None = setting(
        "the bearer key itself (prefer sha256: then this file holds no secret)",
        default=None,
        example="a-long-random-key-only-you-know",
    )
    sha256: str | None = setting(
        "SHA-256 of the bearer key, lowercase hex (`printf %s KEY | sha256sum`)",
        default=None,
        example="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    )
    request_class: str = setting(
        "the class of this key's requests", default="interactive", example="interactive"
    )
    class_header: bool = setting(
        "the client may name another class with the x-hanode-class header", default=False
    )


def check_keys(t: Table, k: KeyConfig, earlier: Sequence[tuple[int, KeyConfig]]) -> None:
    if (k.key is None) == (k.sha256 is None):
        t.error("key", "give exactly one of key and sha256", mark_bad=False)
    if k.key is not None and (len(k.key) < MIN_API_KEY_LENGTH or k.key != k.key.strip()):
        t.error("key", f"keys must be at least {MIN_API_KEY_LENGTH} characters, no spaces")
    if k.sha256 is not None and not SHA256_RE.fullmatch(k.sha256):
        t.error("sha256", "must be 64 lowercase hex digits")
    if any(e.name == k.name for _, e in earlier):
        t.error("name", f"key {k.name!r} is configured twice")


def class_reference_errors(
    source: str,
    classes: Sequence[ClassConfig],
    keys: Sequence[KeyConfig],
    default_class: str,
) -> list[str]:
    """Keys and [router].default_class must name a class that exists."""
    known = {c.name for c in DEFAULT_CLASSES} | {c.name for c in classes}
    out = [
        f"{source}: [[api_keys]][{i}].request_class: no class {k.request_class!r} "
        f"(known: {', '.join(sorted(known))})"
        for i, k in enumerate(keys)
        if k.request_class not in known
    ]
    if default_class not in known:
        out.append(f"{source}: [router].default_class: no class {default_class!r}")
    return out


def build_admission(
    router: RouterConfig,
    classes: Sequence[ClassConfig],
    keys: Sequence[KeyConfig],
    models: Sequence[ModelConfig],
) -> AdmissionConfig:
    """The admission gate's configuration from the sections that feed it."""
    plain: dict[bytes, KeyGrant] = {}
    hashed: dict[str, KeyGrant] = {}
    for k in keys:
        grant = KeyGrant(k.name, k.request_class, k.class_header)
        if k.key is not None:
            plain[k.key.encode()] = grant
        elif k.sha256 is not None:
            hashed[k.sha256] = grant
    for i, item in enumerate(router.api_keys):
        if item.startswith(HASH_PREFIX):
            hashed.setdefault(
                item[len(HASH_PREFIX) :].lower(), KeyGrant(f"key{i}", router.default_class)
            )
    per_model = {
        m.name: ModelAdmission(
            m.max_concurrency,
            m.fallback,
            DegradeConfig(
                m.degrade_max_tokens,
                m.degrade_max_tokens_floor,
                m.degrade_max_prompt_tokens,
                m.degrade_temperature,
                {
                    p: Levels(getattr(m, f"degrade_{p}_engage"), getattr(m, f"degrade_{p}_release"))
                    for p in ("max_tokens", "prompt", "temperature")
                },
            ),
        )
        for m in models
    }
    return AdmissionConfig(
        enabled=router.admission,
        max_concurrency=router.max_concurrency,
        default_class=router.default_class,
        classes=merge_classes(tuple(build(RequestClass, c) for c in classes)),
        plain_keys=plain,
        hashed_keys=hashed,
        models=per_model,
    )
