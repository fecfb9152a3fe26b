"""Overload, with and without admission control (docs/degradation.md).

One node in front of one simulator that runs ``CAPACITY`` sequences at once (more wait in its
own queue); the node is told the same (``[[models]] max_concurrency``). Demand is twice the
capacity: 2 interactive clients sending one short request after another and ``2 x CAPACITY - 2``
batch clients sending longer ones. Measured for both settings of ``[router] admission``:

* interactive latency (p50, p95) against the same clients' unloaded p95, as a ratio,
* batch outcomes: answered, shed with 429 + Retry-After (queue full or waited past
  ``queue_timeout_s``), other failures.

Without admission the batch flood fills the engine's own queue and interactive requests wait
behind it; with it batch waits in the router's bounded queue (or is shed) and interactive
requests find a place. ``python -m bench.overload [--quick]`` runs this part alone.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai

from bench.harness import ProcGroup, free_port, say
from hanode.devtools.procs import node_config_toml

MODEL = "bench-model"
CAPACITY = 8
SIM = ("--model", MODEL, "--capacity", str(CAPACITY), "--ttft-ms", "300", "--tpot-ms", "10",
       "--reserve-gpu", "0")  # fmt: skip
HEALTH = {"interval_s": 0.5, "timeout_s": 1.0, "rise": 1, "fall": 3}
CLASSES = (
    '\n[[classes]]\nname = "interactive"\npriority = 0\nqueue_timeout_s = 10.0\nmax_queue = 32\n'
    '\n[[classes]]\nname = "batch"\npriority = 2\nqueue_timeout_s = 2.0\nmax_queue = 8\n'
    "capacity_share = 0.75\ndegrade = false\n"
)


@dataclass(frozen=True, slots=True)
class OverloadSettings:
    duration_s: float = 20.0  # of the loaded phase, per setting
    unloaded_samples: int = 30  # per interactive client


QUICK = OverloadSettings(duration_s=6.0, unloaded_samples=10)


@dataclass(slots=True)
class Phase:
    admission: bool
    unloaded: list[float] = field(default_factory=list)
    loaded: list[float] = field(default_factory=list)
    interactive_failed: int = 0
    batch: dict[str, int] = field(default_factory=dict)  # outcome -> count


@dataclass(slots=True)
class OverloadResult:
    settings: OverloadSettings
    phases: list[Phase] = field(default_factory=list)
    error: str | None = None


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def _ask(client: openai.OpenAI, max_tokens: int, cls: str) -> tuple[str, float]:
    t0 = time.monotonic()
    try:
        client.chat.completions.create(
            model=MODEL,
            max_tokens=max_tokens,
            messages=[{"role": "user", "content": "Say something."}],
            extra_headers={"x-hanode-class": cls},
        )
    except openai.RateLimitError as err:
        kind = "429 (Retry-After)" if err.response.headers.get("retry-after") else "429"
        return kind, time.monotonic() - t0
    except openai.APIStatusError as err:
        return str(err.status_code), time.monotonic() - t0
    except openai.APIError as err:
        return type(err).__name__, time.monotonic() - t0
    return "200", time.monotonic() - t0


def _phase(tmp: Path, admission: bool, st: OverloadSettings) -> Phase:
    phase = Phase(admission)
    with ProcGroup(tmp) as group:
        sim = group.sim("sim", *SIM)
        config = tmp / f"node-{admission}.toml"
        text = node_config_toml(
            name="bench",
            data_dir=tmp / f"data-{admission}",
            router_port=free_port(),
            metrics_port=free_port(),
            replicas=[{"name": "r1", "model": MODEL, "url": sim.url, "engine": "vllm"}],
            sections={"health": HEALTH, "router": {"admission": admission}},
            models=[{"name": MODEL, "max_concurrency": CAPACITY}],
        )
        config.write_text(text + CLASSES)
        node = group.node(f"node-{admission}", config)
        node.wait_health({"r1": "healthy"}, timeout=20.0)
        url = node.router_url + "/v1"

        def client() -> openai.OpenAI:
            return openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=60.0)

        def interactive(into: list[float], until: float | None, count: int) -> None:
            with client() as c:
                n = 0
                while (until is None and n < count) or (
                    until is not None and time.monotonic() < until
                ):
                    kind, seconds = _ask(c, 4, "interactive")
                    n += 1
                    if kind == "200":
                        into.append(seconds)
                    else:
                        phase.interactive_failed += 1

        def run_interactive(into: list[float], until: float | None, count: int) -> None:
            threads = [
                threading.Thread(target=interactive, args=(into, until, count)) for _ in range(2)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        with client() as c:  # warm-up: connections, the router's first request
            for _ in range(3):
                _ask(c, 4, "interactive")
        run_interactive(phase.unloaded, None, st.unloaded_samples)
        stop = threading.Event()
        lock = threading.Lock()

        def batch() -> None:
            with client() as c:
                while not stop.is_set():
                    kind, _ = _ask(c, 64, "batch")
                    with lock:
                        phase.batch[kind] = phase.batch.get(kind, 0) + 1
                    if kind != "200":
                        stop.wait(0.2)

        flood = [threading.Thread(target=batch) for _ in range(2 * CAPACITY - 2)]
        for t in flood:
            t.start()
        time.sleep(1.0)  # the flood is on
        run_interactive(phase.loaded, time.monotonic() + st.duration_s, 0)
        stop.set()
        for t in flood:
            t.join(120.0)
    return phase


def run(settings: OverloadSettings) -> OverloadResult:
    result = OverloadResult(settings)
    try:
        with tempfile.TemporaryDirectory(prefix="hanode-bench-overload-") as tmp_name:
            for admission in (False, True):
                say(
                    f"overload: demand twice the capacity, admission {'on' if admission else 'off'}"
                )
                result.phases.append(_phase(Path(tmp_name), admission, settings))
    except (TimeoutError, RuntimeError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def render(r: OverloadResult) -> str:
    lines = [
        f"Demand twice the capacity ({CAPACITY} places): 2 interactive clients (4 tokens, "
        f"~0.34 s) and {2 * CAPACITY - 2} batch clients (64 tokens, ~0.95 s).",
        "",
        "| admission | interactive p50 | interactive p95 | p95 / unloaded p95 | interactive "
        "failed | batch outcomes |",
        "|---|---|---|---|---|---|",
    ]
    for ph in r.phases:
        base = _p(ph.unloaded, 0.95)
        p95 = _p(ph.loaded, 0.95)
        p50 = statistics.median(ph.loaded) if ph.loaded else math.nan
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(ph.batch.items())) or "-"
        lines.append(
            f"| {'on' if ph.admission else 'off'} | {p50:.3f} s | {p95:.3f} s | "
            f"{p95 / base:.2f}x | {ph.interactive_failed} | {outcomes} |"
        )
    if r.error:
        lines.append(f"\nfailed: {r.error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short phases")
    a = p.parse_args(argv)
    started = time.monotonic()
    result = run(QUICK if a.quick else OverloadSettings())
    print(f"\n{render(result)}\n\n({time.monotonic() - started:.0f} s)")
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
