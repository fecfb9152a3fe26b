"""The schema: defaults are declared once and reach every policy object; mistakes in the schema
itself are caught when it is declared."""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass
from typing import Any

import pytest

from hanode.config import parse_config
from hanode.daemon import _weight_thresholds, router_settings, server_limits
from hanode.health.checker import GpuMarks, HealthSettings
from hanode.http.server import ServerLimits
from hanode.policies.breaker import BreakerConfig
from hanode.policies.l3 import L3Thresholds
from hanode.policies.retry import RetryPolicy
from hanode.policies.weights import WeightThresholds
from hanode.pool.lifecycle import ActuatorSpec
from hanode.pool.replica import ReplicaSpec
from hanode.router.frontdoor import RouterSettings
from hanode.settings.schema import SchemaError, Setting, bind, build, setting, settings, specs
from hanode.settings.sections import (
    SECTIONS,
    BreakerSettings,
    HealthConfig,
    RetryConfig,
    ThresholdsConfig,
)


def minimal() -> dict[str, Any]:
    return {
        "node": {"name": "n1", "data_dir": "/var/lib/hanode"},
        "router": {"listen": "0.0.0.0:8080"},
        "metrics": {"listen": "127.0.0.1:9100"},
        "replicas": [{"name": "r1", "model": "m", "url": "http://127.0.0.1:8001"}],
    }


def all_settings() -> list[tuple[type[Any], Setting]]:
    return [(section.cls, s) for section in SECTIONS for s in specs(section.cls)]


# -- one default, everywhere ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "s"), all_settings(), ids=lambda v: getattr(v, "key", getattr(v, "__name__", ""))
)
def test_every_target_default_is_the_settings_default(cls: type[Any], s: Setting) -> None:
    for b in s.binds:
        f = next(f for f in dataclasses.fields(b.target) if f.name == b.field)
        if f.default is not dataclasses.MISSING:
            scaled = f.default if b.scale == 1.0 else f.default * b.scale
            assert scaled == s.default, (b.target.__name__, b.field)
        elif f.default_factory is not dataclasses.MISSING:
            assert f.default_factory() == s.default, (b.target.__name__, b.field)


def test_per_try_timeout_is_the_same_everywhere() -> None:
    cfg = parse_config(minimal(), "t.toml")
    values = {
        RetryPolicy().per_try_timeout_s,
        RouterSettings().retry.per_try_timeout_s,
        RetryConfig().per_try_timeout_s,
        router_settings(cfg).retry.per_try_timeout_s,
    }
    assert values == {60.0}


def test_a_config_of_defaults_builds_the_policy_defaults() -> None:
    cfg = parse_config(minimal(), "t.toml")
    assert router_settings(cfg) == RouterSettings()
    assert router_settings(cfg).breaker == BreakerConfig()
    assert server_limits(cfg) == ServerLimits()
    assert _weight_thresholds(cfg) == WeightThresholds()
    assert build(L3Thresholds, cfg.thresholds) == L3Thresholds()
    assert build(HealthSettings, cfg.health) == HealthSettings()
    t = cfg.thresholds
    marks = build(GpuMarks, t)
    assert marks == GpuMarks(t.gpu_mem_prepare, t.gpu_mem_reduce, t.gpu_mem_remove, 0.90)


