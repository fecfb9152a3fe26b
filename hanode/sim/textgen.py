"""Deterministic fake text and approximate token counting (pure)."""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from typing import Any, Final

VOCAB: Final = (
    "the", "replica", "answers", "quickly", "while", "a", "router", "keeps", "traffic", "away",
    "from", "slow", "engines", "and", "every", "token", "arrives", "on", "time", "under",
    "load", "gpu", "memory", "stays", "within", "bounds", "because", "health", "checks", "watch",
    "queue", "depth", "latency", "errors", "cache", "blocks", "batch", "prefill", "decode", "model",
    "weights", "stream", "chunk", "request", "response", "node", "cluster", "failover", "standby",
    "primary", "leader", "probe", "signal", "budget", "retry", "window", "steady", "calm", "bright",
    "river", "stone", "light", "north", "quiet",
)  # fmt: skip

_RANDOM: Final = random.Random()


def count_words(text: str) -> int:
    """Approximate tokens: whitespace-separated words."""
    return len(text.split())


def content_words(content: Any) -> int:
    """Words in a chat message content: a string, a list of parts, or None."""
    if isinstance(content, str):
        return count_words(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    total += count_words(text)
            elif isinstance(part, str):
                total += count_words(part)
        return total
    return 0


def chat_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """All message contents plus 4 per message (role and framing)."""
    return sum(content_words(m.get("content")) + 4 for m in messages)


def random_words(n: int) -> list[str]:
    return _RANDOM.choices(VOCAB, k=n)


# -- a deterministic "language model": each word is a function of (seed, choice, context) --------
_MASK64: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E37_79B9_7F4A_7C15


def _step(state: int, word: str) -> int:
    """Fold one word into the running state (splitmix64-like; stable across processes)."""
    x = ((state ^ zlib.crc32(word.encode())) * _GOLDEN + 1) & _MASK64
    x ^= x >> 31
    return (x * 0xBF58_476D_1CE4_E5B9) & _MASK64


def next_words(seed: int, index: int, context: Sequence[str], n: int) -> list[str]:
    """``n`` words continuing ``context`` (the words before them), like greedy decoding.

    Each word depends only on the seed, the choice index and every word before it, so a request
    whose context is an earlier one's context plus the first k words it generated gets exactly
    that request's words from k on: what mid-stream continuation relies on."""
    state = _step(_GOLDEN * (index + 1) & _MASK64, str(seed))
    for word in context:
        state = _step(state, word)
    out: list[str] = []
    size = len(VOCAB)
    for _ in range(max(n, 0)):
        word = VOCAB[(state >> 33) % size]
        out.append(word)
        state = _step(state, word)
    return out


def completion_context(prompt: str) -> tuple[tuple[str, ...], bool]:
    """The context words of a text prompt, and whether the first new word needs a space
    before it (the prompt ends in a word: real tokenizers put the space in the next token)."""
    return tuple(prompt.split()), bool(prompt) and not prompt[-1].isspace()


def chat_context(
    messages: Sequence[dict[str, Any]], continue_final: bool
) -> tuple[tuple[str, ...], bool]:
    """Context words of a conversation: a role marker and the words of each message, then the
    assistant's marker (the generation prompt), unless the final message is continued
    (``continue_final_message``: vLLM's and SGLang's way to extend a partial answer)."""
    words: list[str] = []
    for m in messages:
        words.append(f"<|{m.get('role')}|>")
        words.extend(_content_text(m.get("content")).split())
    if not continue_final:
        words.append("<|assistant|>")
        return tuple(words), False
    last = _content_text(messages[-1].get("content")) if messages else ""
    return tuple(words), bool(last) and not last[-1].isspace()


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p if isinstance(p, str) else str(p.get("text", "")) if isinstance(p, dict) else ""
            for p in content
        )
    return ""


def join_tokens(words: Sequence[str], lead: bool = False) -> str:
    """The text of ``words``; ``lead``: with a space before the first (see completion_context)."""
    text = " ".join(words)
    return " " + text if lead and text else text


def token_deltas(words: Sequence[str], lead: bool = False) -> list[str]:
    """Stream deltas whose concatenation is ``join_tokens(words, lead)``."""
    return [w if i == 0 and not lead else " " + w for i, w in enumerate(words)]
