"""SGLang. ``token_usage`` is the fraction of KV-cache token slots in use, i.e. KV usage."""

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
    )
    context_patterns = CONTEXT_PATTERNS
