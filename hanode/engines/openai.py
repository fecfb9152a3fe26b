"""Any other OpenAI-compatible server: no metrics page, and /v1/models as the only health
endpoint the API guarantees; the test prompt goes to /v1/chat/completions. Context-length
errors are recognised in every engine's wording plus OpenAI's own ``context_length_exceeded``
code, since we do not know what sits behind it.
"""

from __future__ import annotations

from hanode.engines import llamacpp, sglang, tgi, vllm
from hanode.engines.adapter import StandardAdapter

CONTEXT_PATTERNS = tuple(
    dict.fromkeys(
        (
            "context_length_exceeded",
            *vllm.CONTEXT_PATTERNS,
            *sglang.CONTEXT_PATTERNS,
            *tgi.CONTEXT_PATTERNS,
            *llamacpp.CONTEXT_PATTERNS,
        )
    )
)


class OpenAIAdapter(StandardAdapter):
    name = "openai"
    health_path = "/v1/models"
    metrics_path: str | None = None
    context_patterns = CONTEXT_PATTERNS
    # Chat completions is the endpoint every OpenAI-compatible server and gateway has; many
    # chat-only ones answer 404 on /v1/completions. [[replicas]] l2_path can say otherwise.
    chat_l2 = True
