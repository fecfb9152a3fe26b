"""GpuMemoryReader: fraction math, log-once behaviour, and the real NVML path of this host."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from hanode.gpu.nvml import GpuMemoryReader, NvmlApi, load_pynvml


class FakeNvmlError(Exception):
    pass


@dataclass
class Mem:
    total: int
    used: int


@dataclass
class FakeNvml:
    """Stands in for the pynvml module; counts calls so laziness and caching are visible."""

    gpus: list[Mem]
    init_error: Exception | None = None
    read_error: Exception | None = None
    calls: list[str] = field(default_factory=list)

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self.calls.append(f"handle{index}")
        if not 0 <= index < len(self.gpus):
            raise FakeNvmlError("Invalid Argument")
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Mem:
        self.calls.append(f"mem{handle}")
        if self.read_error is not None:
            raise self.read_error
        return self.gpus[int(handle)]


@dataclass
class Log:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))


def reader(fake: FakeNvml, log: Log) -> GpuMemoryReader:
    return GpuMemoryReader(load=lambda: fake, log=log)


GiB = 1 << 30


def test_fraction_is_used_over_total() -> None:
    fake = FakeNvml([Mem(total=80 * GiB, used=20 * GiB), Mem(total=80 * GiB, used=71 * GiB)])
    r = reader(fake, Log())
    assert r.read(0) == 0.25
    assert r.read(1) == pytest.approx(71 / 80)
    assert r.available


def test_init_is_lazy_and_handles_are_cached() -> None:
    fake = FakeNvml([Mem(total=100, used=50)])
    r = reader(fake, Log())
    assert fake.calls == []
    r.read(0)
    r.read(0)
    assert fake.calls == ["init", "handle0", "mem0", "mem0"]


@pytest.mark.parametrize(("total", "used", "expected"), [(0, 0, None), (100, 150, 1.0)])
def test_degenerate_memory_info(total: int, used: int, expected: float | None) -> None:
    assert reader(FakeNvml([Mem(total, used)]), Log()).read(0) == expected


def test_unavailable_logs_once_and_stays_none() -> None:
    fake = FakeNvml([Mem(100, 50)], init_error=FakeNvmlError("Driver Not Loaded"))
    log = Log()
    r = reader(fake, log)
    assert [r.read(0), r.read(0), r.read(1)] == [None, None, None]
    assert not r.available
    assert fake.calls == ["init"]  # no retry per probe
    assert log.events == [
        (
            "nvml unavailable, using engine-reported GPU memory",
            {"reason": "FakeNvmlError: Driver Not Loaded"},
        )
    ]


def test_missing_module_is_unavailable() -> None:
    def load() -> NvmlApi:
        raise ImportError("No module named 'pynvml'")

    log = Log()
    r = GpuMemoryReader(load=load, log=log)
    assert r.read(0) is None
    assert [e for e, _ in log.events] == ["nvml unavailable, using engine-reported GPU memory"]


def test_invalid_index_warns_once_per_index() -> None:
    fake = FakeNvml([Mem(100, 50)])
    log = Log()
    r = reader(fake, log)
    results = [r.read(7), r.read(7), r.read(-1), r.read(-1), r.read(0)]
    assert results == [None, None, None, None, 0.5]
    assert [kw["gpu"] for _, kw in log.events] == [7, -1]
    assert fake.calls.count("handle7") == 1  # a bad index is remembered, not retried
    assert "handle-1" not in fake.calls


def test_read_error_warns_once_and_recovers() -> None:
    fake = FakeNvml([Mem(100, 30)], read_error=FakeNvmlError("GPU is lost"))
    log = Log()
    r = reader(fake, log)
    assert r.read(0) is None
    assert r.read(0) is None
    assert len(log.events) == 1
    fake.read_error = None
    assert r.read(0) == 0.3


def test_close_shuts_down_and_read_reinitialises() -> None:
    fake = FakeNvml([Mem(100, 10)])
    r = reader(fake, Log())
    r.close()  # never initialised: nothing to shut down
    assert fake.calls == []
    r.read(0)
    r.close()
    assert fake.calls[-1] == "shutdown"
    assert r.read(0) == 0.1
    assert fake.calls.count("init") == 2
    assert fake.calls.count("handle0") == 2  # handles do not outlive an NVML session


def _host_has_nvml() -> bool:
    try:
        nvml = load_pynvml()
        nvml.nvmlInit()
    except Exception:
        return False
    nvml.nvmlShutdown()
    return True


HAS_NVML = _host_has_nvml()


@pytest.mark.skipif(HAS_NVML, reason="this host has NVML")
def test_real_absent_path() -> None:
    with capture_logs() as logs:
        r = GpuMemoryReader()
        assert r.read(0) is None
        assert r.read(0) is None
        assert not r.available
        r.close()
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "nvml unavailable, using engine-reported GPU memory"
    assert warnings[0]["reason"]


@pytest.mark.skipif(not HAS_NVML, reason="no NVML on this host")
def test_real_gpu() -> None:
    r = GpuMemoryReader()
    try:
        frac = r.read(0)
        assert frac is not None and 0.0 <= frac <= 1.0
        assert r.read(10_000) is None
    finally:
        r.close()
