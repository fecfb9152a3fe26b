"""hanodectl against a real gRPC control server (in-memory backend): output, errors, exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hanode.api.control import ControlError, ControlErrorCode
from hanode.cli import ctl
from tests.unit.api.fake import FakeBackend, ThreadedServer, threaded_server


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HANODE_ENDPOINT", raising=False)
    monkeypatch.delenv("HANODE_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture()
def server() -> Iterator[ThreadedServer]:
    with threaded_server() as srv:
        yield srv


def run(
    capsys: pytest.CaptureFixture[str], srv: ThreadedServer | None, *argv: str
) -> tuple[int, str, str]:
    args = ["--endpoint", srv.endpoint, *argv] if srv is not None else list(argv)
    capsys.readouterr()  # drop what came before (e.g. the server's start-up log line)
    code = ctl.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hanodectl: ")
    assert "Traceback" not in err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------------ status


def test_status_table(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, err = run(capsys, server, "status")
    assert code == 0, err
    assert "leader: n1" in out
    assert "quorum: yes" in out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("REPLICA"))
    for column in ("ROLE", "HEALTH", "WEIGHT", "BREAKER", "GPU"):
        assert column in header
    r2 = next(line for line in lines if line.startswith("r2 "))
    assert "active" in r2 and "healthy" in r2 and "0.25" in r2 and "89%" in r2
    r3 = next(line for line in lines if line.startswith("r3 "))
    assert "standby" in r3 and "down" in r3 and "open" in r3 and "connection refused" in r3
    assert any(line.startswith("* n1") for line in lines)  # the leader is marked


def test_status_json_shape(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, _ = run(capsys, server, "status", "--json")
    assert code == 0
    doc = json.loads(out)  # exactly one JSON object
    assert isinstance(doc, dict)
    assert doc["leader"] == "n1"
    assert [n["name"] for n in doc["nodes"]] == ["n1", "n2"]
    assert doc["freshness"]["has_quorum"] is True
    names = [r["name"] for r in doc["replicas"]]
    assert names == ["r1", "r2", "r3"]
    for r in doc["replicas"]:
        for key in ("name", "node", "model", "role", "admin", "health", "weight"):
            assert key in r
        assert r["role"] in ("active", "standby")
        assert r["admin"] in ("enabled", "drained")
    assert doc["replicas"][2]["gpu_mem"] is None


def test_status_json_leader_null_when_none(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeBackend()
    fake.leader = None
    with threaded_server(fake) as srv:
        code, out, _ = run(capsys, srv, "status", "--json")
    assert code == 0 and json.loads(out)["leader"] is None


def test_global_options_also_after_the_command(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    code, out, _ = run(capsys, None, "status", "--json", "--endpoint", server.endpoint)
    assert code == 0 and json.loads(out)["node"] == "n1"


# ------------------------------------------------------------------ commands


def test_drain_undrain(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, _ = run(capsys, server, "drain", "r1")
    assert code == 0 and out.strip() == "drained: r1"
    assert server.backend.replicas["r1"]["admin"] == "drained"
    code, out, _ = run(capsys, server, "drain", "--node", "n2")
    assert code == 0 and out.strip() == "drained: r2, r3"
    code, out, _ = run(capsys, server, "undrain", "--node", "n2")
    assert code == 0 and out.strip() == "undrained: r2, r3"
    server.backend.replicas["r1"]["admin"] = "enabled"
    code, out, _ = run(capsys, server, "drain", "r1", "--force")
    assert code == 0 and out.strip() == "drained: r1"
    assert server.backend.forced == [False, False, True]  # --force reaches the backend
    for argv in (("drain",), ("drain", "r1", "--node", "n1"), ("undrain", "r1", "--force")):
        code, _, err = run(capsys, server, *argv)
        assert code == 2
        assert_one_line_error(err)


def test_promote_demote_reset(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    assert run(capsys, server, "promote", "r3")[0] == 0
    assert server.backend.replicas["r3"]["role"] == "active"
    assert run(capsys, server, "demote", "r3")[0] == 0
    assert run(capsys, server, "demote", "r2")[0] == 0
    code, _, err = run(capsys, server, "demote", "r1")
    assert code == 1 and "last active replica" in err
    assert_one_line_error(err)
    code, out, _ = run(capsys, server, "reset-breaker", "r3")
    assert code == 0 and "r3" in out


def test_unknown_replica_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    for argv in (("promote", "nope"), ("drain", "nope"), ("reset-breaker", "nope")):
        code, out, err = run(capsys, server, *argv)
        assert code == 1
        assert out == ""
        assert_one_line_error(err)
        assert "nope" in err


def test_breakers(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, _ = run(capsys, server, "breakers")
    assert code == 0
    assert out.splitlines()[0].split() == ["REPLICA", "STATE", "FAILURE", "UNTIL", "SOURCE", "NODE"]
    assert "half_open" in out
    code, out, _ = run(capsys, server, "breakers", "--json")
    breakers = json.loads(out)["breakers"]
    assert [b["replica"] for b in breakers] == ["r3", "r2"]
    assert breakers[1]["until"] is None


def test_members(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, _ = run(capsys, server, "members")
    assert code == 0 and "10.0.0.1:9300" in out and "leader" in out and "(this node)" in out
    code, out, _ = run(capsys, server, "members", "--json")
    members = json.loads(out)["members"]
    assert members[0] == {
        "address": "10.0.0.1:9300",
        "node": "n1",
        "self": True,
        "leader": True,
        "connected": True,
    }
    assert run(capsys, server, "members", "add", "10.0.0.3:9300")[0] == 0
    assert ("add_member", "10.0.0.3:9300") in server.backend.calls
    assert run(capsys, server, "members", "remove", "10.0.0.3:9300")[0] == 0
    code, _, err = run(capsys, server, "members", "remove", "10.0.0.3:9300")
    assert code == 1
    assert_one_line_error(err)
    code, _, err = run(capsys, server, "members", "add", "not-an-address")
    assert code == 2
    assert_one_line_error(err)


def test_leader_transfer(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, _ = run(capsys, server, "leader", "transfer")
    assert code == 0 and "leader is now n2" in out
    code, out, _ = run(capsys, server, "leader", "transfer", "--to", "10.0.0.2:9300")
    assert code == 0 and "requested" in out
    assert ("transfer_leader", "10.0.0.2:9300") in server.backend.calls
    code, _, err = run(capsys, server, "leader", "transfer", "--to", "10.9.9.9:1")
    assert code == 1
    assert_one_line_error(err)


def test_events(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, _ = run(capsys, server, "events")
    assert code == 0 and "r3 is down" in out
    code, out, _ = run(capsys, server, "events", "--json")
    (event,) = [json.loads(line) for line in out.splitlines()]
    assert event["seq"] == 1 and event["fields"] == {"level": "down", "n": 3}
    server.call_soon(lambda: server.backend.add_event("admin", "r1", "r1 drained"))
    code, out, _ = run(capsys, server, "events", "--last", "1")
    assert code == 0 and "r1 drained" in out and "r3 is down" not in out
    code, _, err = run(capsys, server, "events", "--last", "-1")
    assert code == 2
    assert_one_line_error(err)


def test_events_follow_prints_new_events(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    def emit() -> None:
        server.call_soon(lambda: server.backend.add_event("breaker", "r2", "r2 breaker opened"))

    timer = threading.Timer(0.5, emit)
    timer.start()
    try:
        code, out, _ = run(capsys, server, "events", "--follow", "--json", "--follow-for", "1.5")
    finally:
        timer.cancel()
    assert code == 0
    seqs = [json.loads(line)["seq"] for line in out.splitlines()]
    assert seqs == [1, 2]


# ------------------------------------------------------------------ failures and settings


def test_unreachable_endpoint_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    endpoint = f"127.0.0.1:{closed_port()}"
    code, out, err = run(capsys, None, "--endpoint", endpoint, "--timeout", "2", "status")
    assert code == 3
    assert out == ""
    assert_one_line_error(err)
    assert f"cannot reach hanode at {endpoint}" in err


def test_silent_endpoint_times_out_with_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # accepts connections, never speaks
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        endpoint = f"127.0.0.1:{sock.getsockname()[1]}"
        code, _, err = run(capsys, None, "--endpoint", endpoint, "--timeout", "0.5", "drain", "r1")
    assert code == 3
    assert_one_line_error(err)
    assert "no answer" in err or "cannot reach" in err


@pytest.mark.parametrize(
    ("error_code", "exit_code", "text"),
    [
        (ControlErrorCode.UNKNOWN_OUTCOME, 3, "outcome unknown"),
        (ControlErrorCode.UNAVAILABLE, 3, "cluster unavailable: no quorum"),
        (ControlErrorCode.FAILED_PRECONDITION, 1, "no quorum"),
        (ControlErrorCode.INVALID, 1, "no quorum"),
    ],
)
def test_cluster_errors_map_to_exit_codes(
    capsys: pytest.CaptureFixture[str], error_code: ControlErrorCode, exit_code: int, text: str
) -> None:
    fake = FakeBackend()
    fake.fail["drain"] = ControlError(error_code, "no quorum")
    with threaded_server(fake) as srv:
        code, _, err = run(capsys, srv, "drain", "r1")
    assert code == exit_code
    assert_one_line_error(err)
    assert text in err


def test_internal_server_error_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeBackend()
    fake.fail["status"] = RuntimeError("kaput")
    with threaded_server(fake) as srv:
        code, _, err = run(capsys, srv, "status")
    assert code == 1
    assert_one_line_error(err)
    assert "internal error" in err


def test_token_from_flag_env_and_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with threaded_server(tokens=("tok-1",)) as srv:
        code, _, err = run(capsys, srv, "status")
        assert code == 1 and "not authenticated" in err
        assert_one_line_error(err)
        code, _, err = run(capsys, srv, "--token", "wrong", "status")
        assert code == 1 and "wrong token" in err
        assert run(capsys, srv, "--token", "tok-1", "status")[0] == 0
        monkeypatch.setenv("HANODE_TOKEN", "tok-1")
        assert run(capsys, srv, "status")[0] == 0
        monkeypatch.delenv("HANODE_TOKEN")
        config = tmp_path / "config" / "hanode" / "hanodectl.toml"
        config.parent.mkdir(parents=True)
        config.write_text(f'endpoint = "{srv.endpoint}"\ntoken = "tok-1"\n')
        assert run(capsys, None, "status", "--json")[0] == 0  # endpoint and token from the file


def test_env_endpoint_beats_config(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    server: ThreadedServer,
) -> None:
    config = tmp_path / "config" / "hanode" / "hanodectl.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'endpoint = "127.0.0.1:{closed_port()}"\n')
    monkeypatch.setenv("HANODE_ENDPOINT", server.endpoint)
    assert run(capsys, None, "status")[0] == 0


def test_bad_config_and_endpoint_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, None, "--endpoint", "http://h:1", "status")
    assert code == 2
    assert_one_line_error(err)
    config = tmp_path / "config" / "hanode" / "hanodectl.toml"
    config.parent.mkdir(parents=True)
    config.write_text("endpoint = [\n")
    code, _, err = run(capsys, None, "status")
    assert code == 2
    assert_one_line_error(err)
    assert "hanodectl.toml" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ((), ("frobnicate",), ("promote",), ("leader",)):
        code, _, err = run(capsys, None, *argv)
        assert code == 2, argv
        assert_one_line_error(err)


def _subprocess(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANODE_")}
    return subprocess.run(
        [sys.executable, "-m", "hanode.cli.ctl", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_as_a_process(server: ThreadedServer) -> None:
    done = _subprocess("--endpoint", server.endpoint, "status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["leader"] == "n1"
    done = _subprocess("--endpoint", f"127.0.0.1:{closed_port()}", "status")
    assert done.returncode == 3
    assert done.stdout == ""
    assert_one_line_error(done.stderr)


# ------------------------------------------------------------------ recovery


def test_incidents_table_and_json(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    code, out, err = run(capsys, server, "incidents")
    assert code == 0, err
    header = out.splitlines()[0]
    for column in ("INCIDENT", "STATE", "MTTR", "DURATION"):
        assert column in header
    row = next(line for line in out.splitlines() if line.startswith("r3#1"))
    assert "closed" in row and "3.2s" in row and "10.0s" in row
    assert "+  3.25s  standby_serving  r2 serving (1/1)" in out
    open_row = next(line for line in out.splitlines() if line.startswith("r1#2"))
    assert open_row.split()[2] == "open" and open_row.split()[-2:] == ["-", "-"]
    code, out, _ = run(capsys, server, "incidents", "--json", "--last", "1")
    (only,) = json.loads(out)["incidents"]
    assert only["id"] == "r1#2" and only["mttr_s"] is None and only["restored"] is None
    assert server.backend.calls[-1] == ("incidents", 1)


def test_restart_sleep_wake(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, err = run(capsys, server, "restart", "r3")
    assert code == 0 and "restart of r3 requested (request 1)" in out, err
    code, out, _ = run(capsys, server, "sleep", "r2", "--force")
    assert code == 0 and server.backend.calls[-1] == ("sleep", ("r2", True))
    code, out, _ = run(capsys, server, "wake", "r2")
    assert code == 0 and "traffic once L2 passes" in out
    server.backend.replicas["r2"]["role"] = "standby"
    code, _, err = run(capsys, server, "restart", "r1")
    assert code == 1 and "last serving" in err
    assert_one_line_error(err)
    assert run(capsys, server, "restart", "r1", "--force")[0] == 0
    code, _, err = run(capsys, server, "wake", "nope")
    assert code == 1 and "nope" in err
    assert_one_line_error(err)


def test_status_shows_each_replicas_process(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    server.backend.replicas["r3"]["process"] = {"observed": "sleeping", "desired": "sleep"}
    server.backend.replicas["r2"]["process"] = {"observed": "sleeping", "desired": "run"}
    code, out, _ = run(capsys, server, "status")
    assert code == 0 and "PROCESS" in out
    row = {line.split()[0]: line for line in out.splitlines() if line[:2] in ("r1", "r2", "r3")}
    assert " sleeping " in row["r3"] and row["r2"].rstrip().endswith(" sleeping->run")
    code, out, _ = run(capsys, server, "status", "--json")
    reps = {r["name"]: r for r in json.loads(out)["replicas"]}
    assert reps["r2"]["process"] == {"observed": "sleeping", "desired": "run"}
    assert "process" not in reps["r1"]  # no actuator
