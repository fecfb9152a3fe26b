"""Helpers of the admission and degradation e2e tests: one node with request classes and keys
in front of simulators; clients are the official openai SDK, one per class key."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from hanode.devtools.procs import (
    NodeProcess,
    SimProcess,
    free_port,
    http_get,
    node_config_toml,
    start_sim,
)
from tests.e2e.failure_support import HEALTH

INTERACTIVE_KEY = "interactive-key-0123456789"
BATCH_KEY = "batch-key-0123456789abcdef"  # configured only as its SHA-256


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def arrays_toml(**arrays: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for name, items in arrays.items():
        for item in items:
            out.append(f"[[{name}]]")
            out.extend(f"{k} = {_toml(v)}" for k, v in item.items())
            out.append("")
    return "\n".join(out)


@dataclass
class Node:
    node: NodeProcess
    sims: dict[str, SimProcess]

    def client(self, key: str, timeout: float = 30.0) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.node.router_url + "/v1", api_key=key, max_retries=0, timeout=timeout
        )

    def events(self, kind: str) -> list[dict[str, Any]]:
        code, _, body = http_get(self.node.ops_url + "/events", 5.0)
        assert code == 200
        return [e for e in json.loads(body)["events"] if e["kind"] == kind]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.node.metrics_text().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


@contextlib.contextmanager
def node(
    tmp_path: Path,
    sims: dict[str, tuple[str, ...]],
    *,
    classes: list[dict[str, Any]],
    models: list[dict[str, Any]] | None = None,
    router: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
) -> Iterator[Node]:
    """One node; ``sims`` maps model -> simulator arguments (one replica each)."""
    with contextlib.ExitStack() as stack:
        procs = {
            m: stack.enter_context(start_sim("--model", m, *args, wait="none"))
            for m, args in sims.items()
        }
        for sim in procs.values():
            sim.wait_ready(15.0)
        text = node_config_toml(
            name="n1",
            data_dir=tmp_path / "data",
            router_port=free_port(),
            metrics_port=free_port(),
            replicas=[
                {"name": f"{m}-0", "model": m, "url": s.url, "engine": "vllm"}
                for m, s in procs.items()
            ],
            sections={
                "health": {**HEALTH, **(health or {})},
                "router": {"api_keys": [INTERACTIVE_KEY], **(router or {})},
            },
            models=models,
        )
        keys = [
            {
                "name": "jobs",
                "sha256": hashlib.sha256(BATCH_KEY.encode()).hexdigest(),
                "request_class": "batch",
            }
        ]
        config = tmp_path / "node.toml"
        config.write_text(text + "\n" + arrays_toml(classes=classes, api_keys=keys))
        proc = stack.enter_context(NodeProcess(config, log_path=tmp_path / "node.log"))
        proc.wait_health({f"{m}-0": "healthy" for m in procs}, timeout=20.0)
        yield Node(proc, procs)


@dataclass
class Outcome:
    status: int
    seconds: float
    retry_after: str | None = None
    message: str = ""
    model: str = ""
    degraded: str | None = None


def call(client: openai.OpenAI, model: str, **kw: Any) -> Outcome:
    """One chat completion; every answer (2xx or an error status) is an Outcome, anything
    else (a connection lost, a timeout) raises: nothing may be lost silently."""
    t0 = time.monotonic()
    kw.setdefault("max_tokens", 4)
    kw.setdefault("messages", [{"role": "user", "content": "Say something short."}])
    try:
        raw = client.chat.completions.with_raw_response.create(model=model, **kw)
    except openai.APIStatusError as err:
        return Outcome(
            err.status_code,
            time.monotonic() - t0,
            err.response.headers.get("retry-after"),
            str(err.message),
        )
    reply = raw.parse()
    return Outcome(
        raw.status_code,
        time.monotonic() - t0,
        model=reply.model,
        degraded=raw.headers.get("x-hanode-degraded"),
    )


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Flood:
    """Threads sending requests in a loop until stopped; every outcome is kept."""

    send: Callable[[], Outcome]
    threads: int
    pause_after_refusal_s: float = 0.2
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Flood:
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                outcome = self.send()
            except BaseException as exc:
                self.errors.append(exc)
                return
            self.outcomes.append(outcome)
            if outcome.status != 200:
                self._stop.wait(self.pause_after_refusal_s)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(60.0)
        assert not any(t.is_alive() for t in self._workers)
