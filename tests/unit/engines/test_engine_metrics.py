"""parse_metrics against recorded /metrics pages of each engine."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hanode.engines.base import EngineMetrics
from hanode.engines.prom_text import histogram_quantile
from hanode.engines.registry import get_adapter

FIXTURES = Path(__file__).parent / "fixtures"


def metrics(engine: str, fixture: str) -> EngineMetrics:
    return get_adapter(engine).parse_metrics((FIXTURES / fixture).read_text())


def test_vllm_v1() -> None:
    m = metrics("vllm", "vllm_v1_metrics.txt")
    assert (m.running, m.waiting, m.kv_usage, m.gpu_mem_frac) == (7.0, 2.0, 0.4375, None)
    assert m.ttft_buckets is not None
    assert m.ttft_buckets[0] == (0.001, 0.0)
    assert m.ttft_buckets[-1] == (math.inf, 124.0)
    # 62nd of 124 observations: between the 0.06 (58) and 0.08 (80) bounds
    p50 = histogram_quantile(None, m.ttft_buckets, 0.5)
    assert p50 == pytest.approx(0.06 + 0.02 * (62 - 58) / (80 - 58))


def test_vllm_v0_old_kv_name() -> None:
    m = metrics("vllm", "vllm_v0_metrics.txt")
    assert (m.running, m.waiting, m.kv_usage) == (4.0, 0.0, 0.0625)
    assert m.ttft_buckets == ((0.02, 0.0), (0.04, 5.0), (0.1, 9.0), (math.inf, 10.0))


def test_vllm_prefers_new_kv_name_over_old() -> None:
    page = "vllm:gpu_cache_usage_perc 0.9\nvllm:kv_cache_usage_perc 0.3\n"
    assert get_adapter("vllm").parse_metrics(page).kv_usage == 0.3


def test_hanode_simulator_reports_gpu_memory() -> None:
    m = metrics("vllm", "hanode_sim_metrics.txt")
    assert (m.running, m.waiting, m.kv_usage, m.gpu_mem_frac) == (1.0, 0.0, 0.12, 0.89)
    assert m.ttft_buckets is None


def test_sglang() -> None:
    m = metrics("sglang", "sglang_metrics.txt")
    assert (m.running, m.waiting, m.kv_usage, m.gpu_mem_frac) == (5.0, 3.0, 0.28, None)
    assert m.ttft_buckets is not None
    assert histogram_quantile(None, m.ttft_buckets, 0.5) == pytest.approx(0.18)


def test_tgi_has_no_kv_or_ttft_but_a_time_per_token() -> None:
    m = metrics("tgi", "tgi_metrics.txt")
    assert m == EngineMetrics(
        running=16.0, waiting=6.0, tpot_buckets=((0.01, 10.0), (math.inf, 1840.0))
    )


def test_vllm_v1_reports_its_reservation() -> None:
    """vllm_v1_metrics.txt's cache_config_info carries gpu_memory_utilization="0.9"."""
    assert metrics("vllm", "vllm_v1_metrics.txt").reserved_frac == 0.9
    assert metrics("vllm", "vllm_v0_metrics.txt").reserved_frac is None


def test_vllm_tpot_histogram() -> None:
    m = metrics("vllm", "vllm_v1_reserving_metrics.txt")
    assert (m.kv_usage, m.reserved_frac, m.running) == (0.62, 0.9, 31.0)
    assert m.tpot_buckets is not None
    # 12,500th of 25,000 per-token observations: between 0.025 (9,000) and 0.05 (24,000)
    p50 = histogram_quantile(None, m.tpot_buckets, 0.5)
    assert p50 == pytest.approx(0.025 + 0.025 * (12500 - 9000) / (24000 - 9000))


