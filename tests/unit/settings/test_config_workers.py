"""[router] workers: a count or "auto", 1 by default; anything else is one clear error."""

from __future__ import annotations

import pytest

from hanode.config import parse_config
from tests.unit.settings.config_cases import SRC, minimal, one_error, with_


def test_one_worker_by_default_and_counts_or_auto_as_given() -> None:
    assert parse_config(minimal(), SRC).router.workers == 1
    assert parse_config(with_("router", workers=4), SRC).router.workers == 4
    assert parse_config(with_("router", workers="auto"), SRC).router.workers == "auto"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (0, "must be >= 1 or 'auto', got 0"),
        (-2, "must be >= 1 or 'auto'"),
        ("many", "expected an integer or 'auto', got a string ('many')"),
        (True, "expected an integer or 'auto', got a boolean"),
        (2.5, "expected an integer or 'auto'"),
    ],
)
def test_bad_values_name_the_key(value: object, says: str) -> None:
    line = one_error(with_("router", workers=value))
    assert "[router].workers" in line and says in line, line
