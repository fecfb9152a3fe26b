"""Prometheus text parser and histogram_quantile."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hanode.engines.prom_text import Buckets, Sample, histogram_quantile, parse

PAGE = """\
# HELP req_total Requests.
# TYPE req_total counter
req_total{code="200",model_name="a"} 10
req_total{code="500",model_name="a"} 2.5
req_total{code="200",model_name="b"} 7 1732118407000
gauge_nan NaN
gauge_inf +Inf
gauge_neg_inf -Inf
escaped{path="C:\\\\dir",quote="say \\"hi\\"",nl="a\\nb"} 1
spaced { a = "x" , b="y", } 3
"""


def test_samples_labels_and_timestamps() -> None:
    page = parse(PAGE)
    assert page.types == {"req_total": "counter"}
    by_key = {(s.label("code"), s.label("model_name")): s for s in page.samples("req_total")}
    assert by_key["200", "a"].value == 10.0
    assert by_key["500", "a"].value == 2.5
    assert by_key["200", "b"].timestamp == 1732118407000.0
    assert by_key["200", "a"].timestamp is None
    assert by_key["200", "a"].labels == (("code", "200"), ("model_name", "a"))


def test_special_values() -> None:
    page = parse(PAGE)
    assert math.isnan(page.samples("gauge_nan")[0].value)
    assert page.samples("gauge_inf")[0].value == math.inf
    assert page.samples("gauge_neg_inf")[0].value == -math.inf


def test_escapes_and_whitespace() -> None:
    page = parse(PAGE)
    (s,) = page.samples("escaped")
    assert s.label("path") == "C:\\dir"
    assert s.label("quote") == 'say "hi"'
    assert s.label("nl") == "a\nb"
    (sp,) = page.samples("spaced")
    assert sp.labels == (("a", "x"), ("b", "y"))
    assert sp.value == 3.0


@pytest.mark.parametrize(
    "line",
    [
        "no_value",
        "bad_value abc",
        "1starts_with_digit 1",
        'unterminated{a="x} 1',
        'no_close{a="x" 1',
        "foo-1 2",
        "too many 1 2 3",
        "bad_ts 1 notanumber",
        "underscore 1_000",
        '{"utf8.name"} 1',
        'missing_eq{a "x"} 1',
        "unquoted{a=x} 1",
        "}",
        "{",
        '"',
        "\\",
    ],
)
def test_garbage_lines_are_skipped(line: str) -> None:
    page = parse(f"good 1\n{line}\nalso_good 2\n")
    assert page.names() == {"good", "also_good"}


def test_crlf_exemplar_and_duplicates() -> None:
    text = 'a{x="1"} 1\r\nb_bucket{le="1"} 4 # {trace_id="abc"} 0.5 1.7e9\r\na{x="1"} 5\n'
    page = parse(text)
    assert page.value("a") == 5.0  # the repeated series keeps its last value
    assert page.samples("b_bucket")[0].value == 4.0


def test_value_aggregation_and_filters() -> None:
    page = parse(PAGE + 'g{k="1"} 0.2\ng{k="2"} 0.6\ng{k="3"} NaN\n')
    assert page.value("req_total") == 19.5
    assert page.value("req_total", {"model_name": "a"}) == 12.5
    assert page.value("req_total", {"model_name": "a", "code": "500"}) == 2.5
    assert page.value("req_total", {"model_name": "zzz"}) is None
    assert page.value("absent") is None
    assert page.value("gauge_nan") is None
    assert page.value("g", agg="max") == 0.6
    assert page.value("g", agg="min") == 0.2
    assert page.value("g", agg="mean") == pytest.approx(0.4)


HIST = """\
# TYPE lat histogram
lat_bucket{le="0.1",m="a"} 1
lat_bucket{le="0.5",m="a"} 3
lat_bucket{le="+Inf",m="a"} 4
lat_bucket{le="0.1",m="b"} 10
lat_bucket{le="0.5",m="b"} 10
lat_bucket{le="+Inf",m="b"} 10
lat_bucket{le="oops",m="b"} 99
lat_bucket{m="b"} 99
lat_count{m="a"} 4
"""


def test_buckets_summed_and_filtered() -> None:
    page = parse(HIST)
    assert page.buckets("lat") == ((0.1, 11.0), (0.5, 13.0), (math.inf, 14.0))
    assert page.buckets("lat", {"m": "a"}) == ((0.1, 1.0), (0.5, 3.0), (math.inf, 4.0))
    assert page.buckets("nope") is None


B1: Buckets = ((0.1, 0.0), (0.2, 10.0), (0.4, 20.0), (math.inf, 20.0))
B2: Buckets = ((0.1, 10.0), (0.2, 20.0), (0.4, 60.0), (math.inf, 60.0))


def test_quantile_of_delta() -> None:
    # delta: (0.1, 10) (0.2, 10) (0.4, 40) (inf, 40): median rank 20 lies in (0.2, 0.4]
    assert histogram_quantile(B1, B2, 0.5) == pytest.approx(0.2 + 0.2 * (10 / 30))
    # rank 4 of 10 in the first bucket, interpolated from 0
    assert histogram_quantile(B1, B2, 0.1) == pytest.approx(0.1 * 4 / 10)


def test_quantile_from_start_and_without_news() -> None:
    assert histogram_quantile(None, B1, 0.5) == pytest.approx(0.2)
    assert histogram_quantile(B2, B2, 0.5) is None
    assert histogram_quantile(None, None, 0.5) is None


def test_quantile_counter_reset_uses_current() -> None:
    # the engine restarted: the current page alone is the new window
    assert histogram_quantile(B2, B1, 0.5) == histogram_quantile(None, B1, 0.5)


def test_quantile_in_inf_bucket_and_missing_inf() -> None:
    overflow: Buckets = ((0.1, 1.0), (0.2, 1.0), (math.inf, 10.0))
    assert histogram_quantile(None, overflow, 0.99) == 0.2
    assert histogram_quantile(None, ((0.1, 1.0), (0.2, 2.0)), 0.5) is None
    assert histogram_quantile(None, ((math.inf, 5.0),), 0.5) is None


def test_quantile_tolerates_torn_scrape() -> None:
    # 0.2 read lower than 0.1: treated as 2 (no observations in (0.1, 0.2]), like PromQL
    torn: Buckets = ((0.1, 2.0), (0.2, 1.0), (0.4, 10.0), (math.inf, 10.0))
    assert histogram_quantile(None, torn, 0.25) == pytest.approx(0.2 + 0.2 * 0.5 / 8)


@pytest.mark.parametrize("q", [-0.1, 1.5, math.nan])
def test_quantile_rejects_bad_q(q: float) -> None:
    with pytest.raises(ValueError):
        histogram_quantile(None, B1, q)


# --- properties -------------------------------------------------------------------------

_SYNTAX = st.sampled_from(
    ["{", "}", '"', "\\", "=", ",", " ", "\t", "\n", "#", "le", "+Inf", "NaN", "1e3", "_", ":"]
)
_FRAGMENTS = st.lists(st.one_of(_SYNTAX, st.text(max_size=5)), max_size=40).map("".join)


@given(st.one_of(st.text(), _FRAGMENTS))
def test_parse_never_raises(text: str) -> None:
    page = parse(text)
    for name in page.names():
        for s in page.samples(name):
            assert isinstance(s, Sample)
        page.value(name)
        page.buckets(name.removesuffix("_bucket"))


_NAME = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
_LABEL = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
_VALUE = st.floats(allow_nan=False, width=64)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@given(_NAME, st.dictionaries(_LABEL, st.text(max_size=10), max_size=4), _VALUE)
def test_rendered_sample_round_trips(name: str, labels: dict[str, str], value: float) -> None:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    text = f"{name}{{{body}}} {value!r}\n" if labels else f"{name} {value!r}\n"
    (s,) = parse(text).samples(name)
    assert s.labels == tuple(sorted(labels.items()))
    assert s.value == value


@st.composite
def _bucket_pairs(draw: st.DrawFn) -> tuple[Buckets, Buckets]:
    les = sorted(draw(st.sets(st.floats(0.001, 100.0), min_size=1, max_size=8)))
    prev_inc = draw(st.lists(st.integers(0, 50), min_size=len(les) + 1, max_size=len(les) + 1))
    new_inc = draw(st.lists(st.integers(0, 50), min_size=len(les) + 1, max_size=len(les) + 1))
    bounds = [*les, math.inf]
    prev, cur, p, c = [], [], 0.0, 0.0
    for le, a, b in zip(bounds, prev_inc, new_inc, strict=True):
        p += a
        c += a + b
        prev.append((le, p))
        cur.append((le, c))
    return tuple(prev), tuple(cur)


@given(_bucket_pairs(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_quantile_within_bounds_and_monotone(
    pair: tuple[Buckets, Buckets], q1: float, q2: float
) -> None:
    prev, cur = pair
    lo_q, hi_q = sorted((q1, q2))
    lo = histogram_quantile(prev, cur, lo_q)
    hi = histogram_quantile(prev, cur, hi_q)
    if cur[-1][1] == prev[-1][1]:
        assert lo is None and hi is None
        return
    assert lo is not None and hi is not None
    top = cur[-2][0]
    assert 0.0 <= lo <= hi <= top


def test_quantile_edge_buckets() -> None:
    # q=0 with an empty first bucket: the lower bound, not a division by zero
    empty_first: Buckets = ((0.1, 0.0), (0.2, 4.0), (math.inf, 4.0))
    assert histogram_quantile(None, empty_first, 0.0) == 0.0
    # a first bucket at or below zero has no known lower bound: report its upper bound
    negative: Buckets = ((-1.0, 5.0), (1.0, 10.0), (math.inf, 10.0))
    assert histogram_quantile(None, negative, 0.25) == -1.0


@pytest.mark.parametrize(
    "line",
    [
        'a{b="x"' + " \t" * 40_000 + ',c="y"' + " " * 40_000 + "} 2",
        'a{b="x"' + " " * 80_000 + "z",
        "a{" + 'b="x" ,' * 10_000 + " " * 80_000 + "z",
    ],
)
def test_long_blank_runs_parse_in_linear_time(line: str) -> None:
    # a quadratic regex takes tens of seconds here; the linear one takes milliseconds
    started = time.perf_counter()
    parse(line)
    assert time.perf_counter() - started < 1.0