def test_sglang_public_docs_page() -> None:
    """SGLang's own example page: token_usage is the pressure, TPOT and TTFT histograms."""
    m = metrics("sglang", "sglang_docs_metrics.txt")
    assert (m.running, m.waiting, m.kv_usage, m.reserved_frac) == (162.0, 2826.0, 0.28, None)
    assert m.tpot_buckets is not None and m.ttft_buckets is not None
    rank = 7.400757e06 / 2
    expected = 0.075 + 0.025 * (rank - 433413.0) / (4.950195e06 - 433413.0)
    assert histogram_quantile(None, m.tpot_buckets, 0.5) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("engine", "reserves"),
    [("vllm", True), ("sglang", True), ("tgi", True), ("llamacpp", False), ("openai", False)],
)
def test_which_engines_reserve_memory(engine: str, reserves: bool) -> None:
    assert get_adapter(engine).reserves_memory is reserves


def test_reservation_label_that_is_not_a_fraction_is_ignored() -> None:
    page = 'vllm:cache_config_info{gpu_memory_utilization="lots"} 1\n'
    assert get_adapter("vllm").parse_metrics(page).reserved_frac is None


def test_llamacpp_old_and_new_builds() -> None:
    old = metrics("llamacpp", "llamacpp_metrics.txt")
    assert (old.running, old.waiting, old.kv_usage) == (2.0, 1.0, 0.18212890625)
    new = metrics("llamacpp", "llamacpp_new_metrics.txt")
    assert (new.running, new.waiting, new.kv_usage) == (2.0, 1.0, None)


@pytest.mark.parametrize("fixture", ["vllm_v1_metrics.txt", "sglang_metrics.txt"])
def test_generic_openai_reads_nothing(fixture: str) -> None:
    assert metrics("openai", fixture) == EngineMetrics()


def test_data_parallel_counts_sum_and_fractions_take_max() -> None:
    page = """\
vllm:num_requests_running{engine="0",model_name="m"} 3
vllm:num_requests_running{engine="1",model_name="m"} 4
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.7
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 1
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.1",model_name="m"} 5
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",model_name="m"} 5
"""
    m = get_adapter("vllm").parse_metrics(page)
    assert m.running == 7.0
    assert m.kv_usage == 0.7
    assert m.ttft_buckets == ((0.1, 6.0), (math.inf, 7.0))


def test_out_of_range_values_are_clamped_or_dropped() -> None:
    page = (
        "vllm:num_requests_running NaN\n"
        "vllm:num_requests_waiting -1\n"
        "vllm:kv_cache_usage_perc 1.0000002\n"
        "hanode_sim_gpu_memory_usage_perc +Inf\n"
    )
    m = get_adapter("vllm").parse_metrics(page)
    assert (m.running, m.waiting, m.kv_usage, m.gpu_mem_frac) == (None, 0.0, 1.0, None)


@pytest.mark.parametrize("engine", ["vllm", "sglang", "tgi", "llamacpp", "openai"])
def test_garbage_page_gives_unknowns(engine: str) -> None:
    garbage = "<html><body>404 page not found</body></html>\n\x00\xff{{{"
    assert get_adapter(engine).parse_metrics(garbage) == EngineMetrics()


def test_vllm_sleep_state() -> None:
    def page(level: int) -> str:
        states = ("awake", "weights_offloaded", "discard_all")
        return "".join(
            f'vllm:engine_sleep_state{{engine="0",sleep_state="{s}"}} {int(i == level)}\n'
            for i, s in enumerate(states)
        )

    adapter = get_adapter("vllm")
    assert adapter.parse_metrics(page(0)).sleeping is False
    assert adapter.parse_metrics(page(1)).sleeping is True
    assert adapter.parse_metrics(page(2)).sleeping is True
    assert adapter.parse_metrics("vllm:num_requests_running 1\n").sleeping is None


def test_llamacpp_generation_counters_for_tpot() -> None:
    """Newer llama-server builds: no histograms, but seconds and tokens generated."""
    m = metrics("llamacpp", "llamacpp_b0c1e570_metrics.txt")  # recorded: nothing generated yet
    assert m.tpot_totals == (0.0, 0.0) and m.tpot_buckets is None
    page = "llamacpp:tokens_predicted_seconds_total 1.5\nllamacpp:tokens_predicted_total 300\n"
    assert get_adapter("llamacpp").parse_metrics(page).tpot_totals == (1.5, 300.0)
    assert metrics("llamacpp", "llamacpp_metrics.txt").tpot_totals is None  # older builds
