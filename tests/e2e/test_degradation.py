"""Degradation policies and fallback models end to end (issue 12), through the openai client:
under pressure the max_tokens cap, the temperature cap and the prompt limit engage (events,
the x-hanode-degraded header, 400 context_length_exceeded), and release once the pressure is
gone; with every replica of the primary gone a class that allows fallback is answered by the
fallback model (its own name in `model`), one that does not gets 503 with Retry-After."""

from __future__ import annotations

import threading
from pathlib import Path

import openai

from tests.e2e.degradation_support import BATCH_KEY, INTERACTIVE_KEY, Flood, call, node

BIG = "big"
SMALL = "small"
SIM = ("--capacity", "8", "--ttft-ms", "400", "--tpot-ms", "5", "--reserve-gpu", "0")
POLICIES = ("max_tokens", "prompt", "temperature")


def _wait(cond: object, what: str, tries: int = 400) -> None:
    """Poll (bounded: tries x 50 ms) a condition the node moves on by itself."""
    for _ in range(tries):
        if cond():  # type: ignore[operator]
            return
        threading.Event().wait(0.05)
    raise AssertionError(what)


def test_each_policy_engages_under_pressure_and_releases_after(tmp_path: Path) -> None:
    classes = [
        {
            "name": "batch",
            "priority": 2,
            "queue_timeout_s": 30.0,
            "max_queue": 64,
            "degrade": True,
            "fallback": False,
        },
    ]
    model = {
        "name": BIG,
        "max_concurrency": 2,
        "degrade_max_tokens": 16,
        "degrade_max_tokens_floor": 6,
        "degrade_temperature": 0.1,
        "degrade_max_prompt_tokens": 40,
        "degrade_max_tokens_engage": 1.5,
        "degrade_max_tokens_release": 1.0,
        "degrade_temperature_engage": 2.0,
        "degrade_temperature_release": 1.0,
        "degrade_prompt_engage": 2.5,
        "degrade_prompt_release": 1.0,
    }
    with node(tmp_path, {BIG: SIM}, classes=classes, models=[model]) as n:
        batch = n.client(BATCH_KEY, timeout=60.0)
        with batch:
            calm = call(batch, BIG, max_tokens=50, temperature=1.0)
            assert calm.status == 200 and calm.degraded is None
            # 8 batch clients for 2 places: pressure (2 + 6 waiting) / 2 = 4.
            with Flood(lambda: call(batch, BIG, max_tokens=4), threads=8) as flood:
                _wait(
                    lambda: (
                        {
                            e["fields"]["policy"]
                            for e in n.events("degradation")
                            if e["fields"]["engaged"]
                        }
                        >= set(POLICIES)
                    ),
                    "every policy engaged",
                )
                probe = call(batch, BIG, max_tokens=500, temperature=1.5)
                assert probe.status == 200, probe
                assert probe.degraded == "max_tokens,temperature"
                try:
                    batch.chat.completions.create(
                        model=BIG,
                        max_tokens=4,
                        messages=[{"role": "user", "content": "word " * 200}],
                    )
                    raise AssertionError("a long prompt passed the engaged prompt limit")
                except openai.BadRequestError as err:
                    assert err.code == "context_length_exceeded"
            assert not flood.errors, flood.errors[:3]
            assert all(o.status == 200 for o in flood.outcomes)
            _wait(
                lambda: (
                    {
                        e["fields"]["policy"]
                        for e in n.events("degradation")
                        if not e["fields"]["engaged"]
                    }
                    >= set(POLICIES)
                ),
                "every policy released",
            )
            after = call(batch, BIG, max_tokens=50, temperature=1.0)
            assert after.status == 200 and after.degraded is None
        for policy in POLICIES:
            for state in ("engaged", "released"):
                assert (
                    n.metric(
                        "hanode_degradation_changes_total", model=BIG, policy=policy, state=state
                    )
                    >= 1
                )
            assert n.metric("hanode_degradation_engaged", model=BIG, policy=policy) == 0
        assert n.metric("hanode_degraded_requests_total", model=BIG, policy="max_tokens") >= 1
        assert n.metric("hanode_degraded_requests_total", model=BIG, policy="prompt") == 1


