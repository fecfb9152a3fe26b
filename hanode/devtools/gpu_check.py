"""What ``scripts/gpu_check.py`` compares, as pure code: raw NVML figures against what hanode's
reader and memory policy conclude from them, step by step.

Each step is one reading of one GPU: the bytes NVML reports (``used``, ``total``) and the
fraction hanode's :class:`~hanode.gpu.nvml.GpuMemoryReader` returned. For each step the check
works out, independently of hanode's gate, what the marks say about that figure (for an engine
that does not reserve, device memory is its pressure) and how far device memory has grown past
the first reading (for one that reserves, growth past its reservation is the OOM risk); then it
runs hanode's own :class:`~hanode.policies.gpu_gate.GpuMemoryGate` and
:class:`~hanode.policies.memory.GrowthWatch` over the same readings. Any difference is a
disagreement, and the script exits non-zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from hanode.policies.gpu_gate import GpuLevel, GpuMemoryGate
from hanode.policies.memory import GrowthWatch

READER_TOLERANCE = 0.002  # NVML read twice may move a little (other processes, the driver)
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Marks:
    prepare: float = 0.80
    reduce: float = 0.90
    remove: float = 0.95
    recover: float = 0.90
    growth: float = 0.05


@dataclass(frozen=True, slots=True)
class Step:
    label: str
    used: int  # bytes, from NVML
    total: int
    reader: float | None  # hanode's GpuMemoryReader.read(index)


@dataclass(frozen=True, slots=True)
class Row:
    step: Step
    raw: float
    level: GpuLevel  # hanode's gate, device memory as the pressure (engines that do not reserve)
    expected_level: GpuLevel
    growth: float | None  # hanode's growth watch (engines that reserve)
    expected_growth: float
    growth_raised: bool
    expected_raised: bool
    problems: tuple[str, ...] = field(default=())


def expected_level(raw: float, previous: GpuLevel, marks: Marks) -> GpuLevel:
    """The marks, written out again without the gate: at or above each mark, and a removed
    GPU stays removed until below ``recover``."""
    if previous is GpuLevel.REMOVE and raw >= marks.recover:
        return GpuLevel.REMOVE
    for mark, level in (
        (marks.remove, GpuLevel.REMOVE),
        (marks.reduce, GpuLevel.REDUCE),
        (marks.prepare, GpuLevel.PREPARE),
    ):
        if raw >= mark:
            return level
    return GpuLevel.NORMAL


def judge(steps: Sequence[Step], marks: Marks = Marks()) -> list[Row]:
    """Rows for one GPU's steps, the first being the baseline (the engine just became healthy)."""
    gate = GpuMemoryGate(marks.prepare, marks.reduce, marks.remove, marks.recover)
    watch = GrowthWatch(marks.growth, frozenset({"gpu"}))
    rows: list[Row] = []
    previous = GpuLevel.NORMAL
    baseline: float | None = None
    raised = False
    for step in steps:
        problems: list[str] = []
        raw = step.used / step.total if step.total > 0 else math.nan
        if not math.isfinite(raw):
            problems.append(f"NVML gave no usable figure (used {step.used}, total {step.total})")
            raw = 0.0
        if step.reader is None:
            problems.append("hanode's reader returned nothing")
        elif abs(step.reader - raw) > READER_TOLERANCE:
            problems.append(f"reader {step.reader:.4f} != NVML {raw:.4f}")
        level, _ = gate.update(step.reader)
        want_level = expected_level(raw, previous, marks)
        previous = want_level
        on_a_mark = any(
            abs(raw - m) <= READER_TOLERANCE
            for m in (marks.prepare, marks.reduce, marks.remove, marks.recover)
        )
        if level is not want_level and not on_a_mark:
            problems.append(f"gate says {level.value}, the marks say {want_level.value}")
        growth, _ = watch.update("gpu", step.reader, serving=True)
        baseline = raw if baseline is None else min(baseline, raw)
        want_growth = raw - baseline
        if not raised and want_growth >= marks.growth:
            raised = True
        elif raised and want_growth < marks.growth / 2:
            raised = False
        near_an_edge = (
            min(abs(want_growth - marks.growth), abs(want_growth - marks.growth / 2))
            <= READER_TOLERANCE
        )  # reader and NVML may fall on either side of it
        if growth is None or abs(growth - want_growth) > READER_TOLERANCE:
            problems.append(f"growth {growth} != {want_growth:.4f}")
        elif watch.raised is not raised and not near_an_edge:
            problems.append(f"growth event {watch.raised}, expected {raised}")
        rows.append(
            Row(
                step,
                raw,
                level,
                want_level,
                growth,
                want_growth,
                watch.raised,
                raised,
                tuple(problems),
            )
        )
    return rows


def allocation_targets(reserve: float, marks: Marks) -> list[tuple[str, float]]:
    """Device fractions to fill to: the marks *of the reservation* (an engine's KV cache
    filling it), then past the reservation by the growth mark (a leak), as labels and
    fractions of the whole device."""
    targets = [(f"{m:.0%} of the reservation", reserve * m) for m in (0.80, 0.90, 0.95)]
    targets.append((f"reservation + {marks.growth:.0%} (a leak)", reserve + marks.growth))
    return [(label, min(frac, 0.99)) for label, frac in targets]


def format_rows(index: int, rows: Sequence[Row]) -> list[str]:
    lines = [
        f"GPU {index}: {'step':<32} {'NVML used/total':>22} {'raw':>7} {'reader':>7} "
        f"{'gate':>8} {'marks':>8} {'growth':>7} {'event':>5}  result"
    ]
    for r in rows:
        s = r.step
        reader = "-" if s.reader is None else f"{s.reader:.4f}"
        growth = "-" if r.growth is None else f"{r.growth:.4f}"
        nvml = f"{s.used // MIB} / {s.total // MIB} MiB"
        result = "ok" if not r.problems else "DISAGREE: " + "; ".join(r.problems)
        lines.append(
            f"       {s.label:<32} {nvml:>22} {r.raw:>7.4f} {reader:>7} {r.level.value:>8} "
            f"{r.expected_level.value:>8} {growth:>7} {r.growth_raised!s:>5}  {result}"
        )
    return lines
