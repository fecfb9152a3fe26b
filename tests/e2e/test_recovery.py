"""End-to-end recovery on one node: replicas the node runs itself (actuator = "command").

- A replica SIGKILLed under load is restarted by its node and serves again; the clients (the
  official openai client, no SDK retries) see no error: the other replicas carry the load and
  the router fails tries over.
- Restarting the daemon adopts the replica it already runs: no second copy.
- A standby with standby = "sleep" is started and put to sleep, and left so.
- A hung replica (SIGSTOP) fails L1 and is restarted.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import metric_sum
from tests.e2e.recovery_support import (
    MODEL,
    copies_running,
    events,
    process,
    record,
    replicas_cleaned,
    sim_command,
    supervised,
    wait_serving,
    write_config,
)
from tests.support.procs import NodeProcess, free_port, http_get, start_sim, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_a_replica_killed_under_load_is_restarted_by_its_node_with_no_client_error(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    with (
        replicas_cleaned(data_dir, ["r0"]),
        start_sim("--ttft-ms", "2", "--tpot-ms", "1") as s1,
        start_sim("--ttft-ms", "2", "--tpot-ms", "1") as s2,
    ):
        config = write_config(
            tmp_path / "node.toml",
            data_dir,
            [
                supervised("r0", port, sim_command(port)),
                {"name": "r1", "model": MODEL, "url": s1.url},
                {"name": "r2", "model": MODEL, "url": s2.url},
            ],
        )
        with NodeProcess(config, log_path=tmp_path / "node.log") as node:
            first = wait_serving(node, "r0")
            old_pid = first["pid"]
            rec = record(data_dir, "r0")
            assert rec is not None and rec.pid == old_pid and rec.alive()
            client = openai.OpenAI(
                base_url=node.router_url + "/v1", api_key="x", max_retries=0, timeout=15.0
            )
            stop = threading.Event()
            ok: list[int] = []
            errors: list[BaseException] = []
            served_by: dict[str, int] = {}
            lock = threading.Lock()

            def load() -> None:
                while not stop.is_set():
                    try:
                        raw = client.chat.completions.with_raw_response.create(
                            model=MODEL,
                            messages=[{"role": "user", "content": "Say something short."}],
                            max_tokens=8,
                        )
                        raw.parse()
                        who = raw.headers.get("x-hanode-replica", "?")
                        with lock:
                            ok.append(1)
                            served_by[who] = served_by.get(who, 0) + 1
                    except Exception as exc:  # every failure is counted
                        with lock:
                            errors.append(exc)

            threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
            for t in threads:
                t.start()
            try:
                wait_until(lambda: served_by.get("r0", 0) >= 5, 20, message="r0 takes load")
                os.killpg(old_pid, signal.SIGKILL)  # the replica dies, mid-traffic
                with lock:
                    served_by.clear()
                back = wait_until(
                    lambda: (
                        (p := process(node, "r0"))["pid"] not in (None, old_pid)
                        and p["observed"] == "running"
                        and p
                    ),
                    40,
                    message="r0 restarted and running",
                )
                wait_until(lambda: served_by.get("r0", 0) >= 5, 30, message="r0 serves again")
            finally:
                stop.set()
                for t in threads:
                    t.join(20)
            assert errors == []
            assert len(ok) > 20
            assert back["pid"] != old_pid
            restarts = events(node, "restart", "r0")
            backoffs = events(node, "backoff", "r0")
            assert len(backoffs) == 1 and "exited" in backoffs[0]["message"]
            assert len(restarts) == 1
            assert served_by.get("r1", 0) > 0 and served_by.get("r2", 0) > 0
            page = node.metrics_text()
            assert metric_sum(page, "hanode_replica_restarts_total", replica="r0") == 1.0
            assert metric_sum(page, "hanode_replica_crash_loops_total", replica="r0") == 0.0


def test_restarting_the_daemon_adopts_the_replica_it_runs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    command = sim_command(port)
    config = write_config(tmp_path / "node.toml", data_dir, [supervised("r0", port, command)])
    with replicas_cleaned(data_dir, ["r0"]):
        with NodeProcess(config, log_path=tmp_path / "node1.log") as node:
            pid = wait_serving(node, "r0")["pid"]
            node.kill(signal.SIGKILL)  # the daemon dies; its replica lives on
            node.stop()
        assert os.path.exists(f"/proc/{pid}")
        assert copies_running(command) == 1
        with NodeProcess(config, log_path=tmp_path / "node2.log") as node:
            proc = wait_serving(node, "r0")
            assert proc["pid"] == pid
            adopted = events(node, "process", "r0")
            assert [e["fields"]["action"] for e in adopted] == ["adopt"]
            assert f"adopted pid {pid}" in adopted[0]["message"]
            assert copies_running(command) == 1
            node.stop()  # a clean stop (SIGTERM) leaves it running too
        assert copies_running(command) == 1
        changed = [*command, "--seed", "7"]
        config = write_config(tmp_path / "node.toml", data_dir, [supervised("r0", port, changed)])
        with NodeProcess(config, log_path=tmp_path / "node3.log") as node:
            proc = wait_serving(node, "r0")
            assert proc["pid"] != pid  # the configured command changed: replaced, not adopted
            replaced = events(node, "process", "r0")
            assert "replaced pid" in replaced[0]["message"]
            assert copies_running(command) == 0 and copies_running(changed) == 1


def test_a_standalone_node_keeps_a_sleep_standby_asleep(tmp_path: Path) -> None:
    """standby = "sleep": the node starts the standby's engine and puts it to sleep (GPU memory
    freed), and a sleeping standby is no failure: nothing restarts it. (Waking is the cluster
    side's: hanodectl wake; the supervisor's wake is tested against a fake actuator.)"""
    data_dir = tmp_path / "data"
    port = free_port()
    with replicas_cleaned(data_dir, ["r1"]), start_sim("--ttft-ms", "2") as s0:
        config = write_config(
            tmp_path / "node.toml",
            data_dir,
            [
                {"name": "r0", "model": MODEL, "url": s0.url},
                supervised(
                    "r1",
                    port,
                    sim_command(port, "--wake-s", "0.3", "--sleep-s", "0.1"),
                    role="standby",
                    standby="sleep",
                ),
            ],
        )
        with NodeProcess(config, log_path=tmp_path / "node.log") as node:
            proc = wait_until(
                lambda: (p := process(node, "r1"))["observed"] == "sleeping" and p,
                30,
                message="r1 asleep",
            )
            assert proc["desired"] == "sleep"
            sim_url = f"http://127.0.0.1:{port}"
            state = json.loads(http_get(sim_url + "/admin/state")[2])
            assert state["sleeping"] and state["gpu_mem"] < 0.1
            actions = [e["fields"]["action"] for e in events(node, "process", "r1")]
            assert actions == ["start", "sleep"]
            assert events(node, "restart", "r1") == [] and events(node, "backoff", "r1") == []
            assert copies_running(sim_command(port, "--wake-s", "0.3", "--sleep-s", "0.1")) == 1


def test_a_hung_replica_failing_l1_is_restarted(tmp_path: Path) -> None:
    """SIGSTOP: the process lives but answers nothing. L1 times out `fall` times, the checker
    says DOWN, and the supervisor stops it (SIGTERM is held for a stopped process, so SIGKILL
    after the grace period) and starts it again."""
    data_dir = tmp_path / "data"
    port = free_port()
    config = write_config(
        tmp_path / "node.toml", data_dir, [supervised("r0", port, sim_command(port))]
    )
    with (
        replicas_cleaned(data_dir, ["r0"]),
        NodeProcess(config, log_path=tmp_path / "node.log") as node,
    ):
        old_pid = wait_serving(node, "r0")["pid"]
        os.killpg(old_pid, signal.SIGSTOP)
        proc = wait_until(
            lambda: (
                (p := process(node, "r0"))["pid"] not in (None, old_pid)
                and p["observed"] == "running"
                and p
            ),
            60,
            message="r0 restarted",
        )
        assert proc["pid"] != old_pid and not os.path.exists(f"/proc/{old_pid}/stat")
        (backoff,) = events(node, "backoff", "r0")
        assert backoff["fields"]["reason"] == "L1 failed after serving"
        assert len(events(node, "restart", "r0")) == 1
