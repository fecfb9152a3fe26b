"""Shared pieces of the config tests: a minimal valid config and error collectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hanode.config import (
    ConfigError,
    parse_config,
)

REPO = Path(__file__).resolve().parents[3]
SRC = "hanode.toml"


def minimal() -> dict[str, Any]:
    return {
        "node": {"name": "n1", "data_dir": "/var/lib/hanode"},
        "router": {"listen": "0.0.0.0:8080"},
        "metrics": {"listen": "127.0.0.1:9100"},
        "replicas": [{"name": "r1", "model": "m", "url": "http://127.0.0.1:8001"}],
    }


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as exc_info:
        parse_config(data, SRC)
    lines = str(exc_info.value).splitlines()
    assert list(exc_info.value.errors) == lines
    return lines


def one_error(data: dict[str, Any]) -> str:
    lines = errors_of(data)
    assert len(lines) == 1, lines
    return lines[0]


def with_(section: str, **values: Any) -> dict[str, Any]:
    data = minimal()
    data.setdefault(section, {}).update(values)
    return data


def with_replica(**values: Any) -> dict[str, Any]:
    data = minimal()
    data["replicas"][0].update(values)
    return data