def test_primary_gone_fallback_class_gets_the_fallback_model_the_other_503(
    tmp_path: Path,
) -> None:
    classes = [
        {"name": "interactive", "priority": 0, "fallback": True, "degrade": False},
        {"name": "batch", "priority": 2, "fallback": False},
    ]
    models = [{"name": BIG, "fallback": [SMALL]}, {"name": SMALL}]
    fast = ("--ttft-ms", "5", "--tpot-ms", "1", "--reserve-gpu", "0")
    with node(tmp_path, {BIG: fast, SMALL: fast}, classes=classes, models=models) as n:
        with n.client(INTERACTIVE_KEY) as inter, n.client(BATCH_KEY) as batch:
            normal = call(inter, BIG)
            assert normal.status == 200 and normal.model == BIG and normal.degraded is None
            n.sims[BIG].stop()
            n.node.wait_health({f"{BIG}-0": "down"}, timeout=20.0)
            moved = call(inter, BIG)
            assert moved.status == 200, moved
            assert moved.model == SMALL  # the answer says which model wrote it
            assert moved.degraded == "fallback"
            refused = call(batch, BIG)
            assert refused.status == 503, refused
            assert refused.retry_after is not None and int(refused.retry_after) >= 1
        assert n.metric("hanode_degraded_requests_total", model=BIG, policy="fallback") == 1
        assert (
            n.metric(
                "hanode_admission_total", model=BIG, outcome="no_replica", **{"class": "batch"}
            )
            == 1
        )


def test_a_client_that_disconnects_while_queued_leaves_the_queue_at_once(
    tmp_path: Path,
) -> None:
    import socket

    classes = [{"name": "batch", "priority": 2, "queue_timeout_s": 60.0, "max_queue": 4}]
    slow = ("--ttft-ms", "3000", "--tpot-ms", "1", "--reserve-gpu", "0")
    with node(
        tmp_path,
        {BIG: slow},
        classes=classes,
        models=[{"name": BIG, "max_concurrency": 1}],
        health={"l2_timeout_s": 6.0},  # the slow simulator's test prompt takes 3 s
    ) as n:
        with n.client(BATCH_KEY, timeout=60.0) as batch:
            holder = threading.Thread(target=lambda: call(batch, BIG))
            holder.start()  # takes the one place for ~3 s
            _wait(lambda: n.metric("hanode_admission_in_service", model=BIG) == 1, "one in service")
            body = (
                b'{"model": "big", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}'
            )
            request = (
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                b"content-type: application/json\r\n"
                b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
                % (BATCH_KEY.encode(), len(body), body)
            )
            with socket.create_connection(("127.0.0.1", n.node.router_port), timeout=5.0) as s:
                s.sendall(request)
                _wait(
                    lambda: (
                        n.metric("hanode_admission_queue_length", model=BIG, **{"class": "batch"})
                        == 1
                    ),
                    "the raw request queued",
                )
            # The socket is closed: its place in the queue is freed at once, long before the
            # holder ends or the 60 s queue timeout.
            _wait(
                lambda: (
                    n.metric("hanode_admission_queue_length", model=BIG, **{"class": "batch"}) == 0
                ),
                "the queue emptied",
                tries=40,
            )
            assert (
                n.metric(
                    "hanode_admission_total", model=BIG, outcome="client_gone", **{"class": "batch"}
                )
                == 1
            )
            holder.join(30.0)
        # the one it held was answered; the one that left was never sent to the replica
        assert n.sims[BIG].admin("state")["per_endpoint"].get("/v1/chat/completions", 0) == 1
