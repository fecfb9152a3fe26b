"""Rolling reloads end to end: replicas run by their node (actuator = "command" starting
``hanode sim``), steady load from the official openai client (streaming and not), hanodectl.

- a three-replica model reloads with no failed request and never fewer than min_active
  serving (polled from ``hanodectl reload --status``), without and with --surge; every
  replica runs a new process afterwards (one restart each, from the recorded pids);
- a replica whose start command fails stops the rollout; the others serve;
- ``--abort`` stops a rollout and every replica serves again;
- killing the leader mid-reload: a new leader finishes the same rollout, reloading nothing
  twice;
- streams in flight on a draining replica (through another node's router) finish whole
  before it is reloaded (stream continuation off, so a cut would show);
- ``reload = "engine"``: the engines reload their weights in place (vLLM /collective_rpc).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hanode.devtools.procs import http_get, wait_until
from tests.e2e.cluster_support import FAST_SIM, MESSAGES, MODEL, Node, RaftCluster, Replica

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

HEALTH = {
    "interval_s": 0.2,
    "timeout_s": 0.4,
    "l2_interval_s": 0.5,
    "l2_timeout_s": 0.5,
    "slow_start_s": 1.0,
}
RECOVERY = {"poll_interval_s": 0.2, "backoff_base_s": 0.3, "backoff_max_s": 1.0}
ROLLOUT = {"rollout_reload_timeout_s": 20.0, "rollout_warmup_prompts": 1}
SIM = (*FAST_SIM, "--load-s", "1")


class Load:
    """Chat completions through the router from two threads (one streams) until stopped."""

    def __init__(self, cluster: RaftCluster) -> None:
        self.cluster = cluster
        self.ok = 0
        self.streams = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._plain, daemon=True),
            threading.Thread(target=self._stream, daemon=True),
        ]

    def _plain(self) -> None:
        node = self.cluster.nodes[0]
        client = node.openai(timeout=10.0)
        while not self._stop.is_set():
            try:
                node.ask(client)
                self.ok += 1
            except Exception as exc:
                self.errors.append(repr(exc))
                time.sleep(0.05)

    def _stream(self) -> None:
        client = self.cluster.nodes[0].openai(timeout=10.0)
        while not self._stop.is_set():
            try:
                stream = client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, max_tokens=8, stream=True
                )
                finish = None
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
                assert finish is not None, "stream ended without a finish_reason"
                self.streams += 1
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


def start(tmp_path: Path, replicas: list[Replica], min_active: int) -> RaftCluster:
    sections: dict[str, dict[str, Any]] = {
        "health": dict(HEALTH),
        "recovery": dict(RECOVERY),
        "cluster": dict(ROLLOUT),
    }
    c = RaftCluster(
        tmp_path,
        [("n1", replicas)],
        sections=sections,
        models=[{"name": MODEL, "min_active": min_active}],
    )
    return c.start(timeout=40.0)


def status(c: RaftCluster) -> dict[str, Any]:
    rollouts: list[dict[str, Any]] = c.ctl_json(0, "reload", "--status", MODEL)["rollouts"]
    return rollouts[0] if rollouts else {}


def _serving_through(node: Node, names: list[str]) -> bool:
    reps = node.ops_replicas()
    return all(reps[n]["health"] == "healthy" and reps[n]["weight"] > 0 for n in names)


def wait_ready(c: RaftCluster, names: list[str]) -> None:
    """A leader, and ``names`` healthy with a weight on every node's router."""
    c.wait_leader()
    for node in c.nodes:
        if node.proc is None or not node.proc.alive:
            continue
        wait_until(
            functools.partial(_serving_through, node, names),
            60.0,
            0.2,
            message=f"every active replica serving through {node.name}",
        )


def follow(c: RaftCluster, min_active: int, timeout: float = 120.0) -> tuple[dict[str, Any], int]:
    """Poll the rollout until it ends; the fewest serving replicas seen on the way."""
    fewest = 99
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ro = status(c)
        fewest = min(fewest, int(ro.get("serving", 99)))
        if ro.get("state") != "running" and ro.get("surge_state") not in ("woken", "promoted"):
            return ro, fewest
        time.sleep(0.2)
    raise AssertionError(f"rollout still running: {status(c)}")


