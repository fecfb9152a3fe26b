"""The per-replica health loop against a fake replica HTTP server on 127.0.0.1: rise/fall,
when the L2 test prompt is due, DOWN and the events it raises, the GPU-memory gate, and the
loop itself (bounded, survives a failing check)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
import pytest

from hanode.engines.registry import get_adapter
from hanode.events import EventLog
from hanode.health.checker import EngineRate, GpuMarks, HealthSettings, ReplicaChecker
from hanode.health.passive import PassiveStats
from hanode.http.request import Request
from hanode.http.responder import Responder
from hanode.http.server import HttpServer
from hanode.metrics.registry import NodeMetrics
from hanode.policies.l3 import L3Thresholds
from hanode.policies.latency import too_slow
from hanode.policies.memory import GrowthWatch
from hanode.policies.weights import WeightInput, compute_weights
from hanode.pool.replica import AdminState, HealthLevel, Observation, ReplicaSpec, Role
from hanode.pool.snapshot import PoolSnapshot, PoolView, ReplicaState
from hanode.sim.metrics_page import TPOT_BUCKETS, Histogram

NAME = "r0"
SETTINGS = HealthSettings(
    interval_s=0.01,
    timeout_s=2.0,
    rise=2,
    fall=2,
    l2_interval_s=60.0,
    l2_timeout_s=2.0,
    l2_prompt="Say OK.",
    l2_max_tokens=4,
)
MARKS = GpuMarks(prepare=0.80, reduce=0.90, remove=0.95, recover=0.90)


class Replica:
    """vLLM's health, completions and metrics endpoints, switchable by the test."""

    def __init__(self) -> None:
        self.health_status = 200
        self.text = "OK"
        self.l2_calls = 0
        self.kv = 0.1
        self.reserve: float | None = None  # vLLM's cache_config_info gpu_memory_utilization
        self.extra = ""  # more metric lines (histograms)
        self.l2_path = b"/v1/completions"

    def handle(self, request: Request, responder: Responder) -> None:
        if request.path in (b"/health", b"/v1/models"):
            responder.send(self.health_status, b"")
        elif request.path == self.l2_path:
            self.l2_calls += 1
            body = {"choices": [{"text": self.text, "index": 0}]}
            responder.send(200, orjson.dumps(body))
        elif request.path == b"/metrics":
            page = (
                f"vllm:num_requests_running 1\nvllm:num_requests_waiting 0\n"
                f"vllm:gpu_cache_usage_perc {self.kv}\n"
            )
            if self.reserve is not None:
                page += f'vllm:cache_config_info{{gpu_memory_utilization="{self.reserve}"}} 1\n'
            page += self.extra
            responder.send(200, page.encode(), b"text/plain")
        else:
            responder.send(404, b"")


@dataclass
class Sink:
    seen: list[Observation] = field(default_factory=list)
    waiter: asyncio.Future[None] | None = None
    want: int = 0

    def observe(self, name: str, obs: Observation) -> None:
        assert name == NAME
        self.seen.append(obs)
        if self.waiter is not None and len(self.seen) >= self.want and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait_for(self, count: int) -> None:
        if len(self.seen) >= count:
            return
        self.want = count
        self.waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(self.waiter, 10.0)


class Gpu:
    """GpuMemoryReader stand-in: ``frac`` is what NVML would say; ``fail`` raises once."""

    def __init__(self) -> None:
        self.frac: float | None = None
        self.fail = False

    def read(self, index: int) -> float | None:
        if self.fail:
            self.fail = False
            raise RuntimeError("NVML went away")
        return self.frac


@dataclass
class Rig:
    replica: Replica
    checker: ReplicaChecker
    sink: Sink
    passive: PassiveStats
    events: EventLog
    gpu: Gpu
    server: HttpServer

    async def check(self) -> Observation:
        return await self.checker.check_once()

    def health_events(self) -> list[tuple[str, str]]:
        return [
            (e.fields["from_level"], e.fields["to_level"])
            for e in self.events.recent()
            if e.kind == "health"
        ]


