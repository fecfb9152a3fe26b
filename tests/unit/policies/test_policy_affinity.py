"""Session affinity by weighted rendezvous hashing (pure, property-based)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.policies.affinity import ranking, session_key, step_weight

NAMES = st.lists(st.text("abcdef0123", min_size=1, max_size=6), min_size=1, max_size=8, unique=True)
KEYS = st.text(min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(names=NAMES, key=KEYS, data=st.data())
def test_same_choice_on_every_router_whatever_the_order(
    names: list[str], key: str, data: st.DataObject
) -> None:
    """No coordination: the ranking depends on the set of (name, weight), never on order."""
    weights = data.draw(st.lists(st.floats(0.05, 1.0), min_size=len(names), max_size=len(names)))
    order = ranking(names, weights, key)
    perm = data.draw(st.permutations(range(len(names))))
    assert ranking([names[i] for i in perm], [weights[i] for i in perm], key) == order
    assert sorted(order) == sorted(names)


@settings(max_examples=200, deadline=None)
@given(names=NAMES.filter(lambda n: len(n) >= 2), key=KEYS, data=st.data())
def test_a_replica_leaving_moves_only_its_sessions_each_to_its_next(
    names: list[str], key: str, data: st.DataObject
) -> None:
    """The session stays while its replica is routable; when it leaves, the session moves to
    the next replica of its ranking (once, to one place), and others' sessions do not move."""
    weights = [1.0] * len(names)
    order = ranking(names, weights, key)
    gone = data.draw(st.sampled_from(names))
    rest = [n for n in names if n != gone]
    after = ranking(rest, [1.0] * len(rest), key)
    assert after == [n for n in order if n != gone]  # the same order, without the one gone


def test_weights_shape_the_shares_and_small_changes_move_nothing() -> None:
    keys = [f"session-{i}" for i in range(4000)]
    full = Counter(ranking(["a", "b"], [1.0, 1.0], k)[0] for k in keys)
    half = Counter(ranking(["a", "b"], [1.0, 0.5], k)[0] for k in keys)
    assert 0.45 < full["b"] / 4000 < 0.55
    assert 0.28 < half["b"] / 4000 < 0.39  # 1/3 expected at half weight
    # A weight that moves within a quarter step moves no session.
    assert [ranking(["a", "b"], [1.0, 0.9], k) for k in keys[:500]] == [
        ranking(["a", "b"], [1.0, 1.05], k) for k in keys[:500]
    ]
    assert ranking(["a", "b"], [1.0, 0.0], "x") == ["a"]


def test_step_weight_and_session_key() -> None:
    assert step_weight(0.0) == 0.0 and step_weight(0.01) == 0.25 and step_weight(0.9) == 1.0
    assert session_key(b" abc ", "u1") == "s:abc"
    assert session_key(None, "u1") == "u:u1"
    assert session_key(b"", None) is None and session_key(None, 5) is None
