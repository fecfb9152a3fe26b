"""MTTR of hanode's own recovery, from the incident timeline (detected -> capacity restored).

Two scenarios on a one-node cluster whose replicas the node runs itself (``actuator =
"command"`` starting ``hanode sim``); the active replica's process is SIGKILLed (by the pid
its node recorded) and the MTTR is read back from ``ListIncidents``:

* crash and restart: no standby; the node restarts the replica, which loads again
  (``--load-s``: a cold start, refused then 503) before it serves;
* sleeping-standby takeover: a standby in the engine's sleep mode (``standby = "sleep"``) is
  woken (``--wake-s``) and promoted while the crashed one reloads.

Absolute times follow the simulated load and wake times and the health timings below; the
ratio of the two is what a sleeping standby buys. ``python -m bench.recovery [--quick]`` runs
this part alone and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import HOST, ProcGroup, free_port, say
from hanode.actuators.command import RunRecord
from hanode.api.convert import incident_from_proto, pb
from hanode.cli.ctl import Client, CtlError, Settings
from hanode.devtools.procs import http_get, node_config_toml, wait_until

MODEL = "bench-model"
HEALTH = {"interval_s": 0.2, "timeout_s": 0.4, "rise": 2, "fall": 2, "l2_interval_s": 1.0,
          "l2_timeout_s": 0.5, "slow_start_s": 0.0}  # fmt: skip
RECOVERY = {"poll_interval_s": 0.2, "backoff_base_s": 0.3, "backoff_max_s": 1.0}


@dataclass(frozen=True, slots=True)
class RecoverySettings:
    rounds: int = 3  # crashes per scenario
    load_s: float = 6.0  # the simulated cold start of a (re)started replica
    wake_s: float = 1.0  # the simulated wake from sleep mode


QUICK = RecoverySettings(rounds=1, load_s=4.0)


@dataclass(slots=True)
class RecoveryResult:
    settings: RecoverySettings
    restart_mttr_s: list[float] = field(default_factory=list)
    takeover_mttr_s: list[float] = field(default_factory=list)
    timelines: list[str] = field(default_factory=list)  # one takeover timeline, for people
    error: str | None = None


def _replica(name: str, role: str, port: int, st: RecoverySettings) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "hanode.sim", "--port", str(port), "--model", MODEL,
        "--ttft-ms", "5", "--tpot-ms", "1", "--load-s", str(st.load_s), "--wake-s", str(st.wake_s),
    ]  # fmt: skip
    return {
        "name": name,
        "model": MODEL,
        "url": f"http://{HOST}:{port}",
        "role": role,
        "actuator": "command",
        "command": command,
        "standby": "sleep",
    }


def _incidents(api: str) -> list[dict[str, Any]]:
    client = Client(Settings(api, None, 5.0))
    try:
        answer = client.call("ListIncidents", pb.ListIncidentsRequest(last=10))
    finally:
        client.close()
    return [incident_from_proto(i) for i in answer.incidents]


def _stop_supervised(data_dir: Path) -> None:
    """What the node left running (a stopped node leaves its replicas to the next one)."""
    for path in sorted((data_dir / "replicas").glob("*.json")):
        record = RunRecord.from_json(path.read_bytes())
        if record is not None and record.alive():
            with contextlib.suppress(OSError):
                os.killpg(record.pid, signal.SIGKILL)


def _scenario(tmp: Path, standby: bool, st: RecoverySettings, k: int) -> tuple[float, str]:
    """One crash; returns its MTTR and its timeline."""
    run = tmp / f"{'takeover' if standby else 'restart'}-{k}"
    run.mkdir()
    secret = run / "raft.secret"
    secret.write_text("bench-recovery-secret-0123456789\n")
    secret.chmod(0o600)  # hanode refuses a secret file others can read
    metrics, api = free_port(), free_port()
    replicas = [_replica("r1", "active", free_port(), st)]
    if standby:
        replicas.append(_replica("r2", "standby", free_port(), st))
    config = run / "node.toml"
    config.write_text(
        node_config_toml(
            name="n1",
            data_dir=run / "data",
            router_port=free_port(),
            metrics_port=metrics,
            replicas=replicas,
            sections={
                "health": HEALTH,
                "recovery": RECOVERY,
                "cluster": {
                    "raft_listen": f"{HOST}:{free_port()}",
                    "secret_file": str(secret),
                    "election_min_s": 0.3,
                    "election_max_s": 0.9,
                    "planner_interval_s": 0.3,
                    "demote_hold_s": 600.0,
                },
                "api": {"listen": f"{HOST}:{api}"},
            },
        )
    )
    with ProcGroup(run) as group:
        group.extra_stops.append(lambda: _stop_supervised(run / "data"))
        group.node("node", config, timeout=60.0)

        def ready() -> bool:
            _, _, body = http_get(f"http://{HOST}:{metrics}/status", 2.0)
            reps = {r["name"]: r for r in json.loads(body)["replicas"]}
            asleep = not standby or (reps["r2"].get("process") or {}).get("observed") == "sleeping"
            return bool(reps["r1"]["weight"] > 0 and asleep)

        wait_until(ready, 30.0 + 2 * st.load_s, 0.2, message="r1 serving (and r2 asleep)")
        pid = RunRecord.from_json((run / "data" / "replicas" / "r1.json").read_bytes())
        assert pid is not None
        os.killpg(pid.pid, signal.SIGKILL)

        def restored() -> dict[str, Any] | None:
            found = [i for i in _incidents(f"{HOST}:{api}") if i["replica"] == "r1"]
            return found[0] if found and found[0]["mttr_s"] is not None else None

        inc = wait_until(restored, 30.0 + 2 * st.load_s, 0.3, message="capacity restored")
    start = float(inc["detected"])
    steps = "; ".join(
        f"+{float(s['ts']) - start:.2f}s {s['what']}: {s['message']}" for s in inc["timeline"]
    )
    return float(inc["mttr_s"]), steps


def run(settings: RecoverySettings) -> RecoveryResult:
    result = RecoveryResult(settings)
    try:
        with tempfile.TemporaryDirectory(prefix="hanode-bench-recovery-") as tmp_name:
            tmp = Path(tmp_name)
            for k in range(settings.rounds):
                say(f"recovery {k + 1}/{settings.rounds}: crash and restart")
                mttr, _ = _scenario(tmp, False, settings, k)
                result.restart_mttr_s.append(mttr)
                say(f"recovery {k + 1}/{settings.rounds}: sleeping-standby takeover")
                mttr, steps = _scenario(tmp, True, settings, k)
                result.takeover_mttr_s.append(mttr)
                result.timelines.append(steps)
    except (TimeoutError, RuntimeError, OSError, CtlError, AssertionError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    each = ", ".join(f"{v:.2f}" for v in values)
    return f"{statistics.median(values):.2f} s (each: {each})"


def render(r: RecoveryResult) -> str:
    st = r.settings
    lines = [
        "| scenario | MTTR, median | what happens |",
        "|---|---|---|",
        f"| crash and restart (no standby) | {_stats(r.restart_mttr_s)} | the node restarts "
        f"the replica; it loads again ({st.load_s:g} s simulated cold start) |",
        f"| sleeping-standby takeover | {_stats(r.takeover_mttr_s)} | the leader wakes the "
        f"standby ({st.wake_s:g} s simulated wake) and promotes it |",
    ]
    if r.restart_mttr_s and r.takeover_mttr_s:
        ratio = statistics.median(r.takeover_mttr_s) / statistics.median(r.restart_mttr_s)
        lines.append(f"\ntakeover / restart MTTR: {ratio:.2f}")
    if r.timelines:
        lines.append(f"\none takeover's timeline: {r.timelines[-1]}")
    if r.error:
        lines.append(f"\nfailed: {r.error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one crash per scenario, shorter loads")
    a = p.parse_args(argv)
    started = time.monotonic()
    result = run(QUICK if a.quick else RecoverySettings())
    print(f"\n{render(result)}\n\n({time.monotonic() - started:.0f} s)")
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