@asynccontextmanager
async def rig(
    settings: HealthSettings = SETTINGS,
    gpu: int | None = None,
    reserve: float | None = 0.0,
    peers: PoolView | None = None,
    l2_path: str | None = None,
    engine: str = "vllm",
) -> AsyncIterator[Rig]:
    """``reserve``: what the fake vLLM says it reserved (0: grows with load, like the
    simulator's --reserve-gpu 0; None: says nothing, so vLLM's default of reserving holds)."""
    replica = Replica()
    replica.reserve = reserve
    if l2_path is not None:
        replica.l2_path = l2_path.encode()
    server = HttpServer(replica.handle)
    _, port = await server.listen("127.0.0.1", 0)
    spec = ReplicaSpec(NAME, "m", f"http://127.0.0.1:{port}", engine=engine, gpu=gpu)
    sink, passive, events, reader = Sink(), PassiveStats(30.0), EventLog(), Gpu()
    checker = ReplicaChecker(
        spec,
        get_adapter(engine),
        settings,
        L3Thresholds(),
        MARKS,
        sink,
        passive,
        reader,  # type: ignore[arg-type]
        events,
        NodeMetrics(),
        peers=peers,
        l2_path=l2_path,
    )
    try:
        yield Rig(replica, checker, sink, passive, events, reader, server)
    finally:
        await server.close()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30.0))


async def healthy(r: Rig) -> None:
    """Two passing rounds: quiet at first (rise 2), then HEALTHY with one L2 prompt."""
    first = await r.check()
    assert first.level is HealthLevel.DOWN and r.sink.seen == []  # still proving itself
    second = await r.check()
    assert second.level is HealthLevel.HEALTHY
    assert r.replica.l2_calls == 1


def test_rise_then_fall_then_rise_again_with_events() -> None:
    async def main() -> None:
        async with rig() as r:
            await healthy(r)
            assert r.health_events() == [("DOWN", "HEALTHY")]
            r.replica.health_status = 500
            assert (await r.check()).level is HealthLevel.HEALTHY  # one failure is a blip
            down = await r.check()
            assert down.level is HealthLevel.DOWN and "HTTP 500" in down.reason
            assert r.sink.seen[-1].level is HealthLevel.DOWN
            assert r.health_events()[-1] == ("HEALTHY", "DOWN")
            r.replica.health_status = 200
            assert (await r.check()).level is HealthLevel.DOWN  # rise 2
            calls = r.replica.l2_calls
            assert (await r.check()).level is HealthLevel.HEALTHY
            # back from DOWN, the model had to be proven again (a restart reloads it)
            assert r.replica.l2_calls == calls + 1
            assert r.health_events()[-1] == ("DOWN", "HEALTHY")

    run(main)


def test_a_replica_that_stops_answering_goes_down() -> None:
    async def main() -> None:
        async with rig() as r:
            await healthy(r)
            await r.server.close()  # the process is gone: connections refused
            await r.check()
            down = await r.check()
            assert down.level is HealthLevel.DOWN
            assert r.health_events()[-1] == ("HEALTHY", "DOWN")

    run(main)


def test_l2_failure_makes_the_replica_unready() -> None:
    async def main() -> None:
        async with rig() as r:
            await r.check()
            r.replica.text = ""  # the model answers with nothing usable
            obs = await r.check()
            assert obs.level is HealthLevel.UNREADY
            assert "no text" in obs.reason
            r.replica.text = "OK"
            assert (await r.check()).level is HealthLevel.HEALTHY  # L2 is due while not up

    run(main)


def test_l2_runs_only_when_due() -> None:
    async def main() -> None:
        async with rig() as r:
            await healthy(r)
            for _ in range(3):
                await r.check()
            assert r.replica.l2_calls == 1  # up, recent, no failed traffic: no test prompt
            loop = asyncio.get_running_loop()
            r.passive.record(NAME, False, 0.01, None, loop.time())  # real traffic failed
            await r.check()
            assert r.replica.l2_calls == 2
            await r.check()
            assert r.replica.l2_calls == 2

    run(main)


