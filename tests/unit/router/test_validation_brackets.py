"""Issue 16, finding 8: bracket-heavy JSON must be refused before it costs the event loop.

A 3.9 MB body of nested brackets blocked the loop for 2.1 s: orjson built millions of lists and
a Python walk then visited each one. The front door now refuses a body nested deeper than the
limit, or holding more arrays and objects than the limit, from a linear scan of the bytes,
before orjson builds anything. The checks here count work (how many containers orjson is asked
to build, how many passes the scan makes), never wall-clock time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

from hanode.router import validation
from hanode.router.validation import RequestError, RequestLimits, parse_inference_request

LIMITS = RequestLimits(max_json_depth=32)


def _bracket_body(block: bytes, size: int) -> bytes:
    """A completion request whose ``extra`` array repeats ``block`` to about ``size`` bytes."""
    head = b'{"model":"m","prompt":"x","extra":['
    n = max(1, (size - len(head)) // (len(block) + 1))
    return head + b",".join([block] * n) + b"]}"


@contextmanager
def _counting_loads() -> Iterator[list[int]]:
    """Count how many times orjson is asked to parse, and how many containers it built."""
    built: list[int] = []
    real = validation.orjson.loads

    def loads(raw: Any) -> Any:
        value = real(raw)
        built.append(_containers(value))
        return value

    validation.orjson.loads = loads  # type: ignore[assignment]
    try:
        yield built
    finally:
        validation.orjson.loads = real  # type: ignore[assignment]


def _containers(value: Any) -> int:
    stack, n = [value], 0
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            n += 1
            stack.extend(item.values())
        elif isinstance(item, list):
            n += 1
            stack.extend(item)
    return n


def _refusal(raw: bytes) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_inference_request(raw, False, LIMITS)
    return info.value


def test_the_reported_body_is_refused_before_orjson_builds_it() -> None:
    """The 3.9 MB body of the finding: chains 33 deep, over and over (1.9M lists)."""
    raw = _bracket_body(b"[" * 33 + b"]" * 33, 3_900_000)
    with _counting_loads() as built:
        err = _refusal(raw)
    assert err.status == 400
    assert f"more than {LIMITS.max_json_containers} arrays and objects" in err.message
    assert built == []  # orjson never ran: nothing was built


def test_a_body_of_millions_of_shallow_containers_is_refused_unbuilt() -> None:
    """Within the depth limit but 1.3M lists: orjson alone took 0.4 s to build them."""
    raw = _bracket_body(b"[]", 3_900_000)
    with _counting_loads() as built:
        err = _refusal(raw)
    assert err.status == 400
    assert f"more than {LIMITS.max_json_containers} arrays and objects" in err.message
    assert built == []


def test_too_deep_is_refused_before_orjson_parses() -> None:
    raw = _bracket_body(b"[" * 33 + b"]" * 33, 60_000)  # 30k lists: under the count limit
    with _counting_loads() as built:
        err = _refusal(raw)
    assert err.status == 400 and "nested deeper than 32" in err.message
    assert built == []


def test_depth_is_exact_and_ignores_brackets_in_strings() -> None:
    ok = b'{"model":"m","prompt":"x","e":' + b"[" * 31 + b"]" * 31 + b"}"  # depth 32
    assert parse_inference_request(ok, False, LIMITS).model == "m"
    deep = b'{"model":"m","prompt":"x","e":' + b"[" * 32 + b"]" * 32 + b"}"  # depth 33
    assert "nested deeper than 32" in _refusal(deep).message
    mixed = b'{"model":"m","prompt":"x","e":' + b"[{}," * 16 + b"{}" + b"]" * 16 + b"}"  # 18
    assert parse_inference_request(mixed, False, LIMITS).model == "m"
    alternating = b'{"model":"m","prompt":"x","e":' + b'{"a":[' * 16 + b"]}" * 16 + b"}"  # 33
    assert "nested deeper than 32" in _refusal(alternating).message
    # Brackets (and escaped quotes, and escaped backslashes) inside strings are not structure.
    tricky = ["[{" * 5000 + '"[[\\', "\\", '\\"', "]", '"]]]]'] * 40
    raw = orjson.dumps({"model": "m", "prompt": "x", "e": [tricky, [["]"]]]})
    assert raw.count(b"\\") > 100 and raw.count(b'\\"') > 100
    assert parse_inference_request(raw, False, LIMITS).body["e"][0] == tricky


def test_many_brackets_in_strings_are_fine() -> None:
    raw = b'{"model":"m","prompt":"' + b"[]{}" * 100_000 + b'"}'
    assert parse_inference_request(raw, False, LIMITS).model == "m"


def test_broken_json_still_gets_the_json_message() -> None:
    for raw in (b'{"model":"m","prompt":"x","e":[' + b"[" * 40, b'{"a":"x"]' + b"[" * 40 + b"}"):
        assert "not valid JSON" in _refusal(raw).message


def _visited(raw: bytes, limits: RequestLimits) -> tuple[int, int]:
    """(passes, bytes visited) by the depth scan while validating ``raw``."""
    visits: list[int] = []
    real = validation._strip_leaves

    def counted(structure: bytes) -> bytes:
        visits.append(len(structure))
        return real(structure)

    validation._strip_leaves = counted
    try:
        with pytest.raises(RequestError):
            parse_inference_request(raw, False, limits)
    finally:
        validation._strip_leaves = real
    return len(visits), sum(visits)


def test_the_depth_scan_is_linear() -> None:
    """At most ``max_json_depth`` passes whatever the size, so the work of a body four times
    larger is four times larger, never more (counted in bytes the scan visits)."""
    limits = RequestLimits(max_json_depth=32, max_json_containers=10**7)
    small = _visited(_bracket_body(b"[" * 33 + b"]" * 33, 50_000), limits)
    large = _visited(_bracket_body(b"[" * 33 + b"]" * 33, 200_000), limits)
    assert small[0] == large[0] == 32
    assert 3.9 < large[1] / small[1] < 4.1
    # A chain as deep as the whole body costs no more passes than the limit either.
    chain = b'{"model":"m","prompt":"x","e":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    passes, visited = _visited(chain, limits)
    assert passes == 32 and visited <= 32 * 200_002
