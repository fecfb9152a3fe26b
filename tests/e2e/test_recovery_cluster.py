"""Recovery through the cluster, end to end: replicas run by their node (actuator =
"command" starting ``hanode sim``), the official openai client under load, hanodectl.

- a sleeping standby covers an active replica's SIGKILL, the incident timeline says so and
  its MTTR (from the timeline's own timestamps) is under 5 s; Prometheus exports it;
- a replica put to sleep trips nothing and raises no incident; woken by ``hanodectl wake`` it
  gets weight only once its node saw it pass its checks, and the weight ramps up;
- ``hanodectl restart`` starts a crash-looped replica again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hanode.devtools.procs import http_get, wait_until
from tests.e2e.cluster_support import FAST_SIM, MODEL, RaftCluster, Replica

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# L1 every 0.2 s with a short timeout: the node's supervisor trusts a health level
# (fall + 1) x (interval + timeout) after a (re)start or wake; L2 every second, so a sleeping
# engine (which holds requests) is seen UNREADY and a woken one passes L2 again.
HEALTH = {"interval_s": 0.2, "timeout_s": 0.4, "l2_interval_s": 1.0, "l2_timeout_s": 0.5}
RECOVERY = {"poll_interval_s": 0.2, "backoff_base_s": 0.3, "backoff_max_s": 1.0}
SIM = (*FAST_SIM, "--wake-s", "1", "--sleep-s", "0.2")


class Load:
    """Chat completions through the router from two threads until stopped."""

    def __init__(self, cluster: RaftCluster) -> None:
        self.cluster = cluster
        self.ok: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        node = self.cluster.nodes[0]
        client = node.openai(timeout=10.0)
        while not self._stop.is_set():
            try:
                self.ok.append((time.monotonic(), node.ask(client)))
            except Exception as exc:
                self.errors.append(repr(exc))
                time.sleep(0.05)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15.0)


def start(tmp_path: Path, replicas: list[Replica], **sections: dict[str, Any]) -> RaftCluster:
    merged: dict[str, dict[str, Any]] = {"health": dict(HEALTH), "recovery": dict(RECOVERY)}
    for key, values in sections.items():
        merged.setdefault(key, {}).update(values)
    return RaftCluster(tmp_path, [("n1", replicas)], sections=merged).start(timeout=40.0)


def incidents(c: RaftCluster) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = c.ctl_json(0, "incidents")["incidents"]
    return found


def process(rep: dict[str, Any]) -> str:
    return str((rep.get("process") or {}).get("observed", ""))


def test_a_sleeping_standby_covers_a_crash_within_5s_and_the_mttr_is_exported(
    tmp_path: Path,
) -> None:
    slow_load = (*SIM, "--load-s", "8")  # a restarted r1 takes 8 s: the standby must win
    c = start(
        tmp_path,
        [
            Replica("r1", actuator="command", sim_args=slow_load),
            Replica("r2", role="standby", actuator="command", standby="sleep", sim_args=slow_load),
        ],
        cluster={"demote_hold_s": 2.0},
    )
    try:
        node = c.nodes[0]
        c.wait_leader()
        wait_until(
            lambda: (
                (reps := node.ops_replicas())["r1"]["health"] == "healthy"
                and reps["r1"]["weight"] > 0
                and process(reps["r2"]) == "sleeping"
            ),
            60.0,
            0.2,
            message="r1 serving and r2 asleep",
        )
        assert incidents(c) == []  # a standby asleep is no lost capacity
        with Load(c) as load:
            wait_until(lambda: len(load.ok) >= 20, 20.0, 0.1, message="load flowing")
            os.killpg(node.supervised_pids()["r1"], signal.SIGKILL)

            def restored() -> dict[str, Any] | None:
                found = [i for i in incidents(c) if i["replica"] == "r1"]
                return found[0] if found and found[0]["restored"] is not None else None

            inc = wait_until(restored, 40.0, 0.3, message="the incident's capacity restored")
            wait_until(
                lambda: any(r == "r2" for _, r in load.ok[-5:]), 10.0, 0.1, message="r2 serves"
            )
        steps = [(s["what"], s["message"]) for s in inc["timeline"]]
        assert ("action", "woke standby r2") in steps, steps
        assert ("action", "promoted r2") in steps, steps
        assert steps[-1][0] == "standby_serving", steps  # the standby, not r1 coming back
        # measured on the incident's own clock: detection to capacity restored
        assert inc["mttr_s"] == pytest.approx(inc["restored"] - inc["detected"], abs=0.01)
        print(f"sleeping-standby takeover: MTTR {inc['mttr_s']}s, timeline {steps}")
        assert inc["mttr_s"] < 5.0, inc
        code, _, body = http_get(f"http://127.0.0.1:{node.metrics_port}/metrics", 3.0)
        assert code == 200
        text = body.decode()
        assert f'hanode_incident_mttr_seconds_count{{model="{MODEL}"}} 1.0' in text, text[-2000:]
        table = c.ctl_ok(0, "incidents")
        assert "r1#1" in table and f"{inc['mttr_s']:.1f}s" in table and "woke standby r2" in table
        # the original comes back, the incident closes, and after the hold r2 sleeps again
        wait_until(
            lambda: incidents(c)[0]["closed"] is not None,
            60.0,
            0.5,
            message="r1 back: incident closed",
        )
        wait_until(
            lambda: process(node.ops_replicas()["r2"]) == "sleeping",
            40.0,
            0.3,
            message="r2 back to sleep",
        )
        assert node.ops_replicas()["r2"]["role"] == "standby"
    finally:
        c.stop_all()


def test_a_sleeping_replica_trips_nothing_and_ramps_up_after_a_wake(tmp_path: Path) -> None:
    c = start(
        tmp_path,
        [
            Replica("r1", actuator="command", sim_args=SIM),
            Replica("r2", actuator="command", sim_args=SIM),
        ],
        health={"slow_start_s": 4.0},
    )
    try:
        node = c.nodes[0]
        c.wait_serving(timeout=40.0)
        with Load(c) as load:
            wait_until(lambda: len(load.ok) >= 20, 20.0, 0.1, message="load flowing")
            refused = c.ctl(0, "sleep", "r2")  # r1 serves: not the last one, allowed
            assert refused.returncode == 0, refused.stderr
            wait_until(
                lambda: process(node.ops_replicas()["r2"]) == "sleeping",
                20.0,
                0.2,
                message="r2 asleep",
            )
            done = c.ctl(0, "sleep", "r1")  # r1 is now the last serving replica
            assert done.returncode == 1 and "no serving replica" in done.stderr, done.stderr
            asleep_at = len(load.ok)
            wait_until(lambda: len(load.ok) >= asleep_at + 30, 20.0, 0.1, message="load on r1")
            assert all(r == "r1" for _, r in load.ok[asleep_at:])
            assert incidents(c) == []
            assert [b for b in c.breakers(0) if b["replica"] == "r2"] == []
            c.ctl_ok(0, "wake", "r2")
            samples: list[tuple[float, str, str]] = []

            def ramped() -> bool:
                rep = node.ops_replicas()["r2"]
                samples.append((float(rep["weight"]), process(rep), rep["health"]))
                return samples[-1][0] >= 0.99 * float(node.ops_replicas()["r1"]["weight"])

            wait_until(ramped, 30.0, 0.2, message="r2 at its full weight again")
            wait_until(
                lambda: any(r == "r2" for _, r in load.ok[-10:]), 10.0, 0.1, message="r2 serves"
            )
        # weight only once its node saw it running again (after the warm-up and L2)
        for weight, observed, health in samples:
            if weight > 0:
                assert observed == "running" and health in ("healthy", "degraded"), samples
        weights = [w for w, _, _ in samples if w > 0]
        assert weights and weights[0] < 0.7 * weights[-1], samples  # it ramped, not at once
        assert load.errors == [], load.errors[:5]
        assert incidents(c) == []
    finally:
        c.stop_all()


def test_hanodectl_restart_starts_a_crash_looped_replica_again(tmp_path: Path) -> None:
    flag = tmp_path / "may-start"
    port = Replica("x").port
    # A start command that exits at once until the flag file exists (a broken deploy, fixed).
    program = (
        "import os, sys\n"
        f"if not os.path.exists({str(flag)!r}): sys.exit(3)\n"
        f"os.execv(sys.executable, [sys.executable, '-m', 'hanode.sim', '--port', '{port}', "
        f"'--model', {MODEL!r}, '--ttft-ms', '2', '--tpot-ms', '0', '--load-s', '0'])\n"
    )
    broken = Replica("r2", actuator="command", port=port, command=(sys.executable, "-c", program))
    c = start(
        tmp_path,
        [Replica("r1"), broken],
        recovery={"crash_loop_restarts": 2, "crash_loop_window_s": 60.0},
    )
    try:
        node = c.nodes[0]
        c.wait_leader()
        wait_until(
            lambda: process(node.ops_replicas()["r2"]) == "crash_loop",
            40.0,
            0.2,
            message="r2 in a crash loop",
        )
        events = [json.loads(line) for line in c.ctl_ok(0, "events", "--json").splitlines()]
        assert any(e["kind"] == "crash_loop" and e["subject"] == "r2" for e in events), events
        assert node.ops_replicas()["r2"]["weight"] == 0
        flag.write_text("fixed\n")
        out = c.ctl_ok(0, "restart", "r2")
        assert "restart of r2 requested (request 1)" in out
        wait_until(
            lambda: (
                (rep := node.ops_replicas()["r2"])["health"] == "healthy"
                and process(rep) == "running"
            ),
            40.0,
            0.2,
            message="r2 running again after hanodectl restart",
        )
        assert c.ctl(0, "restart", "nope").returncode == 1
        plain = c.ctl(0, "restart", "r1")  # no actuator: hanode only routes to it
        assert plain.returncode == 1 and "no actuator" in plain.stderr
    finally:
        c.stop_all()
