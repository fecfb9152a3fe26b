"""Loaded (via PYTHONPATH) only into a node run under libfaketime by the chaos suite.

libfaketime 0.9.10 with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` breaks ``clock_nanosleep`` with an
absolute CLOCK_MONOTONIC deadline, which CPython 3.11's ``time.sleep`` uses: it fails with
EINVAL (pysyncobj's thread dies on it). ``select`` with a relative timeout is unaffected, so
``time.sleep`` sleeps with it here. Nothing else changes: the wall clock stays skewed.
"""

from __future__ import annotations

import os
import select
import time

if os.environ.get("FAKETIME"):
    _monotonic = time.monotonic

    def _sleep(seconds: float) -> None:
        end = _monotonic() + max(0.0, float(seconds))
        while (left := end - _monotonic()) > 0:
            select.select([], [], [], left)

    time.sleep = _sleep  # type: ignore[assignment]
