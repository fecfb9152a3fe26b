"""Three routers, one model (issue 12): each router admits its share of the capacity from the
replicated state (capacity / live routers), so with every router flooded the replica never
runs more than the capacity at once; batch requests beyond it queue and are shed with 429 and
Retry-After, nothing is lost; `hanodectl slo` shows each router's figures."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import openai

from tests.e2e.cluster_support import MODEL, RaftCluster, Replica
from tests.e2e.degradation_support import Flood, Outcome

CAPACITY = 6  # [[models]] max_concurrency of the one replica
ROUTERS = 3
# The engine itself could run 24 at once (so it never queues): only admission holds it to 6.
SIM = ("--capacity", "24", "--ttft-ms", "400", "--tpot-ms", "5", "--reserve-gpu", "0")


def _send(client: openai.OpenAI) -> Outcome:
    t0 = time.monotonic()
    try:
        client.chat.completions.create(
            model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
    except openai.APIStatusError as err:
        return Outcome(
            err.status_code, time.monotonic() - t0, err.response.headers.get("retry-after")
        )
    return Outcome(200, time.monotonic() - t0)


def test_three_routers_hold_the_capacity_together(tmp_path: Path) -> None:
    c = RaftCluster(
        tmp_path,
        # Every node needs a replica: n2 and n3 serve another model.
        [
            ("n1", [Replica("r1", sim_args=SIM)]),
            ("n2", [Replica("r2", model="other")]),
            ("n3", [Replica("r3", model="other")]),
        ],
        models=[{"name": MODEL, "max_concurrency": CAPACITY}],
    )
    # The built-in batch class, with a short wait and a small queue.
    extra = (
        '\n[[classes]]\nname = "batch"\npriority = 2\nqueue_timeout_s = 1.0\nmax_queue = 1\n'
        "capacity_share = 1.0\n"
    )
    try:
        for node in c.nodes:
            c.start_sims(node)
        for node in c.nodes:
            node.write_config([p.raft for p in c.nodes if p is not node], {}, c.models)
            node.config_path.write_text(node.config_path.read_text() + extra)
        c.start_nodes(c.nodes)
        c.wait_leader()
        c.wait_serving()
        sim = c.nodes[0].sims["r1"]
        clients = [
            openai.OpenAI(
                base_url=n.router_url + "/v1",
                api_key="x",
                max_retries=0,
                timeout=30.0,
                default_headers={"x-hanode-class": "batch"},
            )
            for n in c.nodes
        ]
        for n in c.nodes:  # every router has counted the live routers
            _wait_metric(n, "hanode_admission_capacity", CAPACITY // ROUTERS, clients)
        floods = [
            Flood(lambda cl=cl: _send(cl), threads=4, pause_after_refusal_s=0.1) for cl in clients
        ]
        for f in floods:
            f.__enter__()
        threading.Event().wait(4.0)  # demand 12 for 6 places, a few seconds
        for f in floods:
            f.__exit__(None, None, None)
        outcomes = [o for f in floods for o in f.outcomes]
        assert not any(f.errors for f in floods)
        assert {o.status for o in outcomes} <= {200, 429}
        assert all(o.retry_after is not None for o in outcomes if o.status == 429)
        assert any(o.status == 429 for o in outcomes)
        state = sim.admin("state")
        # Together the routers never had more than the capacity running on the replica.
        assert CAPACITY // 2 < state["peak_running"] <= CAPACITY, state["peak_running"]
        for n in c.nodes:  # no router's queue ever went past its bound
            assert _metric(n, "hanode_admission_queue_length_max", 'class="batch"') <= 1
        slo = c.ctl_json(1, "slo")
        assert slo["node"] == "n2"
        rows = {(s["model"], s["request_class"]): s for s in slo["slos"]}
        assert rows[(MODEL, "batch")]["requests_1h"] > 0
        assert rows[(MODEL, "batch")]["burn"]["5m"] > 0  # shed requests spend the budget
        for cl in clients:
            cl.close()
    finally:
        c.stop_all()


def _metric(node: object, name: str, label: str) -> float:
    from hanode.devtools.procs import http_get

    _, _, body = http_get(f"http://127.0.0.1:{node.metrics_port}/metrics", 5.0)  # type: ignore[attr-defined]
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith(name + "{") and f'model="{MODEL}"' in line and label in line
    ]
    assert values, name
    return max(values)


def _wait_metric(node: object, name: str, want: float, clients: list[openai.OpenAI]) -> None:
    """The gate exports a model's share once it has seen a request of it: send one, then read
    the router's /metrics until the share is the expected one (bounded)."""
    from hanode.devtools.procs import http_get

    port = node.metrics_port  # type: ignore[attr-defined]
    url = node.router_url  # type: ignore[attr-defined]
    client = next(cl for cl in clients if str(cl.base_url).startswith(url))
    _send(client)
    for _ in range(200):
        _, _, body = http_get(f"http://127.0.0.1:{port}/metrics", 5.0)
        for line in body.decode().splitlines():
            mine = line.startswith(name + "{") and f'model="{MODEL}"' in line
            if mine and float(line.rsplit(" ", 1)[1]) == want:
                return
        threading.Event().wait(0.05)
    raise AssertionError(f"{name} never reached {want}")
