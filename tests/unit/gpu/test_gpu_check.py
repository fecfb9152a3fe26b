"""scripts/gpu_check.py: its no-GPU path, and its (pure) comparison on recorded and built data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hanode.devtools.gpu_check import MIB, Marks, Step, allocation_targets, format_rows, judge
from hanode.policies.gpu_gate import GpuLevel
from hanode.policies.memory import memory_pressure, reserving

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures"
GIB = 1024 * MIB


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check_script", ROOT / "scripts/gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the no-GPU path ----------------------------------------------------------------------------
def no_nvml() -> Any:
    raise OSError("NVML Shared Library Not Found")


def test_without_nvml_it_says_so_and_exits_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script()
    monkeypatch.setattr(script, "load_pynvml", no_nvml)
    assert script.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpu_check: no NVIDIA GPU or NVML on this machine (OSError: NVML")
    assert "nothing was checked" in out
    assert script.main(["--require-gpu"]) == 2


class FakeInfo:
    def __init__(self, used: int, total: int) -> None:
        self.used, self.total = used, total


class FakeNvml:
    """One GPU; ``readings`` are handed out one per memory-info call (the last one repeats)."""

    def __init__(self, *readings: int, total: int = 80 * GIB, count: int = 1) -> None:
        self.readings = list(readings)
        self.total = total
        self.count = count

    def nvmlInit(self) -> None: ...

    def nvmlShutdown(self) -> None: ...

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> FakeInfo:
        used = self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]
        return FakeInfo(used, self.total)


def test_no_devices_is_the_no_gpu_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script()
    monkeypatch.setattr(script, "load_pynvml", lambda: FakeNvml(0, count=0))
    assert script.main(["--no-alloc"]) == 0
    assert "no devices" in capsys.readouterr().out


def test_reads_only_and_agrees(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script()
    fake = FakeNvml(72 * GIB)
    monkeypatch.setattr(script, "load_pynvml", lambda: fake)
    assert script.main(["--no-alloc"]) == 0
    out = capsys.readouterr().out
    assert "73728 / 81920 MiB" in out and "hanode agrees with NVML" in out


def test_a_reader_that_disagrees_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script()
    fake = FakeNvml(40 * GIB, 72 * GIB)  # the raw read sees 40 GiB, hanode's reader 72 GiB
    monkeypatch.setattr(script, "load_pynvml", lambda: fake)
    assert script.main(["--no-alloc"]) == 1
    assert "DISAGREE: reader 0.9000 != NVML 0.5000" in capsys.readouterr().out


# -- the comparison on figures ------------------------------------------------------------------
def test_recorded_vllm_figure_is_removal_by_device_memory_and_no_pressure_by_kv() -> None:
    """vLLM issue 7553: a 4090 at --gpu-memory-utilization 0.9 reads 97% used at idle. Judged
    as device memory (the old rule) that is past the remove mark; hanode now judges a reserving
    engine by its KV use, and learns 97% as the baseline of growth."""
    rec = json.loads((FIXTURES / "nvml_public.json").read_text())["vllm_7553"]
    total, used = rec["total_mib"] * MIB, rec["used_mib_cuda_graphs"] * MIB
    (row,) = judge([Step("idle after start", used, total, used / total)])
    assert row.problems == ()
    assert row.raw == pytest.approx(0.9713, abs=1e-4)
    assert row.level is GpuLevel.REMOVE  # what a non-reserving reading of it concludes
    assert (row.growth, row.growth_raised) == (0.0, False)
    pressure, _ = memory_pressure(reserving(True, rec["gpu_memory_utilization"]), 0.0, row.raw)
    assert pressure == 0.0


def built_steps(total: int, reserve: float, reader_error: float = 0.0) -> list[Step]:
    base = int(0.01 * total)  # the CUDA context of the checker itself
    steps = [Step("baseline", base, total, base / total + reader_error)]
    for label, frac in allocation_targets(reserve, Marks()):
        used = int(frac * total)
        steps.append(Step(label, used, total, used / total + reader_error))
    steps.append(Step("freed", base, total, base / total + reader_error))
    return steps


def test_filling_a_reservation_agrees_and_the_leak_step_raises_growth() -> None:
    rows = judge(built_steps(80 * GIB, 0.9))
    assert [r.problems for r in rows] == [()] * 6
    assert (
        [r.level for r in rows]
        == [
            GpuLevel.NORMAL,  # 72%
            GpuLevel.NORMAL,
            GpuLevel.PREPARE,  # 81%
            GpuLevel.PREPARE,  # 85.5%
            GpuLevel.REMOVE,  # 95%: the reservation plus a leak
            GpuLevel.NORMAL,  # freed
        ][: len(rows)]
    )
    assert [r.growth_raised for r in rows] == [False, True, True, True, True, False]
    text = "\n".join(format_rows(0, rows))
    assert "DISAGREE" not in text and "reservation + 5% (a leak)" in text


def test_a_reader_off_by_five_points_is_named_at_every_step() -> None:
    rows = judge(built_steps(80 * GIB, 0.9, reader_error=0.05))
    assert all(any("reader" in p for p in r.problems) for r in rows)


def test_targets_are_the_marks_of_the_reservation() -> None:
    fracs = [f for _, f in allocation_targets(0.9, Marks())]
    assert fracs == pytest.approx([0.72, 0.81, 0.855, 0.95])
