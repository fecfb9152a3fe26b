"""Running/waiting/KV/GPU-memory accounting of the simulated engine (pure, no I/O).

Device memory follows vLLM by default: ``reserve`` (``--reserve-gpu``, 0.9 like
``--gpu-memory-utilization``) is taken at start and stays whatever the load, while KV use moves
with it. ``reserve = 0`` is an engine that allocates as it goes (device memory grows with KV
use). ``leaked`` is memory grown past the reservation (the leak fault, a known vLLM issue after
sleep/wake with multimodal models); ``kv_override`` drives KV use from a drill."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

GPU_MEM_KV_SPAN = 0.30  # GPU memory rises from base to base + this at full KV cache


class EngineState(Generic[T]):
    """A batch of ``capacity`` running sequences and a FIFO of waiting ones.

    Items are opaque (the server's generation jobs). ``submit`` says whether an item may start
    now; ``release`` frees a slot and hands back the waiting items that start in its place.
    """

    __slots__ = (
        "_waiting",
        "capacity",
        "gpu_mem_base",
        "gpu_mem_override",
        "kv_override",
        "leaked",
        "peak_running",
        "reserve",
        "running",
    )

    def __init__(self, capacity: int, gpu_mem_base: float = 0.45, reserve: float = 0.0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.running = 0
        self.peak_running = 0  # the most sequences run at once (tests of admission limits)
        self._waiting: deque[T] = deque()
        self.gpu_mem_base = gpu_mem_base
        self.gpu_mem_override: float | None = None
        self.reserve = reserve
        self.kv_override: float | None = None
        self.leaked = 0.0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def has_room(self) -> bool:
        return self.running < self.capacity and not self._waiting

    def submit(self, item: T) -> bool:
        """True: ``item`` runs now (a slot is taken). False: it waits its turn."""
        if self.has_room:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
            return True
        self._waiting.append(item)
        return False

    def release(self) -> list[T]:
        """A running item finished: free its slot and return the items that start now."""
        if self.running > 0:
            self.running -= 1
        return self._admit()

    def cancel_waiting(self, item: T) -> bool:
        """Drop a waiting item (its client left). False if it was not waiting."""
        try:
            self._waiting.remove(item)
        except ValueError:
            return False
        return True

    def set_capacity(self, capacity: int) -> list[T]:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        return self._admit()

    def _admit(self) -> list[T]:
        started: list[T] = []
        while self._waiting and self.running < self.capacity:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
            started.append(self._waiting.popleft())
        return started

    @property
    def kv_usage(self) -> float:
        if self.kv_override is not None:
            return self.kv_override
        return min(1.0, self.running / self.capacity)

    @property
    def gpu_mem(self) -> float:
        if self.gpu_mem_override is not None:
            return self.gpu_mem_override
        if self.reserve > 0.0:
            return min(1.0, self.reserve + self.leaked)
        return min(1.0, self.gpu_mem_base + GPU_MEM_KV_SPAN * self.kv_usage + self.leaked)