def test_l2_due_after_a_quiet_period_unless_traffic_was_useful() -> None:
    async def main() -> None:
        async with rig() as r:
            await healthy(r)
            checker = r.checker
            last = checker._last_l2
            interval = SETTINGS.l2_interval_s
            assert not checker._l2_due(last + interval - 1.0)
            assert checker._l2_due(last + interval)
            r.passive.record(NAME, True, 0.1, 0.05, last + 30.0)  # a useful real answer
            assert not checker._l2_due(last + interval)
            assert checker._l2_due(last + 30.0 + interval)
            r.passive.record(NAME, False, 0.1, None, last + 31.0)
            assert checker._l2_due(last + 31.0)

    run(main)


def test_gpu_memory_gate_events_and_removal() -> None:
    async def main() -> None:
        async with rig(gpu=0) as r:
            r.gpu.frac = 0.5
            await healthy(r)
            r.gpu.frac = 0.85
            obs = await r.check()
            assert not obs.gpu_removed and obs.gpu_mem_frac == 0.85
            r.gpu.frac = 0.96
            obs = await r.check()
            assert obs.gpu_removed and "removed" in obs.reason
            r.gpu.frac = 0.92  # under the remove mark but not below recover: still removed
            assert (await r.check()).gpu_removed
            r.gpu.frac = 0.7
            assert not (await r.check()).gpu_removed
            levels = [e.fields["level"] for e in r.events.recent() if e.kind == "gpu_memory"]
            assert levels == ["prepare", "remove", "normal"]
            assert all(
                e.fields["source"] == "device" for e in r.events.recent() if e.kind == "gpu_memory"
            )

    run(main)


def test_engine_figure_is_used_when_nvml_says_nothing() -> None:
    async def main() -> None:
        async with rig(gpu=None) as r:
            await healthy(r)
            obs = await r.check()
            assert obs.kv_usage == 0.1 and obs.running == 1 and obs.queue_depth == 0

    run(main)


def test_run_loop_checks_until_stopped_and_survives_a_failing_check() -> None:
    async def main() -> None:
        async with rig(gpu=0) as r:
            r.gpu.fail = True  # the first round raises inside the check
            stop = asyncio.Event()
            task = asyncio.create_task(r.checker.run(stop))
            await r.sink.wait_for(3)  # later rounds went on regardless
            stop.set()
            await asyncio.wait_for(task, 5.0)
            assert r.sink.seen[-1].level is HealthLevel.HEALTHY

    run(main)


def gpu_levels(r: Rig) -> list[str]:
    return [e.fields["level"] for e in r.events.recent() if e.kind == "gpu_memory"]


def test_reserving_engine_at_ninety_percent_idle_is_healthy_and_quiet() -> None:
    """vLLM at --gpu-memory-utilization 0.9: NVML reads 0.9 at idle; that is no pressure."""

    async def main() -> None:
        async with rig(gpu=0, reserve=0.9) as r:
            r.gpu.frac = 0.905
            r.replica.kv = 0.0
            await healthy(r)
            for _ in range(3):
                obs = await r.check()
                assert obs.level is HealthLevel.HEALTHY and obs.reason == ""
                assert (obs.gpu_mem_frac, obs.gpu_growth, obs.gpu_removed) == (0.0, 0.0, False)
            assert gpu_levels(r) == []
            assert [e for e in r.events.recent() if e.kind == "gpu_growth"] == []

    run(main)


def test_reserving_engine_kv_marks_prepare_reduce_remove() -> None:
    async def main() -> None:
        async with rig(gpu=0, reserve=None) as r:  # vLLM that does not say: it reserves
            r.gpu.frac = 0.91
            await healthy(r)
            r.replica.kv = 0.85
            assert (await r.check()).gpu_mem_frac == 0.85
            r.replica.kv = 0.92
            obs = await r.check()
            assert not obs.gpu_removed
            r.replica.kv = 0.96
            obs = await r.check()
            assert obs.gpu_removed and "KV cache in the reservation" in obs.reason
            assert gpu_levels(r) == ["prepare", "reduce", "remove"]
            assert {e.fields["source"] for e in r.events.recent() if e.kind == "gpu_memory"} == {
                "kv"
            }

    run(main)


