"""Engine sleep over HTTP against a recording fake engine (hanode's own HTTP server): the calls
for vLLM and SGLang, the warm-up prompt after a wake, and failures as one-line errors. The
simulator's real sleep mode is exercised in tests/e2e/test_sim_sleep.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest

from hanode.actuators.base import ActuatorError, ProcessStatus
from hanode.actuators.engine_sleep import EngineSleep
from hanode.actuators.replica import ReplicaActuator
from hanode.engines.registry import get_adapter
from hanode.http.request import Request
from hanode.http.responder import Responder
from hanode.http.server import HttpServer
from tests.unit.actuators.fakes import run_async


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes]] = []
        self.sleeping = False
        self.status = 200

    def handle(self, request: Request, responder: Responder) -> None:
        path = request.path.decode()
        self.calls.append((request.method.decode(), path, request.body or b""))
        if path.startswith(("/sleep", "/release_memory_occupation")):
            self.sleeping = True
        elif path.startswith(("/wake_up", "/resume_memory_occupation")):
            self.sleeping = False
        if path == "/is_sleeping":
            responder.send(200, orjson.dumps({"is_sleeping": self.sleeping}))
        elif path.startswith("/v1/"):
            text = {"text": "OK", "message": {"content": "OK"}}
            responder.send(self.status, orjson.dumps({"choices": [text]}))
        else:
            responder.send(self.status, b"")


@asynccontextmanager
async def engine() -> AsyncIterator[tuple[FakeEngine, str]]:
    fake = FakeEngine()
    server = HttpServer(fake.handle)
    host, port = await server.listen("127.0.0.1", 0)
    try:
        yield fake, f"http://{host}:{port}"
    finally:
        await server.close()


def sleeper(url: str, kind: str) -> EngineSleep:
    return EngineSleep(url, kind, get_adapter(kind), "m", timeout_s=5.0, warm_up_max_tokens=2)


@run_async
async def test_vllm_sleep_wake_and_warm_up() -> None:
    async with engine() as (fake, url):
        s = sleeper(url, "vllm")
        assert await s.is_sleeping() is False
        await s.sleep()
        assert await s.is_sleeping() is True
        await s.wake()
        assert await s.warm_up()
        paths = [(m, p) for m, p, _ in fake.calls]
        assert paths[:4] == [
            ("GET", "/is_sleeping"),
            ("POST", "/sleep?level=1"),
            ("GET", "/is_sleeping"),
            ("POST", "/wake_up"),
        ]
        method, path, body = fake.calls[4]
        assert method == "POST" and path.startswith("/v1/")
        assert orjson.loads(body)["max_tokens"] == 2


@run_async
async def test_sglang_release_and_resume_memory_occupation() -> None:
    async with engine() as (fake, url):
        s = sleeper(url, "sglang")
        assert await s.is_sleeping() is None  # SGLang cannot be asked
        await s.sleep()
        await s.wake()
        assert fake.calls == [
            ("POST", "/release_memory_occupation", b"{}"),
            ("POST", "/resume_memory_occupation", b"{}"),
        ]


@run_async
async def test_a_refused_sleep_is_an_actuator_error() -> None:
    async with engine() as (fake, url):
        fake.status = 404  # vLLM without VLLM_SERVER_DEV_MODE=1 has no such route
        with pytest.raises(ActuatorError, match=r"sleep: /sleep answered HTTP 404"):
            await sleeper(url, "vllm").sleep()
    with pytest.raises(ActuatorError, match="wake: "):
        await sleeper(url, "vllm").wake()  # nothing listens there any more


class _Running:
    async def adopt(self) -> str:
        return ""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def observe(self) -> ProcessStatus:
        return ProcessStatus(True, pid=7, detail="pid 7")


@run_async
async def test_the_replica_actuator_reports_sleep_and_warms_up_on_wake() -> None:
    async with engine() as (fake, url):
        act = ReplicaActuator(_Running(), sleeper(url, "vllm"))
        assert act.can_sleep
        await act.sleep()
        assert await act.is_sleeping() is True
        await act.wake()
        assert await act.is_sleeping() is False
        assert (await act.observe()).pid == 7
        assert any(p.startswith("/v1/") for _, p, _ in fake.calls)  # the warm-up prompt
    no_sleep = ReplicaActuator(_Running())
    assert not no_sleep.can_sleep
    assert await no_sleep.is_sleeping() is None
    with pytest.raises(ActuatorError):
        await no_sleep.sleep()


def test_unknown_engines_have_no_sleep_mode() -> None:
    with pytest.raises(ValueError):
        sleeper("http://127.0.0.1:1", "tgi")
