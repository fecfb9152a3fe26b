"""Shared fixtures of the end-to-end tests: real simulators and a real node, stopped by pid.

``e2e_procs`` is a factory. Everything it starts (simulators, nodes) is tracked and stopped at
the end of the test by its own pid (SIGTERM, then SIGKILL), whatever happened. Output of each
process goes to a log file under the test's ``tmp_path``; when a test fails, the tail of every
log is printed so a broken run explains itself.

    def test_x(e2e_procs):
        c = e2e_procs.cluster([["--ttft-ms", "5"], ["--ttft-ms", "300"]])
        c.wait_health("healthy")
        out = c.openai().chat.completions.create(model=c.model, messages=[...])
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.procs import (
    ChildProcess,
    NodeProcess,
    SimProcess,
    free_port,
    node_config_toml,
    raw_request,
    start_sim,
    wait_until,
)

DEFAULT_MODEL = "sim-model"

# Fast, bounded health checking so that tests see state changes within a second or so.
FAST_HEALTH: dict[str, Any] = {"interval_s": 0.2, "timeout_s": 1.0, "rise": 2, "fall": 2}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"_e2e_rep_{report.when}", report)  # read by e2e_procs at teardown
    return report


@dataclass
class Cluster:
    """One node in front of some simulators; ``names[i]`` is the replica served by ``sims[i]``."""

    node: NodeProcess
    sims: list[SimProcess]
    names: list[str]
    models: list[str]
    procs: E2EProcs
    config_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.models[0]

    def openai(self, timeout: float = 10.0, api_key: str = "x") -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.node.router_url + "/v1", api_key=api_key, max_retries=0, timeout=timeout
        )

    def replicas(self) -> dict[str, dict[str, Any]]:
        return self.node.replicas()

    def health(self) -> dict[str, str]:
        return {name: r["health"] for name, r in self.node.replicas().items()}

    def wait_health(self, wanted: str | dict[str, str], timeout: float = 15.0) -> dict[str, Any]:
        """Wait until replicas reach a health; a string means "every replica"."""
        if isinstance(wanted, str):
            wanted = dict.fromkeys(self.names, wanted)
        return self.node.wait_health(wanted, timeout)

    def restart_sim(self, index: int, *args: str, **opts: Any) -> SimProcess:
        """Start a new simulator on the port of ``sims[index]`` (the old one must be gone)."""
        old = self.sims[index]
        new = self.procs.sim("--model", self.models[index], *args, port=old.port, **opts)
        self.sims[index] = new
        return new


def _sim_model(sim: SimProcess) -> str:
    args = sim.args
    return args[args.index("--model") + 1] if "--model" in args else DEFAULT_MODEL


class E2EProcs:
    """Starts simulators and nodes for one test and stops every one of them by pid."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[ChildProcess] = []
        self._count = 0

    def _log(self, kind: str) -> Path:
        self._count += 1
        return self.tmp_path / f"{self._count:02d}-{kind}.log"

    def sim(self, *args: str, **opts: Any) -> SimProcess:
        """``hanode sim`` with ``args``; options as :func:`start_sim` (port, wait, timeout)."""
        opts.setdefault("log_path", self._log("sim"))
        sim = start_sim(*args, **opts)
        self.started.append(sim)
        return sim

    def node(
        self,
        replicas: Sequence[dict[str, Any]],
        sections: dict[str, dict[str, Any]] | None = None,
        name: str = "n1",
    ) -> tuple[NodeProcess, Path]:
        merged: dict[str, dict[str, Any]] = {"health": dict(FAST_HEALTH)}
        for table, values in (sections or {}).items():
            merged.setdefault(table, {}).update(values)
        path = self.tmp_path / f"{name}.toml"
        path.write_text(
            node_config_toml(
                name=name,
                data_dir=self.tmp_path / f"{name}-data",
                router_port=free_port(),
                metrics_port=free_port(),
                replicas=list(replicas),
                sections=merged,
            )
        )
        node = NodeProcess(path, log_path=self._log("node"))
        self.started.append(node)
        return node, path

    def cluster(
        self,
        sim_args: Sequence[Sequence[str]],
        sections: dict[str, dict[str, Any]] | None = None,
        models: Sequence[str] | None = None,
        wait_healthy: bool = True,
        timeout: float = 20.0,
    ) -> Cluster:
        """Start ``len(sim_args)`` simulators (replica ``r<i>`` serves ``models[i]``) and a node.

        Simulators and the node start side by side (the node's health checks simply see the
        replicas come up). With ``wait_healthy`` it returns once every replica is "healthy".
        """
        models = list(models) if models is not None else [DEFAULT_MODEL] * len(sim_args)
        assert len(models) == len(sim_args), "one model per simulator"
        sims = [
            self.sim("--model", model, *args, wait="none")
            for model, args in zip(models, sim_args, strict=True)
        ]
        return self.front(sims, sections, wait_healthy=wait_healthy, timeout=timeout)

    def front(
        self,
        sims: Sequence[SimProcess],
        sections: dict[str, dict[str, Any]] | None = None,
        wait_healthy: bool = True,
        timeout: float = 20.0,
    ) -> Cluster:
        """Start a node in front of already started simulators (replica ``r<i>`` is ``sims[i]``)."""
        models = [_sim_model(s) for s in sims]
        names = [f"r{i}" for i in range(len(sims))]
        replicas = [
            {"name": n, "model": m, "url": s.url, "engine": "vllm"}
            for n, m, s in zip(names, models, sims, strict=True)
        ]
        node, path = self.node(replicas, sections)
        cluster = Cluster(node, list(sims), names, models, self, path)
        if wait_healthy:
            cluster.wait_health("healthy", timeout)
        return cluster

    def outputs(self, tail: int = 4000) -> str:
        parts = []
        for proc in self.started:
            text = proc.output()[-tail:]
            parts.append(f"--- {proc.kind} pid={proc.pid} cmd={proc.cmd[3:]} ---\n{text}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            try:
                proc.stop(timeout=5.0)
            except Exception as exc:  # keep stopping the others
                print(f"stopping pid {proc.pid} failed: {exc!r}")


@pytest.fixture
def e2e_procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[E2EProcs]:
    procs = E2EProcs(tmp_path)
    try:
        yield procs
    finally:
        report = getattr(request.node, "_e2e_rep_call", None)
        if report is not None and report.failed:
            print(procs.outputs())
        procs.stop_all()


_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels`` (0.0 when none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric_name, _, label_text = head.partition("{")
        if metric_name != name:
            continue
        sample = dict(_LABEL_RE.findall(label_text))
        if all(sample.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


__all__ = [
    "DEFAULT_MODEL",
    "FAST_HEALTH",
    "Cluster",
    "E2EProcs",
    "metric_sum",
    "raw_request",
    "wait_until",
]