@pytest.mark.parametrize("surge", [False, True], ids=["plain", "surge"])
def test_a_three_replica_model_reloads_under_load_without_a_failed_request(
    tmp_path: Path, surge: bool
) -> None:
    reps = [Replica(f"r{i}", actuator="command", sim_args=SIM) for i in range(3)]
    if surge:  # min_active 3: without a surge standby the rollout could not take one out
        reps.append(
            Replica("s", role="standby", actuator="command", standby="stopped", sim_args=SIM)
        )
    min_active = 3 if surge else 2
    c = start(tmp_path, reps, min_active)
    try:
        node = c.nodes[0]
        wait_ready(c, ["r0", "r1", "r2"])
        before = node.supervised_pids()
        with Load(c) as load:
            wait_until(lambda: load.ok >= 20 and load.streams >= 5, 20.0, 0.1, message="load")
            args = ["reload", MODEL, "--drain-timeout", "10"] + (["--surge"] if surge else [])
            c.ctl_ok(0, *args)
            ro, fewest = follow(c, min_active)
            served = load.ok
            wait_until(lambda: load.ok >= served + 10, 20.0, 0.1, message="load after")
        assert ro["state"] == "done", ro
        assert [r["step"] for r in ro["replicas"]] == ["done"] * len(ro["replicas"]), ro
        assert fewest >= min_active, (fewest, ro)
        assert load.errors == [], load.errors[:5]
        after = node.supervised_pids()
        for name in ("r0", "r1", "r2"):  # a new process each
            assert after[name] != before[name], (before, after)
        lines = c.ctl_ok(0, "events", "--json").splitlines()
        restarts = [
            e for e in map(json.loads, lines)
            if e["kind"] == "rollout" and (e.get("fields") or {}).get("step") == "reloading"
        ]  # fmt: skip
        per = {e["subject"] for e in restarts}
        assert len(restarts) == len(per) == len(ro["replicas"]), restarts  # once each
        if surge:
            assert ro["surge_replica"] == "s" and ro["surge_state"] == "released", ro
            assert node.ops_replicas()["s"]["role"] == "standby"
        _, _, body = http_get(f"http://127.0.0.1:{node.metrics_port}/metrics", 3.0)
        text = body.decode()
        assert f'hanode_rollout_duration_seconds_count{{model="{MODEL}",state="done"}} 1.0' in text
        assert "hanode_rollout_replica_unavailable_seconds_count" in text
    finally:
        c.stop_all()
        for n in c.nodes:
            n.stop_supervised()


