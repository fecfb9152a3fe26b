"""llama.cpp ``llama-server``.

/metrics exists only when started with ``--metrics``; ``kv_cache_usage_ratio`` is gone from
newer builds, so KV usage is ``None`` there. /health answers 503 while the model loads.
"""

from __future__ import annotations

from hanode.engines.adapter import MetricNames, StandardAdapter

# {"error": {"code": 400, "type": "exceed_context_size_error",
#            "message": "request (N tokens) exceeds the available context size (M tokens), ..."}}
CONTEXT_PATTERNS = ("exceed_context_size_error", "exceeds the available context size")


class LlamaCppAdapter(StandardAdapter):
    name = "llamacpp"
    metric_names = MetricNames(
        running="llamacpp:requests_processing",
        waiting="llamacpp:requests_deferred",
        kv_usage=("llamacpp:kv_cache_usage_ratio",),
        # newer builds: time per token from the generation counters (no histograms)
        tpot_totals=("llamacpp:tokens_predicted_seconds_total", "llamacpp:tokens_predicted_total"),
    )
    context_patterns = CONTEXT_PATTERNS
