"""Streams through a replica's death: the share that completes with and without continuation.

Three simulators (tokens 20 ms apart) behind one hanode node; ``streams`` streamed chat
completions start together, and once every one has its first tokens the simulator serving the
most of them is SIGKILLed (ours, by pid). A stream is complete when the client got every token
it asked for and one ``[DONE]``; a cut stream ends early (an error event, or the connection
closed). The same run is done twice: ``[router] stream_continuation = false`` (what a proxy
without continuation gives: the dead replica's streams are lost) and ``true``.

``python -m bench.stream_continuation [--quick]`` runs this part alone and prints it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import HOST, ProcGroup, free_port, say
from hanode.devtools.procs import SimProcess, http_get, node_config_toml, wait_until

MODEL = "bench-model"
SIM_ARGS = ("--model", MODEL, "--ttft-ms", "20", "--tpot-ms", "20", "--capacity", "256",
            "--load-s", "0")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ContinuationSettings:
    streams: int = 48
    tokens: int = 100  # per stream: 2 s of generation at 20 ms a token
    rounds: int = 2  # kills per mode


QUICK = ContinuationSettings(streams=24, tokens=60, rounds=1)


@dataclass(slots=True)
class ModeResult:
    """One mode (continuation on or off) over its rounds."""

    on: bool
    streams: int = 0
    complete: int = 0
    on_victim: int = 0  # streams the killed replica was serving
    continued: float = 0.0  # hanode_stream_continuations_total at the end
    cut_kinds: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def share(self) -> float:
        return self.complete / self.streams if self.streams else 0.0


@dataclass(slots=True)
class ContinuationResult:
    settings: ContinuationSettings
    modes: list[ModeResult] = field(default_factory=list)
    error: str | None = None


@dataclass(slots=True)
class _Stream:
    replica: str = ""
    tokens: int = 0
    done: bool = False
    ended: bool = False
    kind: str = ""


def _read_stream(port: int, body: bytes, s: _Stream) -> None:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=30.0)
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        resp = conn.getresponse()
        s.replica = resp.getheader("x-hanode-replica") or ""
        if resp.status != 200:
            s.kind = f"HTTP {resp.status}"
            return
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                s.done = True
                continue
            doc = json.loads(data)
            if "error" in doc:
                s.kind = "error event"
                continue
            for choice in doc.get("choices", []):
                if (choice.get("delta") or {}).get("content"):
                    s.tokens += 1
        conn.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        s.kind = type(exc).__name__
    finally:
        s.ended = True


def _metric(ops_url: str, name: str) -> float:
    _, _, body = http_get(ops_url + "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _one_round(
    group: ProcGroup, tmp: Path, on: bool, st: ContinuationSettings, k: int
) -> ModeResult:
    sims: list[SimProcess] = [group.sim(f"cont{k}-sim{i}", *SIM_ARGS) for i in range(3)]
    data_dir = tmp / f"cont{k}-data"
    data_dir.mkdir()
    config = tmp / f"cont{k}.toml"
    config.write_text(
        node_config_toml(
            name="bench",
            data_dir=data_dir,
            router_port=free_port(),
            metrics_port=free_port(),
            replicas=[
                {"name": f"sim{i}", "model": MODEL, "url": s.url, "engine": "vllm"}
                for i, s in enumerate(sims)
            ],
            sections={"health": {"interval_s": 0.5}, "router": {"stream_continuation": on}},
        )
    )
    node = group.node(f"cont{k}-node", config)

    def healthy() -> bool:
        _, _, body = http_get(node.ops_url + "/status")
        reps = json.loads(body).get("replicas", [])
        return len(reps) == 3 and all(r.get("health") == "healthy" for r in reps)

    wait_until(healthy, 30.0, 0.2, "replicas healthy")
    body = json.dumps(
        {
            "model": MODEL,
            "stream": True,
            "max_tokens": st.tokens,
            "messages": [{"role": "user", "content": "a long answer, please"}],
        }
    ).encode()
    streams = [_Stream() for _ in range(st.streams)]
    t0 = time.monotonic()
    threads = [
        threading.Thread(target=_read_stream, args=(node.router_port, body, s), daemon=True)
        for s in streams
    ]
    for t in threads:
        t.start()
    wait_until(lambda: all(s.tokens >= 3 or s.ended for s in streams), 30.0, 0.01, "streams")
    counts = Counter(s.replica for s in streams if not s.ended)
    victim = max(counts, key=lambda name: counts[name])
    sims[int(victim.removeprefix("sim"))].kill(signal.SIGKILL)
    for t in threads:
        t.join(60.0)
    result = ModeResult(on, streams=len(streams), on_victim=counts[victim])
    for s in streams:
        if s.done and s.tokens == st.tokens and not s.kind:
            result.complete += 1
        else:
            result.cut_kinds[s.kind or f"{s.tokens} of {st.tokens} tokens"] += 1
    result.continued = _metric(node.ops_url, "hanode_stream_continuations_total")
    result.elapsed_s = time.monotonic() - t0
    node.stop()
    for sim in sims:
        sim.stop()
    return result


def run(settings: ContinuationSettings) -> ContinuationResult:
    out = ContinuationResult(settings)
    try:
        with tempfile.TemporaryDirectory(prefix="hanode-bench-cont-") as name:
            tmp = Path(name)
            with ProcGroup(tmp) as group:
                k = 0
                for on in (False, True):
                    total = ModeResult(on)
                    for _ in range(settings.rounds):
                        k += 1
                        r = _one_round(group, tmp, on, settings, k)
                        total.streams += r.streams
                        total.complete += r.complete
                        total.on_victim += r.on_victim
                        total.continued += r.continued
                        total.cut_kinds.update(r.cut_kinds)
                        total.elapsed_s += r.elapsed_s
                    say(
                        f"stream continuation {'on' if on else 'off'}: {total.complete} of "
                        f"{total.streams} streams complete ({total.on_victim} on the killed "
                        "replica)"
                    )
                    out.modes.append(total)
    except (TimeoutError, RuntimeError, OSError) as exc:
        out.error = str(exc)
    return out


def render(result: ContinuationResult) -> str:
    st = result.settings
    lines = [
        f"{st.streams} streamed chat completions of {st.tokens} tokens (20 ms apart) over three "
        "simulators; once every stream has its first tokens, the simulator serving the most of "
        f"them is SIGKILLed; {st.rounds} round(s) per mode. Complete = every token and one "
        "`[DONE]`.",
        "",
        "| `stream_continuation` | streams | on the killed replica | complete | share complete "
        "| continuations | how the others ended |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for m in result.modes:
        kinds = ", ".join(f"{k} x{v}" for k, v in m.cut_kinds.most_common()) or "-"
        lines.append(
            f"| {'true' if m.on else 'false'} | {m.streams} | {m.on_victim} | {m.complete} | "
            f"{m.share:.1%} | {m.continued:g} | {kinds} |"
        )
    if result.error:
        lines += ["", f"Failed: {result.error}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stream_continuation")
    p.add_argument("--quick", action="store_true", help="fewer, shorter streams, one round")
    a = p.parse_args(argv)
    result = run(QUICK if a.quick else ContinuationSettings())
    print("\n## Streams through a replica's death (stream continuation)\n")
    print(render(result))
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