def test_a_failing_reload_stops_the_rollout_and_abort_leaves_every_replica_serving(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "broken"
    script = tmp_path / "sim.sh"
    reps = [Replica(f"r{i}", actuator="command", sim_args=SIM) for i in range(3)]
    # r1 runs through a wrapper: once the flag file exists its start command fails
    script.write_text(f'#!/bin/sh\n[ -e "{flag}" ] && exit 3\nexec "$@"\n')
    script.chmod(0o755)
    import sys

    reps[1].command = (
        str(script), sys.executable, "-m", "hanode.sim", "--port", str(reps[1].port),
        "--model", MODEL, *SIM,
    )  # fmt: skip
    c = start(tmp_path, reps, 2)
    try:
        node = c.nodes[0]
        wait_ready(c, ["r0", "r1", "r2"])
        flag.write_text("1")
        with Load(c) as load:
            wait_until(lambda: load.ok >= 20, 20.0, 0.1, message="load")
            c.ctl_ok(0, "reload", MODEL)
            ro, _ = follow(c, 2)
            assert ro["state"] == "failed" and "r1 did not pass L2" in ro["reason"], ro
            steps = {r["name"]: r["step"] for r in ro["replicas"]}
            assert steps == {"r0": "done", "r1": "failed", "r2": "waiting"}, steps
            served = load.ok
            wait_until(lambda: load.ok >= served + 20, 20.0, 0.1, message="the others serve")
        assert load.errors == [], load.errors[:5]
        reps_now = node.ops_replicas()
        assert all(reps_now[n]["admin"] == "enabled" for n in ("r0", "r1", "r2")), reps_now
        # --abort: a new rollout, stopped while it drains or reloads
        flag.unlink()
        c.ctl_ok(0, "restart", "r1")
        wait_ready(c, ["r0", "r1", "r2"])
        c.ctl_ok(0, "reload", MODEL, "--max-unavailable", "1")
        wait_until(
            lambda: any(r["step"] in ("draining", "reloading") for r in status(c)["replicas"]),
            20.0,
            0.1,
            message="a replica out",
        )
        out = c.ctl_ok(0, "reload", "--abort", MODEL)
        assert "aborted" in out, out
        assert status(c)["state"] == "aborted"
        wait_ready(c, ["r0", "r1", "r2"])
        assert all(r["admin"] == "enabled" for r in node.ops_replicas().values())
        refused = c.ctl(0, "reload", "--abort", MODEL)
        assert refused.returncode == 1 and "no rollout" in refused.stderr, refused.stderr
    finally:
        c.stop_all()
        for n in c.nodes:
            n.stop_supervised()


def test_killing_the_leader_mid_reload_a_new_leader_finishes_it_reloading_nothing_twice(
    tmp_path: Path,
) -> None:
    import signal

    loading = (*FAST_SIM, "--load-s", "3")  # a reload lasts seconds: the kill lands inside it
    reps = [Replica(f"r{i}", actuator="command", sim_args=loading) for i in range(3)]
    sections: dict[str, dict[str, Any]] = {
        "health": dict(HEALTH),
        "recovery": dict(RECOVERY),
        "cluster": dict(ROLLOUT),
    }
    c = RaftCluster(
        tmp_path,
        # the rolled model's node is never the one killed; the others serve another model
        [
            ("n1", reps),
            ("n2", [Replica("o2", model="other")]),
            ("n3", [Replica("o3", model="other")]),
        ],
        sections=sections,
        models=[{"name": MODEL, "min_active": 2}],
    ).start(timeout=40.0)
    try:
        node = c.nodes[0]
        wait_ready(c, ["r0", "r1", "r2"])
        leader = c.wait_leader()
        if leader == "n1":
            c.ctl_ok(0, "leader", "transfer", "--to", c.nodes[1].raft)
            leader = c.wait_leader(exclude="n1")
        victim = next(n for n in c.nodes if n.name == leader)
        before = node.supervised_pids()
        with Load(c) as load:
            wait_until(lambda: load.ok >= 20, 20.0, 0.1, message="load")
            c.ctl_ok(0, "reload", MODEL)
            wait_until(
                lambda: (
                    {r["name"]: r["step"] for r in status(c)["replicas"]}["r1"]
                    in ("reloading", "warming")
                ),
                60.0,
                0.1,
                message="r1 mid-reload",
            )
            assert victim.proc is not None
            victim.proc.kill(signal.SIGKILL)
            victim.proc.wait_exit(10.0)
            alive = [n for n in c.nodes if n is not victim]
            c.wait_leader(alive, timeout=30.0, exclude=leader)
            ro, fewest = follow(c, 2)
        assert ro["state"] == "done", ro
        assert fewest >= 2
        assert load.errors == [], load.errors[:5]
        lines = c.ctl_ok(0, "events", "--json").splitlines()
        reloads = [
            e["subject"] for e in map(json.loads, lines)
            if e["kind"] == "rollout" and (e.get("fields") or {}).get("step") == "reloading"
        ]  # fmt: skip
        assert sorted(reloads) == ["r0", "r1", "r2"], reloads  # no replica reloaded twice
        after = node.supervised_pids()
        assert all(after[n] != before[n] for n in ("r0", "r1", "r2")), (before, after)
        leaders = [e for e in map(json.loads, lines) if e["kind"] == "leader"]
        assert len(leaders) >= 2, leaders
    finally:
        c.stop_all()
        for n in c.nodes:
            n.stop_supervised()


def test_streams_in_flight_on_a_draining_replica_finish_before_it_is_reloaded(
    tmp_path: Path,
) -> None:
    slow = (*SIM, "--tpot-ms", "100")  # 30 tokens: 3 s per stream
    reps = [Replica(f"r{i}", actuator="command", sim_args=slow) for i in range(2)]
    sections: dict[str, dict[str, Any]] = {
        "health": dict(HEALTH),
        "recovery": dict(RECOVERY),
        "cluster": dict(ROLLOUT),
        # a stream cut by the reload would be continued on r1 and hide the cut: off here
        "router": {"stream_continuation": False},
    }
    # The streams go through n2's router to replicas on n1: the drain must wait for the
    # in-flight count of a router other than the replicas' own node's.
    c = RaftCluster(
        tmp_path,
        [("n1", reps), ("n2", [Replica("o2", model="other")])],
        sections=sections,
        models=[{"name": MODEL, "min_active": 1}],
    ).start(timeout=40.0)
    try:
        wait_ready(c, ["r0", "r1"])
        client = c.nodes[1].openai(timeout=30.0)
        results: list[tuple[str, int, str | None]] = []
        errors: list[str] = []

        def one() -> None:
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=MESSAGES, max_tokens=30, stream=True
                )
                replica = raw.headers.get("x-hanode-replica", "")
                chunks, finish = 0, None
                for chunk in raw.parse():
                    if chunk.choices and chunk.choices[0].delta.content:
                        chunks += 1
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
                results.append((replica, chunks, finish))
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=one, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        router = c.nodes[1]
        wait_until(
            lambda: router.ops_replicas()["r0"].get("inflight", 0) > 0,
            10.0,
            0.05,
            message="streams on r0 through n2's router",
        )
        c.ctl_ok(0, "reload", MODEL, "--drain-timeout", "60")
        seen_inflight = 0
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            r0 = {r["name"]: r for r in status(c)["replicas"]}["r0"]
            if r0["step"] == "draining":
                seen_inflight = max(seen_inflight, int(r0["inflight"]))
            if r0["step"] not in ("waiting", "draining"):
                break
            time.sleep(0.1)
        for t in threads:
            t.join(timeout=30.0)
        ro, _ = follow(c, 1)
        assert ro["state"] == "done", ro
        assert errors == [], errors
        on_r0 = [r for r in results if r[0] == "r0"]
        assert on_r0, results  # some streams were on the replica that drained
        assert all(chunks == 30 and finish == "length" for _, chunks, finish in results), results
        assert seen_inflight > 0  # the rollout waited for them (counted by the router)...
        lines = c.ctl_ok(0, "events", "--json").splitlines()
        moves = [
            e["message"] for e in map(json.loads, lines)
            if e["kind"] == "rollout" and e["subject"] == "r0"
        ]  # fmt: skip
        assert any("draining -> reloading: drained" in m for m in moves), moves  # ...not a timeout
    finally:
        c.stop_all()
        for n in c.nodes:
            n.stop_supervised()


