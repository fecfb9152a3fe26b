"""The simulator's Prometheus text page, with vLLM's metric names and buckets."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Final

# vLLM's buckets (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
# vLLM's request_time_per_output_token_seconds buckets (vllm/v1/metrics/loggers.py).
TPOT_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS: Final = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


class Histogram:
    """Cumulative-on-render histogram: observe is one bisect and two adds."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # last one is +Inf only
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((_fmt(bound), running))
        out.append(("+Inf", self.count))
        return out


class SimMetrics:
    """Counters and histograms kept by the server; gauges come from the engine state."""

    __slots__ = ("e2e", "generation_tokens", "prompt_tokens", "success", "tpot", "ttft")

    def __init__(self) -> None:
        self.ttft = Histogram(TTFT_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)  # one mean per request, like vLLM v1
        self.e2e = Histogram(E2E_BUCKETS)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: dict[str, int] = {}

    def request_done(self, prompt: int, generated: int, finish_reason: str) -> None:
        self.prompt_tokens += prompt
        self.generation_tokens += generated
        self.success[finish_reason] = self.success.get(finish_reason, 0) + 1


def _fmt(value: float) -> str:
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(
    model: str,
    metrics: SimMetrics,
    running: int,
    waiting: int,
    kv_usage: float,
    gpu_mem: float,
    reserve: float = 0.0,
) -> bytes:
    """``reserve``: the device share taken at start, shown as vLLM shows its
    --gpu-memory-utilization (``vllm:cache_config_info``; 0 here: the simulator grows instead)."""
    lbl = f'model_name="{_label(model)}"'
    lines: list[str] = []

    def gauge(name: str, help_text: str, value: float) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.append(f"{name}{{{lbl}}} {_fmt(value)}")

    def counter(name: str, help_text: str, value: float) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} counter")
        lines.append(f"{name}{{{lbl}}} {_fmt(value)}")

    def histogram(name: str, help_text: str, hist: Histogram) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} histogram")
        for le, n in hist.cumulative():
            lines.append(f'{name}_bucket{{{lbl},le="{le}"}} {_fmt(n)}')
        lines.append(f"{name}_count{{{lbl}}} {_fmt(hist.count)}")
        lines.append(f"{name}_sum{{{lbl}}} {_fmt(hist.sum)}")

    gauge("vllm:num_requests_running", "Number of requests in model execution batches.", running)
    gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting)
    gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv_usage)
    gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage (vLLM v0 name).", kv_usage)
    counter(
        "vllm:prompt_tokens_total", "Number of prefill tokens processed.", metrics.prompt_tokens
    )
    counter(
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        metrics.generation_tokens,
    )
    name = "vllm:request_success_total"
    lines.append(f"# HELP {name} Count of successfully processed requests.")
    lines.append(f"# TYPE {name} counter")
    for reason in sorted(set(metrics.success) | {"length", "stop"}):
        lines.append(
            f'{name}{{{lbl},finished_reason="{reason}"}} {_fmt(metrics.success.get(reason, 0))}'
        )
    histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token.", metrics.ttft)
    histogram(
        "vllm:request_time_per_output_token_seconds",
        "Histogram of time_per_output_token_seconds per request.",
        metrics.tpot,
    )
    name = "vllm:cache_config_info"
    lines.append(f"# HELP {name} Information of the LLMEngine CacheConfig")
    lines.append(f"# TYPE {name} gauge")
    lines.append(f'{name}{{block_size="16",engine="0",gpu_memory_utilization="{reserve:g}"}} 1.0')
    histogram(
        "vllm:e2e_request_latency_seconds", "Histogram of end-to-end request latency.", metrics.e2e
    )
    gauge(
        "hanode_sim_gpu_memory_usage_perc",
        "Simulated GPU memory usage, 0..1.",
        gpu_mem,
    )
    lines.append("")
    return "\n".join(lines).encode()
