"""Seed pinning: make a sampled completion reproducible after the fact.

A request sampled without a seed cannot be replayed: not by a retry or hedge on another
replica, not by someone debugging a bad answer. Pinning a seed the client did not choose (and
returning it in a response header) changes nothing about the distribution of answers but makes
each one reproducible on the same engine and model. Greedy requests (temperature 0) are
deterministic already and are left alone, as are requests with their own seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

_SEED_MASK = 0x7FFF_FFFF  # 31 bits: fits every engine's seed type (some use signed int32)


def pin_seed(body: dict[str, object], rand_bits: Callable[[], int]) -> int | None:
    """Return a new seed in ``[0, 2**31)`` for ``body`` to carry, or None to leave it alone.

    None when the body has a seed (a null seed counts as none) or samples greedily. A missing
    or null temperature means OpenAI's default, 1. A temperature that is not a finite number
    above 0 (negative, a string, a bool, NaN) gives None too: validating it is not this
    function's job, and guessing would hide the client's error. Does not change ``body``;
    ``rand_bits`` is called once when a seed is returned (e.g. ``lambda: random.getrandbits(31)``).
    """
    if body.get("seed") is not None:
        return None
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            return None
        if not temperature > 0 or math.isinf(temperature):
            return None
    return rand_bits() & _SEED_MASK
