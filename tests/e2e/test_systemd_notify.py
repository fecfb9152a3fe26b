"""Issue 14 acceptance: `hanode run` under a harness playing systemd's side of NOTIFY_SOCKET.

The harness binds the datagram socket, starts the daemon with NOTIFY_SOCKET and WATCHDOG_USEC
as systemd does for `Type=notify` + `WatchdogSec=`, and reads what it sends: READY=1 (after
the router listens; in a cluster after the node has joined), STATUS= lines with role, leader
and replica counts, WATCHDOG=1 pings. When the pings stop for a whole watchdog period (here
the stall drill blocks the daemon's event loop while its other threads run) the harness does
what systemd does: SIGABRT, then starts it again, and the new process is READY. A SIGTERM
sends STOPPING=1 and drains: a stream in flight finishes, a new request gets 503 with
`connection: close`, and the process exits 0.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hanode.devtools.procs import NodeProcess, free_port, node_config_toml, wait_until
from tests.e2e.cluster_support import MESSAGES, RaftCluster, Replica
from tests.e2e.conftest import E2EProcs

pytestmark = pytest.mark.e2e

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s


class Manager:
    """systemd's end of the notify socket: every datagram, with its arrival time."""

    def __init__(self) -> None:
        self.address = f"@hanode-e2e-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.address[1:].encode())
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}

    def since(self, mark: int) -> list[dict[str, str]]:
        with self._lock:
            return [m for _, m in self.messages[mark:]]

    def mark(self) -> int:
        with self._lock:
            return len(self.messages)

    def wait_for(self, key: str, mark: int = 0, timeout: float = 30.0) -> dict[str, str]:
        def found() -> dict[str, str] | None:
            return next((m for m in self.since(mark) if key in m), None)

        return wait_until(found, timeout, 0.05, message=f"{key} from the daemon")

    def last_ping(self) -> float:
        with self._lock:
            times = [t for t, m in self.messages if "WATCHDOG" in m]
        return times[-1] if times else 0.0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture()
def manager() -> Iterator[Manager]:
    m = Manager()
    yield m
    m.close()


def _node_config(tmp_path: Path, sim_url: str, **router: Any) -> Path:
    path = tmp_path / "n1.toml"
    path.write_text(
        node_config_toml(
            name="n1",
            data_dir=tmp_path / "data",
            router_port=free_port(),
            metrics_port=free_port(),
            replicas=[{"name": "r0", "model": "sim-model", "url": sim_url}],
            sections={
                "health": {"interval_s": 0.2, "timeout_s": 1.0, "rise": 2, "fall": 2},
                "router": router,
            },
        )
    )
    return path


def test_ready_status_watchdog_and_restart_of_a_stuck_daemon(
    e2e_procs: E2EProcs, manager: Manager, tmp_path: Path
) -> None:
    sim = e2e_procs.sim("--model", "sim-model", "--ttft-ms", "2")
    path = _node_config(tmp_path, sim.url)
    env = {**manager.env(), "HANODE_STALL_DRILL_S": "60"}
    node = NodeProcess(path, env=env, log_path=tmp_path / "node1.log")
    e2e_procs.started.append(node)
    ready = manager.wait_for("READY")
    assert ready["READY"] == "1" and ready["MAINPID"] == str(node.pid)
    assert ready["STATUS"].startswith("standalone; replicas "), ready
    # The router listened before READY: the listening line came first.
    assert node.router_port > 0
    # STATUS follows the pool: the replica turns healthy and is counted as serving.
    manager.wait_for("STATUS", 0)
    wait_until(
        lambda: any(
            m.get("STATUS", "").startswith("standalone; replicas 1 serving")
            for m in manager.since(0)
        ),
        20,
    )
    mark = manager.mark()
    wait_until(lambda: sum("WATCHDOG" in m for m in manager.since(mark)) >= 3, 10)

    # The event loop blocks (the stall drill: SIGUSR2 makes the loop itself sleep, while the
    # process and its other threads run on): no ping for a whole watchdog period; the harness,
    # as systemd, aborts it and starts it again.
    os.kill(node.pid, signal.SIGUSR2)
    stuck_at = time.monotonic()
    period = WATCHDOG_USEC / 1e6
    missed = wait_until(
        lambda: time.monotonic() - max(manager.last_ping(), stuck_at) > period or None,
        10,
        0.05,
    )
    assert missed
    assert manager.last_ping() <= stuck_at + 0.05  # nothing came while the loop was stuck
    state = Path(f"/proc/{node.pid}/status").read_text()
    assert "State:\tT" not in state, state  # not a frozen process: only its loop is stuck
    os.kill(node.pid, signal.SIGABRT)  # systemd's watchdog signal
    assert node.wait_exit(10) != 0  # a watchdog kill is a failure: Restart=on-failure applies
    mark = manager.mark()
    again = NodeProcess(path, env=manager.env(), log_path=tmp_path / "node2.log")
    e2e_procs.started.append(again)
    ready = manager.wait_for("READY", mark)
    assert ready["MAINPID"] == str(again.pid)
    wait_until(lambda: sum("WATCHDOG" in m for m in manager.since(mark)) >= 2, 10)


