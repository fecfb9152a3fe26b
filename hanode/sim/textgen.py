"""Deterministic fake text and approximate token counting (pure)."""

from __future__ import annotations

import hashlib
import random
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


def seeded_words(key: bytes, n: int) -> list[str]:
    """``n`` words that depend only on ``key``."""
    digest = hashlib.blake2b(key, digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "little"))
    return rng.choices(VOCAB, k=n)


def random_words(n: int) -> list[str]:
    return _RANDOM.choices(VOCAB, k=n)


def text_key(seed: int, prompt: bytes, max_tokens: int, index: int = 0) -> bytes:
    """Key of a deterministic generation: (seed, prompt, max_tokens[, choice index])."""
    head = b"%d|%d|" % (seed, max_tokens)
    if index:
        head += b"%d|" % index
    return head + prompt


def generate(n: int, key: bytes | None) -> list[str]:
    """Words of one generation: deterministic with a key, random without."""
    if n <= 0:
        return []
    return seeded_words(key, n) if key is not None else random_words(n)


def join_tokens(words: Sequence[str]) -> str:
    return " ".join(words)


def token_deltas(words: Sequence[str]) -> list[str]:
    """Stream deltas whose concatenation is ``join_tokens(words)``."""
    return [w if i == 0 else " " + w for i, w in enumerate(words)]
