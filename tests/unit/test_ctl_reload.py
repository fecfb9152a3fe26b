"""hanodectl reload / reload --status / reload --abort over the real gRPC server (in-memory
backend): the table, JSON, the flags reaching the backend, usage errors and the read-only
role (a status read is allowed, a reload is not)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.api.fake import FakeBackend, ThreadedServer, threaded_server
from tests.unit.test_ctl import assert_one_line_error, run


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HANODE_ENDPOINT", raising=False)
    monkeypatch.delenv("HANODE_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture()
def server() -> Iterator[ThreadedServer]:
    with threaded_server() as srv:
        yield srv


def test_reload_status_abort(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    backend: FakeBackend = server.backend
    code, out, _ = run(capsys, server, "reload", "--status")
    assert (code, out.strip()) == (0, "no rollouts")
    code, out, _ = run(
        capsys, server, "reload", "llama-8b", "--max-unavailable", "2", "--drain-timeout", "7.5"
    )
    assert code == 0
    assert backend.calls[-1] == ("reload", ("llama-8b", 2, False, 7.5))
    assert "rollout ro1 of llama-8b: running, 2 serving" in out
    assert "min_active is 2" in out  # why it waits
    assert "r1       draining  no       3" in out, out
    code, out, _ = run(capsys, server, "reload", "--status", "llama-8b", "--json")
    doc = json.loads(out)
    assert [r["step"] for r in doc["rollouts"][0]["replicas"]] == ["draining", "waiting"]
    assert doc["rollouts"][0]["finished"] is None
    code, out, _ = run(capsys, server, "reload", "--abort", "llama-8b")
    assert code == 0 and "aborted after 12.5s" in out and "aborted by operator" in out
    code, _, err = run(capsys, server, "reload", "--abort", "llama-8b")
    assert code == 1
    assert_one_line_error(err)
    assert "no rollout of llama-8b is running" in err
    code, _, err = run(capsys, server, "reload", "nope", "--surge")
    assert code == 1 and "unknown model" in err


def test_reload_usage_errors(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    for argv in (
        ["reload"],
        ["reload", "m", "--max-unavailable", "0"],
        ["reload", "m", "--drain-timeout", "-1"],
        ["reload", "m", "--status", "--abort"],
    ):
        code, _, err = run(capsys, server, *argv)
        assert code == 2, argv
        assert_one_line_error(err)
    assert server.backend.calls == []  # nothing reached the cluster


def test_a_read_only_token_reads_the_status_but_cannot_reload(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with threaded_server(tokens=()) as srv:  # open API: both allowed
        assert run(capsys, srv, "reload", "llama-8b")[0] == 0
    backend = FakeBackend()
    srv = ThreadedServer(backend, tokens=("admin-token-000000",))
    from hanode.api import server as api_server

    async def start() -> tuple[object, int]:
        return await api_server.start_api_server(
            backend, "127.0.0.1", 0, ("admin-token-000000",), read_only_tokens=("reader-0000000",)
        )

    import asyncio

    srv._thread.start()
    srv._server, srv.port = asyncio.run_coroutine_threadsafe(start(), srv.loop).result(10)
    try:
        code, out, _ = run(capsys, srv, "--token", "reader-0000000", "reload", "--status")
        assert code == 0 and "no rollouts" in out
        code, _, err = run(capsys, srv, "--token", "reader-0000000", "reload", "llama-8b")
        assert code == 1 and "needs an admin token" in err, err
    finally:
        srv.stop()
