"""Hugging Face Text Generation Inference.

TGI has no KV-usage gauge and no TTFT histogram (``tgi_request_queue_duration`` is queueing
time only), so those stay ``None``; its per-request mean time per token is a histogram. It sizes
its KV cache to fit the device at start, so device memory is no pressure figure either: TGI's
pressure is unknown and its queue and batch size (``tgi_queue_size``,
``tgi_batch_current_size``) carry the load. It answers 424 when generation itself fails (that
is where a CUDA OOM shows up), so 424 counts as an engine failure. The L2 probe uses the
Messages API (/v1/chat/completions), which every TGI that speaks OpenAI has.
"""

from __future__ import annotations

from hanode.engines.adapter import MetricNames, StandardAdapter

# "Input validation error: `inputs` tokens + `max_new_tokens` must be <= N. Given: ...",
# "Input validation error: `inputs` must have less than N tokens. Given: M".
CONTEXT_PATTERNS = ("`inputs` tokens + `max_new_tokens` must be <=", "`inputs` must have less than")


class TgiAdapter(StandardAdapter):
    name = "tgi"
    metric_names = MetricNames(
        running="tgi_batch_current_size",
        waiting="tgi_queue_size",
        tpot=("tgi_request_mean_time_per_token_duration",),
    )
    reserves_memory = True  # sizes its KV cache to fit the device at start
    context_patterns = CONTEXT_PATTERNS
    server_statuses = frozenset({424})
    chat_l2 = True
