from __future__ import annotations

from typing import Any

from hanode.sim.textgen import (
    VOCAB,
    chat_tokens,
    count_words,
    generate,
    join_tokens,
    text_key,
    token_deltas,
)


def test_count_words() -> None:
    assert count_words("") == 0
    assert count_words("  hello   big\nworld\t") == 3


def test_chat_tokens_adds_four_per_message() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one two three"}]},
        {"role": "assistant", "content": None},
    ]
    assert chat_tokens(messages) == 2 + 3 + 0 + 3 * 4


def test_seeded_generation_is_deterministic() -> None:
    key = text_key(42, b"hello world", 16)
    a = generate(16, key)
    assert a == generate(16, key)
    assert len(a) == 16 and all(w in VOCAB for w in a)
    assert generate(16, text_key(43, b"hello world", 16)) != a
    assert generate(16, text_key(42, b"hello there", 16)) != a
    assert generate(16, text_key(42, b"hello world", 16, index=1)) != a


def test_random_generation_varies() -> None:
    runs = {tuple(generate(12, None)) for _ in range(5)}
    assert len(runs) > 1


def test_deltas_concatenate_to_text() -> None:
    words = generate(7, text_key(0, b"x", 7))
    assert "".join(token_deltas(words)) == join_tokens(words)
    assert count_words(join_tokens(words)) == 7
    assert generate(0, None) == []
