"""``python -m bench.cluster [--quick] [--nodes N]``: the cluster part alone, printed
(docs/benchmarks.md untouched)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from bench.cluster import QUICK, ClusterSettings, run
from bench.cluster.report import render, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="three nodes, short windows")
    p.add_argument("--nodes", type=int, default=None, help="nodes in the cluster (3 or more)")
    a = p.parse_args(argv)
    settings = QUICK if a.quick else ClusterSettings()
    if a.nodes is not None:
        if a.nodes < 3:
            print("bench.cluster: --nodes must be 3 or more", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, nodes=a.nodes)
    result = run(settings)
    print()
    print(render(result))
    print()
    print(summary(result))
    return 1 if result.error else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
