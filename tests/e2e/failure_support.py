"""Helpers of the failure-handling e2e tests: one node in front of simulators, raw HTTP."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from tests.support.procs import (
    NodeProcess,
    SimProcess,
    free_port,
    node_config_toml,
    start_sim,
)

MODEL = "sim-model"
CHAT = "/v1/chat/completions"
FAST_SIM = ("--ttft-ms", "2", "--tpot-ms", "1")
# Fast health rounds; L2 (test prompt) only when traffic failed, with a short timeout.
HEALTH = {"interval_s": 0.2, "timeout_s": 1.0, "rise": 1, "fall": 2, "l2_timeout_s": 1.0}
MESSAGES = [{"role": "user", "content": "Say something short."}]


@dataclass
class Cluster:
    sims: list[SimProcess]
    node: NodeProcess
    names: list[str]

    def client(self, timeout: float = 10.0) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.node.router_url + "/v1", api_key="x", max_retries=0, timeout=timeout
        )

    def replica(self, name: str) -> dict[str, Any]:
        return self.node.replicas()[name]

    def metrics(self) -> str:
        return self.node.metrics_text()

    def chat_counts(self) -> list[int]:
        """Chat completions each sim received (health probes use /v1/completions)."""
        return [int(s.admin("state")["per_endpoint"].get(CHAT, 0)) for s in self.sims]


@contextlib.contextmanager
def cluster(
    tmp_path: Path,
    n: int,
    *,
    sim_args: tuple[str, ...] = FAST_SIM,
    sections: dict[str, dict[str, Any]] | None = None,
    models: list[dict[str, Any]] | None = None,
    wait_healthy: bool = True,
) -> Iterator[Cluster]:
    """``n`` simulators (started in parallel) and one node routing to them."""
    merged: dict[str, dict[str, Any]] = {"health": dict(HEALTH)}
    for table, values in (sections or {}).items():
        merged.setdefault(table, {}).update(values)
    with contextlib.ExitStack() as stack:
        sims = [stack.enter_context(start_sim(*sim_args, wait="none")) for _ in range(n)]
        for sim in sims:
            sim.wait_ready(15.0)
        names = [f"r{i}" for i in range(n)]
        config = tmp_path / "node.toml"
        config.write_text(
            node_config_toml(
                name="n1",
                data_dir=tmp_path / "data",
                router_port=free_port(),
                metrics_port=free_port(),
                replicas=[
                    {"name": name, "model": MODEL, "url": sim.url, "engine": "vllm"}
                    for name, sim in zip(names, sims, strict=True)
                ],
                sections=merged,
                models=models,
            )
        )
        node = stack.enter_context(NodeProcess(config, log_path=tmp_path / "node.log"))
        c = Cluster(sims, node, names)
        if wait_healthy:
            node.wait_health(dict.fromkeys(names, "healthy"), timeout=15.0)
        yield c


def chat(client: openai.OpenAI, content: str = "Say something short.", **kw: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=kw.pop("max_tokens", 8),
        **kw,
    )


def raw_exchange(
    port: int, payload: bytes, timeout: float = 5.0, shutdown_write: bool = False
) -> tuple[bytes, float, bool]:
    """Send ``payload`` on a fresh socket; read until the server closes or ``timeout``.

    Returns (bytes read, seconds until the server closed or the timeout, closed by server).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        t0 = time.monotonic()
        if payload:
            s.sendall(payload)
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        return read_to_close(s, t0, timeout)


def read_to_close(s: socket.socket, t0: float, timeout: float) -> tuple[bytes, float, bool]:
    data = b""
    deadline = t0 + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, time.monotonic() - t0, False
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            return data, time.monotonic() - t0, False
        except ConnectionResetError:
            return data, time.monotonic() - t0, True
        if not chunk:
            return data, time.monotonic() - t0, True
        data += chunk


def status_of(raw: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", raw)
    assert m, f"no HTTP status line in {raw[:200]!r}"
    return int(m.group(1))


def assert_serving(c: Cluster) -> None:
    """The node is alive and answers a normal request through the front door."""
    assert c.node.alive, c.node.output()[-3000:]
    with c.client() as client:
        reply = chat(client)
    assert reply.choices[0].message.content
