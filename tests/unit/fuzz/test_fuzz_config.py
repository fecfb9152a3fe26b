"""Fuzzing the config parser: ``parse_config`` on arbitrary nested dicts (what any TOML file
decodes to) returns a Config or raises ConfigError, never anything else. Bounded, deterministic.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hanode.config import Config, ConfigError, parse_config
from tests.unit.settings.config_cases import minimal

SECTIONS = [
    "node", "router", "metrics", "health", "thresholds", "slo", "retry", "breaker", "cluster",
    "api", "models", "replicas", "bogus",
]  # fmt: skip
KEYS = [
    "name", "data_dir", "listen", "advertise_host", "api_keys", "api_key_file", "interval_s",
    "timeout_s", "raft_listen", "peers", "secret_file", "model", "url", "engine", "role",
    "max_attempts", "min_active", "redundancy", "gpu_index", "latency_ms", "kv_usage",
    "election_min_s", "election_max_s", "request_timeout_s", "max_body_bytes",
]  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["0.0.0.0:1", "127.0.0.1:8001", "http://127.0.0.1:8001", "[::1]:9", "vllm"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=10,
)
TABLE = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), VALUES, max_size=5)


def mutate(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for section, table in changes.items():
        if isinstance(out.get(section), dict) and isinstance(table, dict):
            out[section].update(table)
        else:
            out[section] = table
    return out


@settings(
    max_examples=500,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.booleans(),
    st.dictionaries(st.sampled_from(SECTIONS), TABLE | st.lists(TABLE, max_size=2) | VALUES),
)
@example(True, {"health": {"interval_s": 1e-9}})
@example(True, {"api": {"listen": "127.0.0.1:9200"}})
@example(True, {"router": {"listen": "0.0.0.0:99999"}})
def test_parse_config_returns_a_config_or_raises_config_error(
    from_minimal: bool, changes: dict[str, Any]
) -> None:
    data = mutate(minimal(), changes) if from_minimal else changes
    try:
        result = parse_config(data, "fuzz.toml")
    except ConfigError as exc:
        assert str(exc) and all(line.startswith("fuzz.toml") for line in exc.errors), exc.errors
        return
    assert isinstance(result, Config)
