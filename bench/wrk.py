"""wrk, the load generator of the latency and throughput measurements: run, parse, combine."""

from __future__ import annotations

import re
import statistics
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import BenchError

LUA = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}
_PCT_RE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_REQS_RE = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_RPS_RE = re.compile(r"Requests/sec:\s+([\d.]+)")
_SOCK_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def write_lua(path: Path, body: str, headers: dict[str, str] | None = None) -> Path:
    """A script that POSTs ``body`` with ``headers`` (an API key) besides the content type."""
    extra = {k: v for k, v in (headers or {}).items()}
    for text in (body, *extra, *extra.values()):
        if "'" in text or "\\" in text:
            raise ValueError("no quotes or backslashes (Lua single-quoted strings)")
    lines = [LUA.format(body=body)]
    lines += [f"wrk.headers['{k}'] = '{v}'\n" for k, v in extra.items()]
    path.write_text("".join(lines))
    return path


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    pct_us: dict[int, float]  # 50/75/90/99 -> microseconds
    errors: dict[str, int]  # connect/read/write/timeout/non2xx, non-zero only
    raw: str
    rounds: tuple[WrkResult, ...] = ()  # when combined from several runs

    @property
    def p50_us(self) -> float:
        return self.pct_us.get(50, float("nan"))

    @property
    def p99_us(self) -> float:
        return self.pct_us.get(99, float("nan"))

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def parse_wrk(text: str) -> WrkResult:
    m = _REQS_RE.search(text)
    rps = _RPS_RE.search(text)
    if m is None or rps is None:
        raise BenchError(f"cannot parse wrk output:\n{text}")
    pct = {int(p): float(v) * _UNITS[u] for p, v, u in _PCT_RE.findall(text)}
    errors: dict[str, int] = {}
    sock = _SOCK_RE.search(text)
    if sock is not None:
        for name, value in zip(("connect", "read", "write", "timeout"), sock.groups(), strict=True):
            if int(value):
                errors[name] = int(value)
    non2xx = _NON2XX_RE.search(text)
    if non2xx is not None and int(non2xx.group(1)):
        errors["non2xx"] = int(non2xx.group(1))
    return WrkResult(
        requests=int(m.group(1)),
        duration_s=float(m.group(2)) * _UNITS[m.group(3)] / 1e6,
        rps=float(rps.group(1)),
        pct_us=pct,
        errors=errors,
        raw=text,
    )


def combine(results: Sequence[WrkResult]) -> WrkResult:
    """Rounds of one measurement: totals add up, percentiles are the median of the rounds'."""
    if not results:
        raise ValueError("nothing to combine")
    requests = sum(r.requests for r in results)
    duration = sum(r.duration_s for r in results)
    pct: dict[int, float] = {}
    for p in results[0].pct_us:
        values = sorted(r.pct_us[p] for r in results if p in r.pct_us)
        pct[p] = statistics.median(values)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    return WrkResult(
        requests=requests,
        duration_s=duration,
        rps=requests / duration if duration else 0.0,
        pct_us=pct,
        errors=dict(errors),
        raw="\n".join(r.raw for r in results),
        rounds=tuple(results),
    )


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    connections: int,
    duration_s: float,
    threads: int = 1,
) -> WrkResult:
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    if res.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return parse_wrk(res.stdout)
