from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.sim.textgen import (
    VOCAB,
    chat_context,
    chat_tokens,
    completion_context,
    count_words,
    join_tokens,
    next_words,
    random_words,
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
    ctx, _ = completion_context("hello world")
    a = next_words(42, 0, ctx, 16)
    assert a == next_words(42, 0, ctx, 16)
    assert len(a) == 16 and all(w in VOCAB for w in a)
    assert next_words(43, 0, ctx, 16) != a
    assert next_words(42, 0, completion_context("hello there")[0], 16) != a
    assert next_words(42, 1, ctx, 16) != a
    assert next_words(42, 0, ctx, 5) == a[:5]  # max_tokens only cuts the same text


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    prompt=st.text(alphabet="ab c\n", min_size=0, max_size=20),
    total=st.integers(1, 30),
    data=st.data(),
)
def test_completion_continued_from_emitted_text_gives_the_rest(
    seed: int, prompt: str, total: int, data: st.DataObject
) -> None:
    """A prompt extended by the first k generated words (as a router continues a cut stream)
    yields exactly the remaining words, and the texts join up."""
    ctx, lead = completion_context(prompt)
    words = next_words(seed, 0, ctx, total)
    k = data.draw(st.integers(0, total))
    emitted = "".join(token_deltas(words[:k], lead))
    ctx2, lead2 = completion_context(prompt + emitted)
    rest = next_words(seed, 0, ctx2, total - k)
    assert rest == words[k:]
    assert emitted + "".join(token_deltas(rest, lead2 if k else lead)) == join_tokens(words, lead)


def test_chat_continued_final_message_gives_the_rest() -> None:
    messages = [{"role": "user", "content": "say hi"}]
    ctx, lead = chat_context(messages, False)
    assert not lead
    words = next_words(7, 0, ctx, 10)
    partial = join_tokens(words[:4])
    ctx2, lead2 = chat_context([*messages, {"role": "assistant", "content": partial}], True)
    assert lead2 and next_words(7, 0, ctx2, 6) == words[4:]


def test_random_generation_varies() -> None:
    runs = {tuple(random_words(12)) for _ in range(5)}
    assert len(runs) > 1


def test_deltas_concatenate_to_text() -> None:
    words = next_words(0, 0, ("x",), 7)
    assert "".join(token_deltas(words)) == join_tokens(words)
    led = join_tokens(words, True)
    assert "".join(token_deltas(words, True)) == led == " " + join_tokens(words)
    assert count_words(join_tokens(words)) == 7
    assert next_words(0, 0, (), 0) == []
