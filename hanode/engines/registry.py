"""Engine name (as written in the config) -> adapter. Adapters are stateless, so shared."""

from __future__ import annotations

from collections.abc import Mapping

from hanode.engines.base import EngineAdapter
from hanode.engines.llamacpp import LlamaCppAdapter
from hanode.engines.openai import OpenAIAdapter
from hanode.engines.sglang import SglangAdapter
from hanode.engines.tgi import TgiAdapter
from hanode.engines.vllm import VllmAdapter

_ADAPTERS: Mapping[str, EngineAdapter] = {
    "vllm": VllmAdapter(),
    "sglang": SglangAdapter(),
    "tgi": TgiAdapter(),
    "llamacpp": LlamaCppAdapter(),
    "openai": OpenAIAdapter(),
}

ENGINE_NAMES: tuple[str, ...] = tuple(_ADAPTERS)


def get_adapter(engine_name: str) -> EngineAdapter:
    try:
        return _ADAPTERS[engine_name]
    except KeyError:
        known = ", ".join(ENGINE_NAMES)
        raise ValueError(f"unknown engine {engine_name!r}; expected one of: {known}") from None
