"""[[replicas]] l2_path: where the test prompt goes; a plain path or one line saying why not."""

from __future__ import annotations

import pytest

from hanode.config import parse_config
from tests.unit.settings.config_cases import SRC, one_error, with_replica


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/gateway/v1/completions", "/x"])
def test_plain_paths_are_kept(path: str) -> None:
    (spec,) = parse_config(with_replica(l2_path=path), SRC).replicas
    assert spec.l2_path == path


def test_absent_means_the_engines_default() -> None:
    (spec,) = parse_config(with_replica(), SRC).replicas
    assert spec.l2_path is None


@pytest.mark.parametrize(
    "bad", ["v1/completions", "http://other:1/v1/completions", "/v1/x?y=1", "/a b"]
)
def test_anything_else_is_one_line(bad: str) -> None:
    assert one_error(with_replica(l2_path=bad)).startswith(
        f"{SRC}: [[replicas]][0].l2_path: must be a path like /v1/chat/completions"
    )


def test_empty_is_refused_by_the_reader() -> None:
    assert (
        one_error(with_replica(l2_path="")) == f"{SRC}: [[replicas]][0].l2_path: must not be empty"
    )
