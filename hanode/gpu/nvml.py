"""GPU memory use via NVML, degrading to ``None`` (engine-reported memory) when NVML is absent.

A host without a driver, or a container without the NVML library, is normal (CPU-only tests,
the simulator), so nothing here raises and each problem is logged once, not once per probe.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from typing import Any, Protocol, cast

import structlog


class MemoryInfo(Protocol):
    @property
    def total(self) -> int: ...

    @property
    def used(self) -> int: ...


class NvmlApi(Protocol):
    """The slice of ``pynvml`` we use: the seam where tests inject a fake module."""

    def nvmlInit(self) -> None: ...

    def nvmlShutdown(self) -> None: ...

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> MemoryInfo: ...


class Warner(Protocol):
    def warning(self, event: str, **kw: Any) -> Any: ...


def load_pynvml() -> NvmlApi:
    import pynvml  # deferred: importing is cheap, but keep a missing package a runtime matter

    return cast(NvmlApi, pynvml)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class GpuMemoryReader:
    """``read(index)`` -> used/total in 0..1, or ``None`` when NVML cannot say."""

    def __init__(self, load: Callable[[], NvmlApi] = load_pynvml, log: Warner | None = None):
        self._load = load
        self._log: Warner = log if log is not None else structlog.get_logger(__name__)
        self._lock = threading.Lock()
        self._nvml: NvmlApi | None = None
        self._unavailable = False
        self._handles: dict[int, Any] = {}
        self._bad_indexes: set[int] = set()
        self._warned: set[int] = set()

    @property
    def available(self) -> bool:
        """Whether NVML works here; initialises it on first use."""
        return self._ensure() is not None

    def read(self, index: int) -> float | None:
        nvml = self._ensure()
        if nvml is None:
            return None
        if index < 0 or index in self._bad_indexes:
            self._warn_index(index, "no such gpu")
            return None
        handle = self._handles.get(index)
        if handle is None:
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as exc:  # pynvml raises NVMLError subclasses; never let one out
                self._bad_indexes.add(index)
                self._warn_index(index, _reason(exc))
                return None
            self._handles[index] = handle
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            used, total = float(info.used), float(info.total)
        except Exception as exc:  # e.g. GPU fell off the bus: retry next time, warn once
            self._warn_index(index, _reason(exc))
            return None
        if not (total > 0 and math.isfinite(total) and math.isfinite(used)):
            return None
        return min(1.0, max(0.0, used / total))

    def close(self) -> None:
        """Shut NVML down; a later ``read`` initialises it again."""
        with self._lock:
            nvml, self._nvml = self._nvml, None
            self._handles.clear()
            if nvml is not None:
                with contextlib.suppress(Exception):
                    nvml.nvmlShutdown()

    def _ensure(self) -> NvmlApi | None:
        if self._nvml is not None or self._unavailable:
            return self._nvml
        with self._lock:
            if self._nvml is None and not self._unavailable:
                try:
                    nvml = self._load()
                    nvml.nvmlInit()
                except Exception as exc:  # no package, no library, no driver: all the same here
                    self._unavailable = True
                    self._log.warning(
                        "nvml unavailable, using engine-reported GPU memory", reason=_reason(exc)
                    )
                else:
                    self._nvml = nvml
            return self._nvml

    def _warn_index(self, index: int, reason: str) -> None:
        if index not in self._warned:
            self._warned.add(index)
            self._log.warning("nvml cannot read gpu memory", gpu=index, reason=reason)
