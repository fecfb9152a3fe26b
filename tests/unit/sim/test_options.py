from __future__ import annotations

import argparse

import pytest

from hanode.sim.cli import build_parser
from hanode.sim.options import from_namespace, parse_fault


def test_defaults() -> None:
    opts = from_namespace(build_parser().parse_args(["--port", "0"]))
    assert (opts.host, opts.port, opts.model) == ("127.0.0.1", 0, "sim-model")
    assert (opts.max_model_len, opts.ttft_ms, opts.tpot_ms, opts.capacity) == (4096, 20, 5, 16)
    # A cold start of 20 s: refused for 15 s, then 503 (loading) for 5 s.
    assert (opts.refuse_s, opts.loading_s, opts.gpu_mem_base) == (15, 5, 0.45)
    assert (opts.sleep_s, opts.wake_s) == (0.5, 1.0)
    assert (opts.api_key, opts.retry_after_s, opts.slow_factor) == (None, 2, 10)
    assert opts.faults == {} and opts.seed is None


@pytest.mark.parametrize(
    ("args", "phases"),
    [
        (["--load-s", "2"], (1.5, 0.5)),
        (["--load-s", "0"], (0, 0)),
        (["--refuse-s", "1"], (1, 0)),  # either phase given: --load-s is not split
        (["--loading-s", "4"], (0, 4)),
        (["--load-s", "9", "--refuse-s", "1", "--loading-s", "2"], (1, 2)),
    ],
)
def test_cold_start_phases(args: list[str], phases: tuple[float, float]) -> None:
    opts = from_namespace(build_parser().parse_args(["--port", "0", *args]))
    assert (opts.refuse_s, opts.loading_s) == phases


def test_faults_repeatable_last_wins() -> None:
    args = ["--port", "1", "--fault", "oom=0.5", "--fault", "slow=1", "--fault", "oom=0.25"]
    opts = from_namespace(build_parser().parse_args(args))
    assert opts.faults == {"oom": 0.25, "slow": 1.0}


@pytest.mark.parametrize("text", ["oom", "meteor=0.1", "oom=2", "oom=-1", "oom=x"])
def test_bad_fault_specs(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_fault(text)


def test_port_is_required() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
