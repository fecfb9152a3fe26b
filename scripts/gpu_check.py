"""Check hanode's GPU-memory reading and policy against real NVML figures (issue 9).

    .venv/bin/python scripts/gpu_check.py [--reserve 0.9] [--require-gpu] [--no-alloc]

On a machine with an NVIDIA GPU: reads NVML for every GPU (raw bytes, and hanode's
GpuMemoryReader), then, when PyTorch with CUDA is installed, allocates device memory in steps up
to the 80/90/95% marks of a reservation of ``--reserve`` of the device (an engine's KV cache
filling it) and past it by the growth mark (a leak), and frees it again. At each step it prints
the raw figures next to what hanode concludes: the GPU gate's level for an engine whose
pressure is device memory, the growth past the baseline for an engine that reserves, and what
the marks say independently (hanode/devtools/gpu_check.py). Exit status: 0 all agree, 1 a
disagreement, 2 no GPU/NVML here (0 with a message unless ``--require-gpu``).

Memory other processes hold is part of every reading (the baseline includes it); run it on an
idle GPU. Paste the output into docs/health-signals.md ("Seen on hardware").
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hanode.devtools.gpu_check import Marks, Step, allocation_targets, format_rows, judge
from hanode.gpu.nvml import GpuMemoryReader, NvmlApi, load_pynvml

NO_GPU = 2
CHUNK = 256 * 1024 * 1024  # bytes per torch allocation


class _Quiet:
    def warning(self, event: str, **kw: Any) -> None:
        pass


def _nvml() -> tuple[NvmlApi | None, str]:
    try:
        nvml = load_pynvml()
        nvml.nvmlInit()
    except Exception as exc:  # no package, no library, no driver: all mean "no GPU here"
        return None, f"{type(exc).__name__}: {exc}"
    return nvml, ""


def _reading(nvml: Any, reader: GpuMemoryReader, index: int, label: str) -> Step:
    info = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index))
    return Step(label, int(info.used), int(info.total), reader.read(index))


def _torch() -> Any | None:
    try:
        import torch  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _steps(
    nvml: Any, reader: GpuMemoryReader, index: int, reserve: float, marks: Marks
) -> list[Step]:
    steps = [_reading(nvml, reader, index, "baseline (as found)")]
    torch = _torch()
    if torch is None:
        return steps
    held: list[Any] = []
    try:
        for label, target in allocation_targets(reserve, marks):
            step = steps[-1]
            want = int(target * step.total) - step.used
            try:
                while want > 0:
                    size = min(CHUNK, want)
                    held.append(torch.empty(size, dtype=torch.uint8, device=f"cuda:{index}"))
                    want -= size
                torch.cuda.synchronize(index)
            except RuntimeError as exc:  # out of memory before the target: report and stop
                steps.append(_reading(nvml, reader, index, f"{label}: stopped ({exc})"[:32]))
                break
            steps.append(_reading(nvml, reader, index, label))
    finally:
        held.clear()
        torch.cuda.empty_cache()
    steps.append(_reading(nvml, reader, index, "freed"))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reserve", type=float, default=0.9, help="the engine's reservation")
    parser.add_argument("--require-gpu", action="store_true", help="exit 2 without a GPU")
    parser.add_argument("--no-alloc", action="store_true", help="only read, allocate nothing")
    args = parser.parse_args(argv)
    if not 0.0 < args.reserve < 1.0:
        parser.error(f"--reserve must be within (0, 1), got {args.reserve}")
    nvml, why = _nvml()
    count = 0
    if nvml is not None:
        try:
            count = int(nvml.nvmlDeviceGetCount())  # type: ignore[attr-defined]
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
    if nvml is None or count == 0:
        print(
            f"gpu_check: no NVIDIA GPU or NVML on this machine ({why or 'no devices'}); "
            "nothing was checked"
        )
        return NO_GPU if args.require_gpu else 0
    marks = Marks()
    reader = GpuMemoryReader(load=lambda: nvml, log=_Quiet())  # the same NVML as the raw reads
    print(
        f"gpu_check: {count} GPU(s); reservation {args.reserve:.0%}; marks "
        f"{marks.prepare:.0%}/{marks.reduce:.0%}/{marks.remove:.0%}, growth {marks.growth:.0%}"
        + ("" if args.no_alloc or _torch() is not None else "; no PyTorch with CUDA: reads only")
    )
    failed = False
    for index in range(count):
        if args.no_alloc:
            steps = [_reading(nvml, reader, index, "as found")]
        else:
            steps = _steps(nvml, reader, index, args.reserve, marks)
        rows = judge(steps, marks)
        print("\n".join(format_rows(index, rows)))
        failed = failed or any(r.problems for r in rows)
    reader.close()
    print("gpu_check: " + ("DISAGREEMENT (see above)" if failed else "hanode agrees with NVML"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
