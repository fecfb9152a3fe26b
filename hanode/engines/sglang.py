"""SGLang. ``token_usage`` is the fraction of KV-cache token slots in use, i.e. KV usage.

SGLang takes ``--mem-fraction-static`` of the device at start (it does not export the figure),
so its memory pressure is ``token_usage``.
"""

from __future__ import annotations

from hanode.engines.adapter import MetricNames, StandardAdapter

# "The input (N tokens) is longer than the model's context length (M tokens).",
# newer: "Requested token count exceeds the model's maximum context length of M tokens. ..."
CONTEXT_PATTERNS = ("is longer than the model's context length", "maximum context length")


class SglangAdapter(StandardAdapter):
    name = "sglang"
    metric_names = MetricNames(
        running="sglang:num_running_reqs",
        waiting="sglang:num_queue_reqs",
        kv_usage=("sglang:token_usage",),
        ttft="sglang:time_to_first_token_seconds",
        tpot=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    )
    reserves_memory = True  # --mem-fraction-static
    context_patterns = CONTEXT_PATTERNS