def test_growth_past_the_reservation_raises_its_own_event_and_relearns_on_wake() -> None:
    async def main() -> None:
        async with rig(gpu=0, reserve=0.9) as r:
            r.gpu.frac = 0.90
            r.replica.kv = 0.0
            await healthy(r)
            r.gpu.frac = 0.97  # a leak after sleep/wake, or another process on the GPU
            obs = await r.check()
            assert obs.gpu_growth == 0.07 and obs.gpu_mem_frac == 0.0
            grown = [e for e in r.events.recent() if e.kind == "gpu_growth"]
            assert [e.fields["raised"] for e in grown] == [True]
            assert gpu_levels(r) == []  # its own signal, not the pressure gate's
            assert (await r.check()).level is HealthLevel.DEGRADED  # L3 names it
            r.checker.relearn_memory_baseline()  # woke: 0.97 is its new normal
            obs = await r.check()
            assert obs.gpu_growth == 0.0
            grown = [e for e in r.events.recent() if e.kind == "gpu_growth"]
            assert [e.fields["raised"] for e in grown] == [True, False]

    run(main)


def test_shared_gpu_growth_watch_is_given_by_the_caller() -> None:
    async def main() -> None:
        async with rig(gpu=0, reserve=0.9) as r:
            watch = GrowthWatch(0.05, frozenset({NAME, "sibling"}))
            r.checker.growth = watch
            r.gpu.frac = 0.5
            await healthy(r)
            assert (await r.check()).gpu_growth is None  # the sibling is not serving yet
            watch.update("sibling", 0.9, True)
            r.gpu.frac = 0.9
            assert (await r.check()).gpu_growth == 0.0  # baseline with both reservations

    run(main)


TTFT_PAGE = (
    'vllm:time_to_first_token_seconds_bucket{le="0.02"} 0\n'
    'vllm:time_to_first_token_seconds_bucket{le="0.04"} 10\n'
    'vllm:time_to_first_token_seconds_bucket{le="+Inf"} 10\n'
    'vllm:time_per_output_token_seconds_bucket{le="0.01"} 0\n'
    'vllm:time_per_output_token_seconds_bucket{le="0.02"} 100\n'
    'vllm:time_per_output_token_seconds_bucket{le="+Inf"} 100\n'
)


def test_idle_replica_gets_the_engines_ttft_and_tpot() -> None:
    async def main() -> None:
        async with rig() as r:
            r.replica.extra = TTFT_PAGE
            await healthy(r)
            for _ in range(2):  # the second scrape has no new observations: still shown
                obs = await r.check()
                assert obs.ttft_ms == 30.0 and obs.tpot_ms == 15.0

    run(main)


def test_traffic_figures_win_over_the_engines() -> None:
    async def main() -> None:
        async with rig() as r:
            r.replica.extra = TTFT_PAGE
            await healthy(r)
            now = asyncio.get_running_loop().time()
            r.passive.record(NAME, True, 1.0, 0.1, now, tpot_s=0.004)
            obs = await r.check()
            assert obs.ttft_ms == 100.0 and obs.tpot_ms == 4.0

    run(main)


class Peers:
    def __init__(self, *observations: Observation) -> None:
        states = {
            f"p{i}": ReplicaState(
                ReplicaSpec(f"p{i}", "m", "http://127.0.0.1:1"),
                Role.ACTIVE,
                AdminState.ENABLED,
                obs,
                1.0,
            )
            for i, obs in enumerate(observations)
        }
        self.snapshot = PoolSnapshot.build(1, states)


def test_tpot_three_times_its_peers_is_degraded() -> None:
    peer = Observation(level=HealthLevel.HEALTHY, tpot_ms=5.0)

    async def main() -> None:
        async with rig(peers=Peers(peer, peer)) as r:
            await healthy(r)
            now = asyncio.get_running_loop().time()
            r.passive.record(NAME, True, 3.0, None, now, tpot_s=0.015)
            await r.check()
            obs = await r.check()  # rise 2: two rounds out of range
            assert obs.level is HealthLevel.DEGRADED
            assert "tpot 15.0ms > pool 5.0ms + 2.0ms" in obs.reason

    run(main)


def test_tpot_like_its_peers_is_healthy_however_long_the_answers() -> None:
    peer = Observation(level=HealthLevel.HEALTHY, tpot_ms=5.0, latency_ms=100.0)

    async def main() -> None:
        async with rig(peers=Peers(peer, peer)) as r:
            await healthy(r)
            now = asyncio.get_running_loop().time()
            r.passive.record(NAME, True, 30.0, None, now, tpot_s=0.0052)  # 30 s answers
            for _ in range(3):
                assert (await r.check()).level is HealthLevel.HEALTHY

    run(main)


