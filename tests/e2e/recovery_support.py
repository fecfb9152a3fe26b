"""Helpers of the recovery e2e tests: a node whose replicas it runs itself (actuator =
"command", each a ``hanode sim``), its events and the replica processes' pids.

The node starts the replica processes in their own sessions and leaves them running when it
exits (the next daemon adopts them), so :func:`kill_replicas` stops them at the end of a test,
by the pid in the node's state file, checked against the process's start time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hanode.actuators.command import RunRecord
from tests.support.procs import NodeProcess, free_port, http_get, node_config_toml, wait_until

MODEL = "sim-model"
HEALTH = {"interval_s": 0.2, "timeout_s": 1.0, "rise": 1, "fall": 2, "l2_timeout_s": 2.0}
# Small delays so a test sees several restarts within seconds.
RECOVERY = {
    "backoff_base_s": 0.2,
    "backoff_max_s": 2.0,
    "backoff_jitter": 0.0,
    "crash_loop_restarts": 3,
    "crash_loop_window_s": 600.0,
    "poll_interval_s": 0.1,
    "start_timeout_s": 30.0,
    "stop_grace_s": 2.0,
}


def sim_command(port: int, *args: str) -> list[str]:
    """A replica the node runs: a simulator with a short cold start."""
    return [
        sys.executable, "-m", "hanode.sim", "--port", str(port), "--model", MODEL,
        "--load-s", "0.5", "--ttft-ms", "2", "--tpot-ms", "1", *args,
    ]  # fmt: skip


def supervised(name: str, port: int, command: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model": MODEL,
        "url": f"http://127.0.0.1:{port}",
        "actuator": "command",
        "command": command,
        **extra,
    }


def write_config(
    path: Path,
    data_dir: Path,
    replicas: list[dict[str, Any]],
    recovery: dict[str, Any] | None = None,
) -> Path:
    path.write_text(
        node_config_toml(
            name="n1",
            data_dir=data_dir,
            router_port=free_port(),
            metrics_port=free_port(),
            replicas=replicas,
            sections={"health": dict(HEALTH), "recovery": {**RECOVERY, **(recovery or {})}},
        )
    )
    return path


def events(
    node: NodeProcess, kind: str | None = None, subject: str | None = None
) -> list[dict[str, Any]]:
    code, _, body = http_get(node.ops_url + "/events?after=0", 2.0)
    assert code == 200
    out = json.loads(body)["events"]
    return [
        e
        for e in out
        if (kind is None or e["kind"] == kind) and (subject is None or e["subject"] == subject)
    ]


def process(node: NodeProcess, name: str) -> dict[str, Any]:
    """The supervisor's view of one replica's process (``/status`` replicas[].process)."""
    proc: dict[str, Any] = node.replicas()[name]["process"]
    return proc


def wait_serving(node: NodeProcess, name: str, timeout: float = 30.0) -> dict[str, Any]:
    """Until the replica is healthy and its process observed running; returns the process."""

    def ready() -> dict[str, Any] | None:
        r = node.replicas()[name]
        proc = r.get("process") or {}
        return proc if r["health"] == "healthy" and proc.get("observed") == "running" else None

    return wait_until(ready, timeout, message=f"{name} serving and running")


def record(data_dir: Path, name: str) -> RunRecord | None:
    try:
        return RunRecord.from_json((data_dir / "replicas" / f"{name}.json").read_bytes())
    except OSError:
        return None


def kill_replicas(data_dir: Path, names: list[str]) -> None:
    """SIGKILL each replica process group the node left running (ours: same start time)."""
    for name in names:
        rec = record(data_dir, name)
        if rec is not None and rec.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(rec.pid, signal.SIGKILL)


def copies_running(command: list[str]) -> int:
    """Processes whose command line is ``command`` (a real check against two copies)."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmdline.rstrip("\0").split("\0")[1:] == command[1:]:  # argv[0] may differ
            count += 1
    return count


@contextlib.contextmanager
def replicas_cleaned(data_dir: Path, names: list[str]) -> Iterator[None]:
    try:
        yield
    finally:
        kill_replicas(data_dir, names)
