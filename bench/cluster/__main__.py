"""``python -m bench.cluster``: the cluster part alone, printed (docs/benchmarks.md untouched)."""

from __future__ import annotations

import os
import sys

from bench.cluster import run
from bench.cluster.report import render, summary


def main() -> int:
    result = run()
    print()
    print(render(result))
    print()
    print(summary(result))
    return 1 if result.error else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
