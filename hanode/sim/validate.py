"""Parse and check /v1/completions and /v1/chat/completions bodies (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from hanode.sim.shapes import bad_request, context_error, model_not_found
from hanode.sim.textgen import chat_context, chat_tokens, completion_context, count_words

DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True, slots=True)
class GenRequest:
    """A valid generation request. One entry of ``prompts``/``prompt_tokens`` per prompt."""

    chat: bool
    stream: bool
    include_usage: bool
    prompts: tuple[bytes, ...]  # canonical prompt bytes: the key of deterministic text
    prompt_tokens: tuple[int, ...]
    max_tokens: int
    n: int
    seed: int | None
    deterministic: bool
    # Per prompt: the words a deterministic generation continues, and whether its first word
    # needs a leading space (see hanode.sim.textgen.next_words).
    contexts: tuple[tuple[str, ...], ...] = ()
    leads: tuple[bool, ...] = ()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _completion_prompts(prompt: Any) -> list[tuple[bytes, int]]:
    if isinstance(prompt, str):
        return [(prompt.encode(), count_words(prompt))]
    if isinstance(prompt, list) and prompt:
        if all(_is_int(t) for t in prompt):
            return [(orjson.dumps(prompt), len(prompt))]
        if all(isinstance(p, str) for p in prompt):
            return [(p.encode(), count_words(p)) for p in prompt]
        if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
            return [(orjson.dumps(p), len(p)) for p in prompt]
    raise bad_request(
        "prompt must be a string, a list of strings, a list of token ids, "
        "or a list of lists of token ids"
    )


def _chat_prompt(messages: Any) -> tuple[bytes, int]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad_request("each message must be an object with a string 'role'")
    return orjson.dumps(messages, option=orjson.OPT_SORT_KEYS), chat_tokens(messages)


def parse_generation(body: bytes, chat: bool, model: str, max_model_len: int) -> GenRequest:
    """Raise :class:`ApiError` (400/404) on anything vLLM would refuse."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    requested = data.get("model")
    if requested is not None and requested != model:
        raise model_not_found(str(requested))

    if chat:
        if "messages" not in data:
            raise bad_request("Field required: messages")
        prompts = [_chat_prompt(data["messages"])]
        contexts = [_chat_continuation(data)]
    else:
        if "prompt" not in data:
            raise bad_request("Field required: prompt")
        prompts = _completion_prompts(data["prompt"])
        contexts = _completion_contexts(data["prompt"])

    max_tokens = data.get("max_tokens")
    if max_tokens is None and chat:
        max_tokens = data.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not _is_int(max_tokens) or max_tokens < 1:
        raise bad_request(f"max_tokens must be at least 1, got {max_tokens}.")

    n = data.get("n", 1)
    if n is None:
        n = 1
    if not _is_int(n) or n < 1:
        raise bad_request(f"n must be at least 1, got {n}.")

    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("stream must be a boolean")
    if stream and (n > 1 or len(prompts) > 1):
        raise bad_request("hanode sim streams one choice only: use n=1 and a single prompt")

    include_usage = False
    options = data.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request("stream_options must be an object")
        if not stream:
            raise bad_request("Stream options can only be defined when `stream=True`.")
        include_usage = options.get("include_usage") is True

    seed = data.get("seed")
    if seed is not None and not _is_int(seed):
        raise bad_request("seed must be an integer")
    temperature = data.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature < 0
    ):
        raise bad_request("temperature must be a non-negative number")

    for _, tokens in prompts:
        if tokens + max_tokens > max_model_len:
            raise context_error(max_model_len, tokens, max_tokens)

    return GenRequest(
        chat=chat,
        stream=stream,
        include_usage=include_usage,
        prompts=tuple(p for p, _ in prompts),
        prompt_tokens=tuple(t for _, t in prompts),
        max_tokens=max_tokens,
        n=n,
        seed=seed,
        deterministic=seed is not None or temperature == 0,
        contexts=tuple(c for c, _ in contexts),
        leads=tuple(lead for _, lead in contexts),
    )


def _completion_contexts(prompt: Any) -> list[tuple[tuple[str, ...], bool]]:
    """Context words per prompt (already checked by _completion_prompts)."""
    if isinstance(prompt, str):
        return [completion_context(prompt)]
    if all(isinstance(p, str) for p in prompt):
        return [completion_context(p) for p in prompt]
    if all(_is_int(t) for t in prompt):
        return [(tuple(f"#{t}" for t in prompt), False)]
    return [(tuple(f"#{t}" for t in p), False) for p in prompt]


def _chat_continuation(data: dict[str, Any]) -> tuple[tuple[str, ...], bool]:
    """vLLM's rule: ``continue_final_message`` extends a final assistant message and needs
    ``add_generation_prompt: false`` (it defaults to true)."""
    messages = data["messages"]
    cont = data.get("continue_final_message") is True
    if cont:
        if data.get("add_generation_prompt", True) is not False:
            raise bad_request(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            )
        if messages[-1].get("role") != "assistant":
            raise bad_request("continue_final_message needs a final assistant message")
    return chat_context(messages, cont)
