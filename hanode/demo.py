"""`hanode demo`: a scripted tour that ends by itself.

Three simulated GPU replicas behind one hanode node; traffic from the official ``openai`` client;
one replica turns slow, another crashes; watch weights, health and traffic shares move away and
back, with no failed request on the client side. Everything runs on loopback and every process
the demo starts is stopped by its pid.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hanode.cli.render import event_line, status_table
from hanode.devtools.procs import NodeProcess, SimProcess, free_port, node_config_toml

MODEL = "demo-llama-8b"
WORKERS = 4


@dataclass
class Traffic:
    """Background clients; counts which replica answered and what failed."""

    base_url: str
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    served: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    total: int = 0
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(WORKERS):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self, worker: int) -> None:
        import openai

        client = openai.OpenAI(base_url=self.base_url, api_key="demo", max_retries=0, timeout=20)
        deadline = time.monotonic() + 300  # bounded even if stop is never set
        n = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            n += 1
            try:
                raw = client.completions.with_raw_response.create(
                    model=MODEL, prompt=f"worker {worker} request {n}", max_tokens=8
                )
                replica = raw.headers.get("x-hanode-replica", "?")
                raw.parse()
                with self.lock:
                    self.served[replica] += 1
                    self.total += 1
            except openai.OpenAIError as exc:
                with self.lock:
                    self.errors[type(exc).__name__] += 1
                    self.total += 1
            time.sleep(0.02)

    def take(self) -> tuple[Counter[str], Counter[str]]:
        with self.lock:
            served, errors = self.served, self.errors
            self.served, self.errors = Counter(), Counter()
        return served, errors

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=25)


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def _shares(served: Counter[str], errors: Counter[str], names: list[str]) -> str:
    total = sum(served.values())
    parts = [f"{n}: {served.get(n, 0):4d} ({served.get(n, 0) / total:5.1%})" for n in names]
    failed = sum(errors.values())
    line = "traffic  " + "   ".join(parts) if total else "traffic: none"
    return line + f"   client errors: {failed}" + (f" {dict(errors)}" if failed else "")


def _wait(node: NodeProcess, predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate({r["name"]: r for r in node.status()["replicas"]}):
                return True
        except (OSError, RuntimeError, ValueError):
            pass
        time.sleep(0.2)
    return False


def _phase(traffic: Traffic, node: NodeProcess, seconds: float, names: list[str]) -> int:
    traffic.take()
    time.sleep(seconds)
    served, errors = traffic.take()
    print(status_table(node.status()))
    print(_shares(served, errors, names), flush=True)
    return sum(errors.values())


def _stream_once(base_url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="demo", max_retries=0, timeout=20)
    t0 = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me about high availability."}],
        max_tokens=12,
        stream=True,
    )
    print("stream: ", end="", flush=True)
    first: float | None = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.monotonic() - t0
            print(chunk.choices[0].delta.content, end="", flush=True)
    total = time.monotonic() - t0
    print(f"\n(first token after {first or 0:.3f}s, whole stream {total:.3f}s)")


def run_demo(workdir: Path) -> int:
    names = ["gpu-a", "gpu-b", "gpu-c"]
    sims: dict[str, SimProcess] = {}
    node: NodeProcess | None = None
    traffic: Traffic | None = None
    failed = 0
    try:
        _say("Starting three simulated GPU replicas (vLLM-compatible) and one hanode node")
        for name in names:
            sims[name] = SimProcess(
                "--model",
                MODEL,
                "--ttft-ms",
                "30",
                "--tpot-ms",
                "3",
                log_path=workdir / f"{name}.log",
            )
        config = node_config_toml(
            name="demo-node",
            data_dir=workdir / "data",
            router_port=free_port(),
            metrics_port=free_port(),
            replicas=[
                {"name": n, "model": MODEL, "url": sims[n].url, "engine": "vllm"} for n in names
            ],
            sections={
                "health": {"interval_s": 0.3, "rise": 2, "fall": 2, "passive_window_s": 4.0},
                "thresholds": {"latency_ms": 400.0, "ttft_ms": 300.0},
            },
        )
        config_path = workdir / "hanode.toml"
        config_path.write_text(config)
        print(f"config: {config_path}   logs: {workdir}")
        node = NodeProcess(config_path, log_path=workdir / "node.log")
        base_url = node.router_url + "/v1"
        if not _wait(node, lambda rs: all(r["health"] == "healthy" for r in rs.values()), 20):
            print("replicas did not become healthy in 20 s; see the logs above")
            return 1
        print(f"front door: {base_url}   ops: {node.ops_url}/status, /metrics")
        print(status_table(node.status()))

        _say("One streamed answer through hanode (chunks are relayed as they come)")
        _stream_once(base_url)

        _say(f"Steady traffic: {WORKERS} clients using the official openai client")
        traffic = Traffic(base_url)
        traffic.start()
        failed += _phase(traffic, node, 6, names)

        _say("gpu-b turns slow (time to first token 30 ms -> 450 ms): L3 lowers its weight")
        sims["gpu-b"].admin("config", {"ttft_ms": 450})
        _wait(node, lambda rs: rs["gpu-b"]["weight"] < 0.5, 15)
        failed += _phase(traffic, node, 8, names)

        _say("gpu-c crashes (process exits): retries hide it, L1 takes it out of the pool")
        sims["gpu-c"].admin("crash", {})
        sims["gpu-c"].wait_exit(10)
        _wait(node, lambda rs: rs["gpu-c"]["health"] == "down", 10)
        failed += _phase(traffic, node, 5, names)

        _say("gpu-c restarts and gpu-b recovers: both come back into rotation")
        sims["gpu-c"].stop()
        sims["gpu-c"] = SimProcess(
            "--model",
            MODEL,
            "--ttft-ms",
            "30",
            "--tpot-ms",
            "3",
            port=sims["gpu-c"].port,
            log_path=workdir / "gpu-c.restarted.log",
        )
        sims["gpu-b"].admin("config", {"ttft_ms": 30})
        _wait(node, lambda rs: rs["gpu-c"]["health"] == "healthy", 15)
        _wait(node, lambda rs: rs["gpu-b"]["health"] == "healthy", 15)
        failed += _phase(traffic, node, 6, names)

        traffic.close()
        _say("What hanode recorded")
        for event in node.status()["events"][-12:]:
            print(event_line(event))
        total = traffic.total
        _say(f"Done: {total} requests, {failed} failed on the client side")
        return 0 if failed == 0 else 1
    finally:
        if traffic is not None:
            traffic.close()
        if node is not None:
            node.stop()
        for sim in sims.values():
            sim.stop()


def main(args: argparse.Namespace) -> int:
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        return run_demo(workdir)
    with tempfile.TemporaryDirectory(prefix="hanode-demo-") as tmp:
        return run_demo(Path(tmp))
