"""Issue 16, finding 13: ``interval_s = 1e-9`` was accepted (a probe loop at 65% CPU); every
interval and timeout has a lower bound of 0.05 s."""

from __future__ import annotations

import pytest

from hanode.config import parse_config
from tests.unit.settings.config_cases import SRC, one_error, with_

PERIODS = [
    ("health", "interval_s"),
    ("health", "timeout_s"),
    ("health", "l2_interval_s"),
    ("health", "l2_timeout_s"),
    ("retry", "per_try_timeout_s"),
    ("router", "connect_timeout_s"),
]


@pytest.mark.parametrize(("section", "key"), PERIODS)
def test_intervals_and_timeouts_have_a_sane_lower_bound(section: str, key: str) -> None:
    err = one_error(with_(section, **{key: 1e-9}))
    assert err.startswith(f"{SRC}: [{section}].{key}: ") and "0.05" in err, err
    parse_config(with_(section, **{key: 0.05}), SRC)  # the bound itself is fine
