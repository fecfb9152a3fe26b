from __future__ import annotations

import random

import pytest

from hanode.sim.faults import FAULT_KINDS, NO_FAULT, FaultRates, validate_rates


def test_no_rates_never_faults_and_draws_nothing() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    rates = FaultRates(rng)
    assert all(rates.decide() is NO_FAULT for _ in range(100))
    assert rng.getstate() == state


def test_rate_one_always_and_rate_zero_never() -> None:
    rates = FaultRates(random.Random(2), {"oom": 1.0, "busy": 0.0})
    for _ in range(50):
        d = rates.decide()
        assert d.terminal == "oom"
        assert not d.empty and not d.slow and not d.stream_death


def test_rates_are_roughly_honoured_and_reproducible() -> None:
    def draws(seed: int) -> list[str | None]:
        rates = FaultRates(random.Random(seed), {"ratelimit": 0.3})
        return [rates.decide().terminal for _ in range(2000)]

    a = draws(7)
    assert a == draws(7)
    assert a != draws(8)
    assert 0.25 < a.count("ratelimit") / len(a) < 0.35


def test_terminal_precedence_and_modifiers() -> None:
    rates = FaultRates(random.Random(3), {k: 1.0 for k in FAULT_KINDS})
    d = rates.decide()
    assert d.terminal == "crash"
    assert d.stream_death and d.empty and d.slow
    rates.update({"crash": 0.0, "hang": 0.0})
    assert rates.decide().terminal == "oom"
    rates.clear()
    rates.update({"slow": 1.0, "empty": 1.0})
    d = rates.decide()
    assert d.terminal is None and d.slow and d.empty and d.any


def test_as_dict_lists_every_kind() -> None:
    rates = FaultRates(random.Random(0), {"slow": 0.5})
    assert rates.as_dict() == {k: (0.5 if k == "slow" else 0.0) for k in FAULT_KINDS}


@pytest.mark.parametrize(
    "bad", [{"nope": 0.1}, {"oom": 1.5}, {"oom": -0.1}, {"oom": "x"}, {"oom": True}]
)
def test_validate_rates_refuses(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        validate_rates(bad)