def _changed(s: Setting) -> Any:
    """A valid value different from the default, to see it arrive at every target."""
    hint, value = s.hint, s.default
    if s.choices:
        return next(c for c in s.choices if c != value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return next(m for m in hint if m is not value)
    if hint is str:
        return value + "x"
    if hint == tuple[str, ...]:
        return ("k1", "k2")
    if hint is bool:
        return not value
    if hint is int:
        return value + 1
    if hint is float:
        return value / 2 if s.le is not None else value + 1.5
    if hint == int | None:
        return 3
    if hint == str | None:
        return "/changed"
    raise AssertionError(f"no changed value for {s.key}: {hint}")


def _changed_instance(cls: type[Any]) -> Any:
    values = {s.key: _changed(s) for s in specs(cls) if s.binds and not s.required}
    required = {s.key: f"{s.key}-1" for s in specs(cls) if s.required}  # not validated here
    return cls(**values, **required)


@pytest.mark.parametrize(
    "cls",
    sorted(
        {section.cls for section in SECTIONS if any(s.binds for s in specs(section.cls))},
        key=lambda c: c.__name__,
    ),
)
def test_every_bound_value_reaches_its_target(cls: type[Any]) -> None:
    source = _changed_instance(cls)
    for s in specs(cls):
        for b in s.binds:
            extra = {"node": "n1"} if b.target is ReplicaSpec else {}
            if b.target is ActuatorSpec:
                extra = {"name": "r1"}  # given by the config loader from the entry's name
            built = build(b.target, source, **extra)
            assert getattr(built, b.field) == pytest.approx(b.to_target(getattr(source, s.key)))
            assert getattr(built, b.field) != _field_default(b.target, b.field) or s.required


def _field_default(target: type[Any], name: str) -> Any:
    f = next(f for f in dataclasses.fields(target) if f.name == name)
    return None if f.default is dataclasses.MISSING else f.default


def test_parsed_values_reach_the_router() -> None:
    data = minimal()
    data["retry"] = {"per_try_timeout_s": 7.5, "backoff_base_s": 0.5, "budget_ratio": 0.5}
    data["slo"] = {"latency_ms": 1500}
    data["breaker"] = {"open_base_s": 9.0, "max_ejection_percent": 10}
    data["router"].update(max_tokens_limit=99, max_n=2, api_keys=["k" * 16])
    rs = router_settings(parse_config(data, "t.toml"))
    assert (rs.retry.per_try_timeout_s, rs.retry.base_backoff_s) == (7.5, 0.5)
    assert rs.retry_budget_ratio == 0.5
    assert rs.slo_latency_s == 1.5
    assert rs.breaker.open_base_s == 9.0
    assert (rs.limits.max_tokens, rs.limits.max_n, rs.api_keys) == (99, 2, ("k" * 16,))


def test_gpu_thresholds_feed_every_object_from_one_key() -> None:
    data = minimal()
    data["thresholds"] = {"gpu_mem_reduce": 0.85}
    cfg = parse_config(data, "t.toml")
    assert _weight_thresholds(cfg).gpu_mem_reduce == 0.85
    assert build(L3Thresholds, cfg.thresholds).gpu_mem == 0.85
    assert build(GpuMarks, cfg.thresholds).reduce == 0.85


def test_build_refuses_a_field_given_twice() -> None:
    with pytest.raises(SchemaError, match="given by settings and by extra"):
        build(RetryPolicy, RetryConfig(), max_attempts=2)


def test_section_fields_are_all_declared() -> None:
    for section in SECTIONS:
        hints = typing.get_type_hints(section.cls)
        assert [s.key for s in specs(section.cls)] == list(hints)
    # "actuators" is built from [[replicas]] (its actuator keys), not a section of its own.
    assert {s.name for s in SECTIONS} | {"source", "actuators"} == {
        f.name for f in dataclasses.fields(__import__("hanode.config").config.Config)
    }


# -- schema mistakes are caught at declaration ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    a: float = 1.0
    b: float = 2.0
    n: int = 3
    free: float = dataclasses.field(default=0.0)
    bare: float = dataclasses.field(default=0.0)


def test_repeating_a_targets_default_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"the default is declared by _Target\.a"):

        @settings
        class _S:
            a: float = setting("doc", default=1.0, to=_Target)


def test_targets_that_disagree_are_refused() -> None:
    with pytest.raises(SchemaError, match="targets disagree"):

        @settings
        class _S:
            a: float = setting("doc", to=(_Target, bind(_Target, "b")))


def test_a_type_that_does_not_fit_the_target_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"does not fit _Target\.n"):

        @settings
        class _S:
            n: float = setting("doc", to=_Target)


def test_a_setting_needs_a_default_or_required() -> None:
    with pytest.raises(SchemaError, match="no default"):

        @settings
        class _S:
            x: float = setting("doc")


def test_every_field_must_be_declared() -> None:
    with pytest.raises(SchemaError, match="declare"):

        @settings
        class _S:
            x: float = 1.0


def test_bounds_must_fit_the_type() -> None:
    with pytest.raises(SchemaError, match="bounds do not apply"):

        @settings
        class _S:
            x: str = setting("doc", default="a", gt=0)


def test_units_are_converted_both_ways() -> None:
    @dataclass(frozen=True, slots=True)
    @settings
    class _S:
        a_ms: float = setting("doc", gt=0, to=bind(_Target, "a", scale=1000.0))

    assert _S().a_ms == 1000.0
    assert build(_Target, _S(a_ms=250.0)).a == 0.25


def test_breaker_settings_cover_every_configurable_breaker_field() -> None:
    bound = {b.field for s in specs(BreakerSettings) for b in s.binds}
    internal = {"half_open_successes"}  # not an operator's knob
    assert bound | internal == {f.name for f in dataclasses.fields(BreakerConfig)}
    health_bound = {
        s.key for s in specs(HealthConfig) if any(b.target is HealthSettings for b in s.binds)
    }
    assert health_bound == {f.name for f in dataclasses.fields(HealthSettings)}
    assert {b.field for s in specs(ThresholdsConfig) for b in s.binds if b.target is GpuMarks} == {
        "prepare",
        "reduce",
        "remove",
        "recover",
    }