def test_configured_l2_path_is_where_the_test_prompt_goes() -> None:
    async def main() -> None:
        async with rig(l2_path="/gateway/v1/chat/completions", engine="openai") as r:
            await healthy(r)  # the fake answers only there

    run(main)


def test_generic_server_without_chat_is_learned_to_take_completions() -> None:
    """engine = "openai" prompts /v1/chat/completions; a server with only /v1/completions
    answers 404 there, so the checker tries the other endpoint and keeps it."""

    async def main() -> None:
        async with rig(engine="openai") as r:  # the fake serves /v1/completions only
            await healthy(r)
            assert r.checker.l2_path == "/v1/completions"
            calls = r.replica.l2_calls
            r.checker._last_l2 = -1e9  # due again: the learned path is used at once
            await r.check()
            assert r.replica.l2_calls == calls + 1

    run(main)


def test_a_configured_path_is_never_second_guessed() -> None:
    async def main() -> None:
        async with rig(l2_path="/v1/chat/completions") as r:
            r.replica.l2_path = b"/v1/completions"  # the server has moved it: 404 now
            await r.check()
            obs = await r.check()
            assert obs.level is HealthLevel.UNREADY
            assert "test prompt to /v1/chat/completions answered HTTP 404" in obs.reason
            assert r.checker.l2_path == "/v1/chat/completions"

    run(main)


def test_sleep_and_wake_relearn_the_baseline_without_a_growth_event() -> None:
    """vLLM's sleep mode frees the memory and a wake takes it back: no leak in that."""

    async def main() -> None:
        async with rig(gpu=0, reserve=0.9) as r:
            r.gpu.frac = 0.90
            r.replica.kv = 0.0
            await healthy(r)
            asleep = 'vllm:engine_sleep_state{sleep_state="awake"} 0\n' + (
                'vllm:engine_sleep_state{sleep_state="weights_offloaded"} 1\n'
            )
            r.replica.extra = asleep
            r.gpu.frac = 0.03
            assert (await r.check()).gpu_growth is None
            r.replica.extra = 'vllm:engine_sleep_state{sleep_state="awake"} 1\n'
            r.gpu.frac = 0.93  # woke, reallocated a little more than before
            assert (await r.check()).gpu_growth == 0.0
            r.gpu.frac = 0.99  # and then a real leak
            assert (await r.check()).gpu_growth == 0.06
            grown = [e.fields["raised"] for e in r.events.recent() if e.kind == "gpu_growth"]
            assert grown == [True]

    run(main)


def test_engine_rate_is_per_token_since_the_last_scrape() -> None:
    rate = EngineRate()
    assert rate.per_token_ms(None) is None
    assert rate.per_token_ms((0.0, 0.0)) is None  # nothing generated yet
    assert rate.per_token_ms((1.0, 200.0)) == 5.0  # since start
    assert rate.per_token_ms((2.5, 300.0)) == 15.0  # 1.5 s over the 100 new tokens
    assert rate.per_token_ms((2.5, 300.0)) == 2500.0 / 300.0  # idle: the whole life
    assert rate.per_token_ms((0.2, 10.0)) == 20.0  # counters reset: the engine restarted


def _tpot_page(*tpot_s: float) -> str:
    """vLLM's per-request TPOT histogram, with its buckets (as the simulator renders them)."""
    hist = Histogram(TPOT_BUCKETS)
    for value in tpot_s:
        hist.observe(value)
    name = "vllm:request_time_per_output_token_seconds"
    return "".join(f'{name}_bucket{{le="{le}"}} {n}\n' for le, n in hist.cumulative())


def _weight(obs: Observation, *peers: Observation) -> float:
    replicas = {"r0": obs} | {f"p{i}": p for i, p in enumerate(peers)}
    inputs = {
        name: WeightInput("m", Role.ACTIVE, AdminState.ENABLED, o) for name, o in replicas.items()
    }
    return compute_weights(inputs)["r0"]


