"""Debouncing of probe results: a state changes only after a streak of opposite results.

One lost probe or one slow answer must not pull a replica out of rotation (flapping costs more
than it saves), and one lucky probe must not put a broken replica back. HAProxy calls these
counts ``rise`` and ``fall``.
"""

from __future__ import annotations


class RiseFall:
    """Up/down state that flips up after ``rise`` consecutive successes while down, and down
    after ``fall`` consecutive failures while up."""

    __slots__ = ("_streak", "fall", "rise", "up")

    def __init__(self, rise: int, fall: int, up: bool = False) -> None:
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be >= 1, got rise={rise} fall={fall}")
        self.rise = rise
        self.fall = fall
        self.up = up
        self._streak = 0  # consecutive results that disagree with the current state

    def record(self, ok: bool) -> bool:
        """Feed one probe result; return the (possibly new) state."""
        if ok == self.up:
            self._streak = 0  # a result agreeing with the state breaks any opposite streak
            return self.up
        self._streak += 1
        if self._streak >= (self.rise if ok else self.fall):
            self.up = ok
            self._streak = 0
        return self.up

    def force(self, up: bool) -> None:
        """Set the state directly (operator action, restart) and forget any pending streak."""
        self.up = up
        self._streak = 0

    def __repr__(self) -> str:
        return f"RiseFall(rise={self.rise}, fall={self.fall}, up={self.up}, streak={self._streak})"