def test_engine_reload_replicas_reload_their_weights_in_place(tmp_path: Path) -> None:
    """``reload = "engine"``: vLLM's /collective_rpc reload_weights (the simulator's), the
    processes stay (same pids), each engine reloads once."""
    quick = (*SIM, "--wake-s", "0.5")  # a weight reload takes 0.5 s
    engine = {"reload": "engine"}  # [[replicas]] reload = "engine" in the node's config
    reps = [Replica(f"r{i}", actuator="command", sim_args=quick, extra=engine) for i in range(2)]
    c = RaftCluster(
        tmp_path,
        [("n1", reps)],
        sections={"health": dict(HEALTH), "recovery": dict(RECOVERY), "cluster": dict(ROLLOUT)},
        models=[{"name": MODEL, "min_active": 1}],
    )
    c.start(timeout=40.0)
    try:
        node = c.nodes[0]
        wait_ready(c, ["r0", "r1"])
        before = node.supervised_pids()
        with Load(c) as load:
            wait_until(lambda: load.ok >= 10, 20.0, 0.1, message="load")
            c.ctl_ok(0, "reload", MODEL)
            ro, fewest = follow(c, 1)
        assert ro["state"] == "done" and fewest >= 1, ro
        assert load.errors == [], load.errors[:5]
        assert node.supervised_pids() == before  # no restart
        for r in reps:
            _, _, body = http_get(f"http://127.0.0.1:{r.port}/admin/state", 3.0)
            assert json.loads(body)["weight_reloads"] == 1, r.name
    finally:
        c.stop_all()
        for n in c.nodes:
            n.stop_supervised()
