"""What the admission gate is configured with (built by the daemon from [[classes]],
[[api_keys]], [router] and [[models]]; docs/degradation.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hanode.policies.classes import DEFAULT_CLASS, KeyGrant, RequestClass, merge_classes
from hanode.policies.degradation import DegradeConfig


@dataclass(frozen=True, slots=True)
class ModelAdmission:
    max_concurrency: int | None = None  # per replica; None: the router's default
    fallback: tuple[str, ...] = ()
    degrade: DegradeConfig = field(default_factory=DegradeConfig)


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    enabled: bool = True
    max_concurrency: int = 32  # per replica, when neither the model nor the engine says
    default_class: str = DEFAULT_CLASS
    classes: Mapping[str, RequestClass] = field(default_factory=lambda: merge_classes(()))
    # Bearer token -> grant, and SHA-256 hex of a token -> grant.
    plain_keys: Mapping[bytes, KeyGrant] = field(default_factory=dict)
    hashed_keys: Mapping[str, KeyGrant] = field(default_factory=dict)
    models: Mapping[str, ModelAdmission] = field(default_factory=dict)

    def model(self, name: str) -> ModelAdmission:
        return self.models.get(name) or _DEFAULT_MODEL


_DEFAULT_MODEL = ModelAdmission()