def test_idle_replica_in_the_first_tpot_bucket_is_not_slow_against_measured_peers() -> None:
    """Seen in e2e: "HEALTHY -> DEGRADED: L3: tpot 5.0ms > pool 1.5ms + 2.0ms". A 1.5 ms TPOT in
    vLLM's first bucket (0-10 ms) interpolates to 5 ms; it is only known to be under 10 ms."""
    peer = Observation(level=HealthLevel.HEALTHY, tpot_ms=1.5)  # measured from answers

    async def main() -> None:
        async with rig(peers=Peers(peer, peer)) as r:
            r.replica.extra = _tpot_page(*[0.0015] * 20)
            await healthy(r)
            for _ in range(4):  # rise 2: DEGRADED would show by the second round
                obs = await r.check()
                assert obs.level is HealthLevel.HEALTHY, obs.reason
            assert (obs.tpot_ms, obs.tpot_lo_ms, obs.tpot_hi_ms) == (5.0, 0.0, 10.0)
            # The old rule, the estimate taken as measured, is what made it DEGRADED:
            assert too_slow(obs.tpot_ms, 1.5, 0.1, 2.0)
            assert ("HEALTHY", "DEGRADED") not in r.health_events()
            assert _weight(obs, peer, peer) == 1.0

    run(main)


def test_idle_replica_whose_tpot_bucket_starts_at_3x_its_peers_is_slow() -> None:
    """Histogram-only and genuinely slow: even its bucket's lower edge (10 ms) is 3x the
    measured pool (3.33 ms), so it is slow whatever its TPOT within the bucket."""
    peer = Observation(level=HealthLevel.HEALTHY, tpot_ms=10 / 3)

    async def main() -> None:
        async with rig(peers=Peers(peer, peer)) as r:
            r.replica.extra = _tpot_page(*[0.012] * 20)  # bucket (10 ms, 25 ms]
            await healthy(r)
            await r.check()
            obs = await r.check()  # rise 2: two rounds out of range
            assert obs.level is HealthLevel.DEGRADED
            assert "tpot >= 10.0ms (engine histogram) > pool 3.3ms + 2.0ms" in obs.reason
            assert (obs.tpot_lo_ms, obs.tpot_hi_ms) == (10.0, 25.0)
            assert _weight(obs, peer, peer) == pytest.approx((10 / 3) / (10.0 - 2.0))

    run(main)


def test_measured_traffic_replaces_the_bucket() -> None:
    async def main() -> None:
        async with rig() as r:
            r.replica.extra = _tpot_page(0.0015)
            await healthy(r)
            assert (await r.check()).tpot_lo_ms == 0.0
            now = asyncio.get_running_loop().time()
            r.passive.record(NAME, True, 1.0, None, now, tpot_s=0.0015)
            obs = await r.check()
            assert (obs.tpot_ms, obs.tpot_lo_ms, obs.tpot_hi_ms) == (1.5, None, None)

    run(main)


def test_stale_traffic_gives_way_to_the_engine_on_a_drained_replica() -> None:
    """Seen in a rolling upgrade: a drained replica (no traffic) held "L3: tpot 7.2ms > pool
    4.8ms + 2.0ms" for ever from the few samples kept after its window; the node never came back
    healthy. Stale samples give way to what the engine has seen since (its test prompts)."""
    peer = Observation(level=HealthLevel.HEALTHY, tpot_ms=4.8)

    async def main() -> None:
        async with rig(peers=Peers(peer, peer)) as r:
            r.replica.extra = _tpot_page(*[0.0048] * 20)
            await healthy(r)
            now = asyncio.get_running_loop().time()
            for _ in range(5):  # slow samples, recent: they are the replica's figure
                r.passive.record(NAME, True, 0.06, None, now, tpot_s=0.00725)
            await r.check()
            obs = await r.check()
            assert obs.level is HealthLevel.DEGRADED, obs
            assert obs.tpot_ms == 7.25
            # The window passes with no traffic: the engine's figure (first bucket) takes over.
            r.passive.window_s = 0.0
            for _ in range(4):
                obs = await r.check()
            assert obs.level is HealthLevel.HEALTHY, obs.reason
            assert (obs.tpot_lo_ms, obs.tpot_hi_ms) == (0.0, 10.0)

    run(main)
