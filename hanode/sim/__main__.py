"""``python -m hanode.sim --port 8001 ...``"""

from __future__ import annotations

import sys

from hanode.sim.cli import build_parser, main

if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
