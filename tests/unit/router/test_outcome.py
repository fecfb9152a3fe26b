"""Success classification: technical, functional, quality."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from hanode.router.outcome import StreamInspector, classify


def test_classify_kinds() -> None:
    ok = classify(200, True, True, 0.5, 0.1, 1.0, 0.5)
    assert (ok.technical, ok.functional, ok.quality) == (True, True, True)
    empty = classify(200, False, True, 0.5, None, 1.0, 0.5)
    assert (empty.technical, empty.functional, empty.quality) == (True, False, False)
    slow = classify(200, True, True, 2.0, None, 1.0, 0.5)
    assert (slow.technical, slow.functional, slow.quality) == (True, True, False)
    slow_first = classify(200, True, True, 0.5, 0.9, 1.0, 0.5)
    assert slow_first.quality is False
    cut = classify(200, True, False, 0.5, 0.1, 1.0, 0.5)
    assert (cut.technical, cut.functional) == (True, False)
    failed = classify(503, False, False, 0.1, None, 1.0, 0.5)
    assert (failed.technical, failed.functional, failed.quality) == (False, False, False)


def completion_has_output(body: bytes) -> bool:
    insp = StreamInspector()
    insp.feed(body)
    return insp.has_output


def test_whole_json_bodies() -> None:
    assert completion_has_output(b'{"choices":[{"text":"hi"}]}')
    assert not completion_has_output(b'{"choices":[{"text":""}]}')
    assert completion_has_output(b'{"choices":[{"message":{"content":"hi"}}]}')
    assert not completion_has_output(b'{"choices":[{"message":{"content":null}}]}')
    assert not completion_has_output(
        b'{"choices":[{"message":{"content":"","reasoning_content":null}}]}'
    )
    assert completion_has_output(
        b'{"choices":[{"message":{"content":null,"tool_calls":[{"id":"1"}]}}]}'
    )
    assert not completion_has_output(b'{"choices":[{"message":{"content":null,"tool_calls":[]}}]}')
    assert not completion_has_output(b"not json")
    assert not completion_has_output(b"[]")


def _sse(deltas: list[str], done: bool = True) -> bytes:
    out = b""
    for d in deltas:
        chunk = {"choices": [{"index": 0, "delta": {"content": d}}]}
        out += b"data: " + orjson.dumps(chunk) + b"\n\n"
    if done:
        out += b"data: [DONE]\n\n"
    return out


def test_stream_inspector_sees_output_and_done() -> None:
    insp = StreamInspector()
    insp.feed(_sse(["", "Hello", " world"]))
    assert insp.has_output and insp.done


def test_stream_inspector_empty_stream_is_not_output() -> None:
    insp = StreamInspector()
    insp.feed(_sse(["", ""]))
    assert not insp.has_output
    assert insp.done


def test_stream_inspector_cut_stream_is_not_done() -> None:
    insp = StreamInspector()
    insp.feed(_sse(["Hello"], done=False))
    assert insp.has_output and not insp.done


def test_stream_inspector_spaced_json() -> None:
    insp = StreamInspector()
    insp.feed(b'data: {"choices": [{"text": "x"}]}\n\n')
    assert insp.has_output


@given(st.lists(st.text(min_size=0, max_size=5), min_size=1, max_size=6), st.data())
def test_stream_inspector_any_split_points(deltas: list[str], data: st.DataObject) -> None:
    """Splitting the byte stream anywhere never changes the verdict."""
    body = _sse(deltas)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    whole = StreamInspector()
    whole.feed(body)
    parts = StreamInspector()
    last = 0
    for c in [*cuts, len(body)]:
        if c > last:
            parts.feed(body[last:c])
            last = c
    assert parts.has_output == whole.has_output == any(deltas)
    assert parts.done and whole.done
