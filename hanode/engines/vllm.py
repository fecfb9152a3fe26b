"""vLLM (v0 and v1 engines).

The KV gauge was renamed ``gpu_cache_usage_perc`` -> ``kv_cache_usage_perc`` in the v1 engine;
both are read, new name first. vLLM takes ``--gpu-memory-utilization`` (0.9 by default) of the
device at start, and says so in ``vllm:cache_config_info``'s ``gpu_memory_utilization`` label:
its memory pressure is the KV use inside that reservation. vLLM does not report device memory;
hanode's simulator exports ``hanode_sim_gpu_memory_usage_perc`` in its place, so that the
growth signal can be exercised without NVML.
"""

from __future__ import annotations

from hanode.engines.adapter import MetricNames, StandardAdapter

# "This model's maximum context length is N tokens. However, you requested M tokens ...",
# "'max_tokens' ... is too large: N. This model's maximum context length is ...",
# "The decoder prompt (length N) is longer than the maximum model length of M.",
# "Input prompt (N tokens) is too long and exceeds limit of M".
CONTEXT_PATTERNS = ("maximum context length", "maximum model length", "is too long")


class VllmAdapter(StandardAdapter):
    name = "vllm"
    metric_names = MetricNames(
        running="vllm:num_requests_running",
        waiting="vllm:num_requests_waiting",
        kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        gpu_mem=("hanode_sim_gpu_memory_usage_perc",),
        ttft="vllm:time_to_first_token_seconds",
        # per-request mean TPOT (newer v1), then the per-token histograms (v0 / v1 names)
        tpot=(
            "vllm:request_time_per_output_token_seconds",
            "vllm:time_per_output_token_seconds",
            "vllm:inter_token_latency_seconds",
        ),
        reservation=("vllm:cache_config_info", "gpu_memory_utilization"),
        sleep_state="vllm:engine_sleep_state",
    )
    reserves_memory = True
    context_patterns = CONTEXT_PATTERNS