def _stream_in_thread(port: int, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = {"model": "sim-model", "messages": MESSAGES, "max_tokens": 40, "stream": True}
        conn.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"}
        )
        resp = conn.getresponse()
        out["status"] = resp.status
        out["first"] = resp.readline()
        out["started"].set()
        out["rest"] = resp.read()
        conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigterm_drains_in_flight_streams_and_refuses_new_requests(
    e2e_procs: E2EProcs, manager: Manager, tmp_path: Path
) -> None:
    sim = e2e_procs.sim("--model", "sim-model", "--ttft-ms", "2", "--tpot-ms", "60")
    node = NodeProcess(
        _node_config(tmp_path, sim.url, drain_timeout_s=20.0),
        env=manager.env(),
        log_path=tmp_path / "node.log",
    )
    e2e_procs.started.append(node)
    manager.wait_for("READY")
    node.wait_health({"r0": "healthy"})
    out: dict[str, Any] = {"started": threading.Event()}
    thread = _stream_in_thread(node.router_port, out)
    assert out["started"].wait(10) and out["status"] == 200  # 40 tokens at 60 ms: ~2.4 s
    mark = manager.mark()
    os.kill(node.pid, signal.SIGTERM)
    stopping = manager.wait_for("STOPPING", mark)
    assert stopping["STOPPING"] == "1"
    # While the stream is still in flight, a new request is refused and told to go.
    conn = http.client.HTTPConnection("127.0.0.1", node.router_port, timeout=10)
    conn.request("GET", "/v1/models")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 503 and resp.getheader("connection") == "close", body
    assert body["error"]["code"] == "node_draining" and resp.getheader("retry-after") == "1"
    assert thread.is_alive()  # the stream had not finished when the refusal came
    thread.join(30)
    assert out["rest"].rstrip().endswith(b"data: [DONE]"), out["rest"][-200:]
    assert node.wait_exit(30) == 0
    log = node.output()
    assert '"router_drained"' in log and "router_drain_timeout" not in log


def test_cluster_node_is_ready_once_joined(manager: Manager, tmp_path: Path) -> None:
    cluster = RaftCluster(tmp_path, [("n1", [Replica("r1")]), ("n2", [Replica("r2")])])
    try:
        for node in cluster.nodes:
            cluster.start_sims(node)
            node.write_config([p.raft for p in cluster.nodes if p is not node], {})
        first = cluster.nodes[0]
        first.env = manager.env()
        first.spawn()
        first.ready()  # listening...
        assert not any("READY" in m for m in manager.since(0))  # ...but alone: no quorum
        cluster.nodes[1].spawn()
        cluster.nodes[1].ready()
        ready = manager.wait_for("READY")
        assert ready["STATUS"].startswith(("leader; leader n1", "follower; leader n")), ready
        leader = cluster.wait_leader()
        assert leader in ready["STATUS"]
    finally:
        cluster.stop_all()
