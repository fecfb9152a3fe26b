"""Command-line options of ``hanode sim`` and the frozen settings they produce."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from hanode.sim.faults import FAULT_KINDS

DEFAULT_LOAD_S = 20.0  # a cold start of a small model on a real GPU host, roughly


def parse_fault(text: str) -> tuple[str, float]:
    """``KIND=RATE`` -> (kind, rate); argparse turns ValueError into a usage error."""
    kind, sep, rate_text = text.partition("=")
    kind = kind.strip()
    if not sep or kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(
            f"expected KIND=RATE with KIND in {', '.join(FAULT_KINDS)}, got {text!r}"
        )
    try:
        rate = float(rate_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rate must be a number, got {rate_text!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"rate must be within 0..1, got {rate}")
    return kind, rate


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


@dataclass(frozen=True, slots=True)
class SimOptions:
    port: int
    host: str = "127.0.0.1"
    model: str = "sim-model"
    max_model_len: int = 4096
    ttft_ms: float = 20.0
    tpot_ms: float = 5.0
    capacity: int = 16
    refuse_s: float = 0.0
    loading_s: float = 0.0
    sleep_s: float = 0.5  # POST /sleep takes this long (vLLM offloading the weights)
    wake_s: float = 1.0  # POST /wake_up takes this long
    gpu_mem_base: float = 0.45
    # Device memory taken at start, like vLLM's --gpu-memory-utilization (0.9); 0: it grows
    # with KV use from gpu_mem_base instead (an engine that allocates as it goes).
    reserve_gpu: float = 0.9
    api_key: str | None = None
    retry_after_s: float = 2.0
    slow_factor: float = 10.0
    faults: dict[str, float] = field(default_factory=dict)
    seed: int | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: any)")
    parser.add_argument("--model", default="sim-model", help="served model name")
    parser.add_argument("--max-model-len", type=_positive_int, default=4096)
    parser.add_argument("--ttft-ms", type=_non_negative, default=20.0, help="time to 1st token")
    parser.add_argument("--tpot-ms", type=_non_negative, default=5.0, help="time per out token")
    parser.add_argument(
        "--capacity", type=_positive_int, default=16, help="sequences generated at once"
    )
    parser.add_argument(
        "--load-s",
        type=_non_negative,
        default=DEFAULT_LOAD_S,
        help="a cold start this long: refuses connections for the first 3/4, then answers "
        "503 (model loading) for the rest; --refuse-s/--loading-s set the two phases instead",
    )
    parser.add_argument(
        "--refuse-s", type=_non_negative, default=None, help="refuse connections this long"
    )
    parser.add_argument(
        "--loading-s", type=_non_negative, default=None, help="then answer 503 this long"
    )
    parser.add_argument(
        "--sleep-s", type=_non_negative, default=0.5, help="POST /sleep takes this long"
    )
    parser.add_argument(
        "--wake-s", type=_non_negative, default=1.0, help="POST /wake_up takes this long"
    )
    parser.add_argument(
        "--gpu-mem-base",
        type=_fraction,
        default=0.45,
        help="device memory at idle when not reserving (--reserve-gpu 0)",
    )
    parser.add_argument(
        "--reserve-gpu",
        type=_fraction,
        default=0.9,
        help="device memory taken at start, like vLLM's --gpu-memory-utilization (0: grow "
        "with KV use from --gpu-mem-base)",
    )
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--retry-after-s", type=_non_negative, default=2.0)
    parser.add_argument("--slow-factor", type=_non_negative, default=10.0)
    parser.add_argument(
        "--fault",
        type=parse_fault,
        action="append",
        default=[],
        metavar="KIND=RATE",
        help=f"fault rate 0..1, repeatable; KIND in {', '.join(FAULT_KINDS)}",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault RNG")
    parser.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="uvloop (default, falls back to asyncio if unusable) or plain asyncio",
    )


def load_phases(
    load_s: float, refuse_s: float | None, loading_s: float | None
) -> tuple[float, float]:
    """(refuse, 503) seconds of a cold start: the two phases when either is given, else
    ``load_s`` split 3:1 (weights loading before the HTTP server is up, then warm-up)."""
    if refuse_s is None and loading_s is None:
        return load_s * 0.75, load_s * 0.25
    return refuse_s or 0.0, loading_s or 0.0


def from_namespace(args: argparse.Namespace) -> SimOptions:
    refuse_s, loading_s = load_phases(args.load_s, args.refuse_s, args.loading_s)
    faults: dict[str, float] = {}
    for kind, rate in args.fault or []:
        faults[kind] = rate
    return SimOptions(
        host=args.host,
        port=args.port,
        model=args.model,
        max_model_len=args.max_model_len,
        ttft_ms=args.ttft_ms,
        tpot_ms=args.tpot_ms,
        capacity=args.capacity,
        refuse_s=refuse_s,
        loading_s=loading_s,
        sleep_s=args.sleep_s,
        wake_s=args.wake_s,
        gpu_mem_base=args.gpu_mem_base,
        reserve_gpu=args.reserve_gpu,
        api_key=args.api_key,
        retry_after_s=args.retry_after_s,
        slow_factor=args.slow_factor,
        faults=faults,
        seed=args.seed,
    )
