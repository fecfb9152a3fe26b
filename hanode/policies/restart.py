"""When to restart a failed replica: exponential backoff with jitter, and a crash-loop stop.

Pure: the caller passes the time and the random draw. A replica that keeps failing is restarted
after growing delays (so a broken model does not hammer the GPU with reloads); one restarted
too often inside a window is a crash loop: restarts stop until an operator clears it
(``hanodectl restart NAME``), because by then a person has to look.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    backoff_base_s: float = 1.0  # delay before the first restart
    backoff_max_s: float = 60.0  # the delay doubles per consecutive failure up to this
    backoff_jitter: float = 0.2  # up to this fraction of a delay is taken off at random
    crash_loop_restarts: int = 5  # this many restarts inside the window ...
    crash_loop_window_s: float = 600.0  # ... and the next failure is a crash loop

    def delay(self, failures: int, rand: float) -> float:
        """Seconds before restart number ``failures + 1`` of a run of failures (0-based).

        ``rand`` in [0, 1) takes up to ``backoff_jitter`` of the delay off, so replicas that
        failed together (a host's power, a shared disk) do not reload together. With jitter
        at most 0.5 a delay is never shorter than the one before it, below the cap.
        """
        exponent = min(max(failures, 0), 1000)  # 2.0 ** 1024 overflows
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0**exponent)
        if not (ceiling > 0.0 and math.isfinite(ceiling)):  # zero or absurd settings
            return 0.0
        jitter = min(max(self.backoff_jitter, 0.0), 1.0)
        draw = min(max(rand, 0.0), 1.0)
        return ceiling * (1.0 - jitter * draw)


@dataclass(frozen=True, slots=True)
class RestartState:
    """What the policy remembers of one replica."""

    failures: int = 0  # consecutive failures since the replica last served
    restarts: tuple[float, ...] = ()  # when restarts were decided, inside the window
    crash_loop: bool = False


@dataclass(frozen=True, slots=True)
class RestartDecision:
    state: RestartState
    delay_s: float | None  # None: a crash loop, do not restart

    @property
    def crash_loop(self) -> bool:
        return self.delay_s is None


def on_failure(
    policy: RestartPolicy, state: RestartState, now: float, rand: float
) -> RestartDecision:
    """The replica's process exited or failed its health checks at ``now``: restart it after
    the returned delay, or stop (crash loop) when it was restarted too often lately."""
    if state.crash_loop:
        return RestartDecision(state, None)
    window = policy.crash_loop_window_s
    recent = tuple(t for t in state.restarts if now - t < window)
    if len(recent) >= policy.crash_loop_restarts:
        return RestartDecision(RestartState(state.failures, recent, crash_loop=True), None)
    delay = policy.delay(state.failures, rand)
    return RestartDecision(RestartState(state.failures + 1, (*recent, now)), delay)


def on_served(state: RestartState) -> RestartState:
    """The replica served again (passed L2): the next failure starts from the base delay. The
    restarts stay counted in the window, so a replica that flaps still ends in a crash loop."""
    return state if state.failures == 0 else replace(state, failures=0)


def cleared() -> RestartState:
    """An operator cleared the replica (``hanodectl restart``): a fresh start."""
    return RestartState()
