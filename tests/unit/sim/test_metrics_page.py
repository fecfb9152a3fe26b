from __future__ import annotations

from hanode.sim.metrics_page import E2E_BUCKETS, TTFT_BUCKETS, Histogram, SimMetrics, render


def test_histogram_cumulative() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert h.count == 4 and abs(h.sum - 3.65) < 1e-9


def test_render_has_vllm_names() -> None:
    m = SimMetrics()
    m.request_done(10, 16, "length")
    m.ttft.observe(0.02)
    m.e2e.observe(0.1)
    text = render('m"x', m, running=3, waiting=1, kv_usage=0.75, gpu_mem=0.675).decode()
    assert 'vllm:num_requests_running{model_name="m\\"x"} 3.0' in text
    assert 'vllm:num_requests_waiting{model_name="m\\"x"} 1.0' in text
    assert 'vllm:kv_cache_usage_perc{model_name="m\\"x"} 0.75' in text
    assert 'vllm:prompt_tokens_total{model_name="m\\"x"} 10.0' in text
    assert 'vllm:generation_tokens_total{model_name="m\\"x"} 16.0' in text
    assert 'vllm:request_success_total{model_name="m\\"x",finished_reason="length"} 1.0' in text
    assert "hanode_sim_gpu_memory_usage_perc" in text
    assert text.count("vllm:time_to_first_token_seconds_bucket") == len(TTFT_BUCKETS) + 1
    assert text.count("vllm:e2e_request_latency_seconds_bucket") == len(E2E_BUCKETS) + 1
    assert 'le="+Inf"} 1.0' in text
