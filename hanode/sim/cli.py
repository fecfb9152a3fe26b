"""``hanode sim``: entry points wired by the main CLI and by ``python -m hanode.sim``."""

from __future__ import annotations

import argparse

from hanode.runtime import run
from hanode.sim import options as sim_options
from hanode.sim.server import serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sim_options.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    options = sim_options.from_namespace(args)
    return run(serve(options), getattr(args, "event_loop", "uvloop"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hanode sim",
        description="A vLLM-like OpenAI-compatible replica simulator with switchable faults.",
    )
    add_arguments(parser)
    return parser
