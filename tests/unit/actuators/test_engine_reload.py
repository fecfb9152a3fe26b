"""The engines' own reload calls (``reload = "engine"``) against a recording fake engine, and
the simulator's vLLM ``/collective_rpc reload_weights`` through the same client."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from hanode.actuators.base import ActuatorError
from hanode.actuators.engine_reload import EngineReload
from hanode.http.server import HttpServer
from hanode.sim.handlers import SimApp
from hanode.sim.options import SimOptions
from tests.unit.actuators.fakes import run_async
from tests.unit.actuators.test_engine_sleep import engine


@run_async
async def test_vllm_reload_is_collective_rpc_reload_weights() -> None:
    async with engine() as (fake, url):
        await EngineReload(url, "vllm", "m", timeout_s=5.0).reload()
        method, path, body = fake.calls[-1]
        assert (method, path) == ("POST", "/collective_rpc")
        assert orjson.loads(body) == {"method": "reload_weights"}


@run_async
async def test_sglang_reload_is_update_weights_from_disk_with_the_model_path() -> None:
    async with engine() as (fake, url):
        await EngineReload(url, "sglang", "/models/llama", timeout_s=5.0).reload()
        method, path, body = fake.calls[-1]
        assert (method, path) == ("POST", "/update_weights_from_disk")
        assert orjson.loads(body) == {"model_path": "/models/llama"}


@run_async
async def test_a_refused_reload_is_one_line() -> None:
    async with engine() as (fake, url):
        fake.status = 500
        with pytest.raises(ActuatorError, match="answered HTTP 500"):
            await EngineReload(url, "vllm", "m", timeout_s=5.0).reload()


def test_engines_without_a_reload_call_are_refused() -> None:
    with pytest.raises(ValueError, match="no reload call"):
        EngineReload("http://127.0.0.1:1", "llamacpp", "m")


@run_async
async def test_the_simulator_reloads_its_weights_and_keeps_serving() -> None:
    loop = asyncio.get_running_loop()
    sim = SimApp(SimOptions(port=0, wake_s=0.1), loop)
    server = HttpServer(sim.handle)
    host, port = await server.listen("127.0.0.1", 0)
    try:
        await EngineReload(f"http://{host}:{port}", "vllm", "m", timeout_s=5.0).reload()
        assert sim.state()["weight_reloads"] == 1
    finally:
        sim.shutdown()
        await server.close()
