"""The issue-9 signals cross the control API and reach hanodectl's table: TTFT, TPOT, growth."""

from __future__ import annotations

from hanode.api.convert import status_from_proto, status_to_proto
from hanode.cli.render import status_table

REPLICA = {
    "name": "r1",
    "node": "n1",
    "model": "m",
    "url": "http://127.0.0.1:8001",
    "engine": "vllm",
    "role": "active",
    "admin": "enabled",
    "health": "healthy",
    "health_level": 3,
    "weight": 1.0,
    "gpu_mem": 0.0,
    "ttft_ms": 31.25,
    "tpot_ms": 5.125,
    "gpu_growth": 0.02,
}


def test_signals_survive_the_round_trip_and_show() -> None:
    doc = status_from_proto(status_to_proto({"node": "n1", "replicas": [REPLICA]}))
    (r,) = doc["replicas"]
    assert (r["ttft_ms"], r["tpot_ms"], r["gpu_growth"]) == (31.25, 5.125, 0.02)
    text = status_table(doc)
    header, row = (line for line in text.splitlines() if line.startswith(("REPLICA", "r1")))
    assert "TTFT" in header.split() and "TPOT" in header.split()
    assert "31ms" in row.split() and "5.1ms" in row.split()


def test_unknown_signals_show_as_dashes() -> None:
    bare = {k: v for k, v in REPLICA.items() if k not in ("ttft_ms", "tpot_ms", "gpu_growth")}
    doc = status_from_proto(status_to_proto({"node": "n1", "replicas": [bare]}))
    (r,) = doc["replicas"]
    assert (r["ttft_ms"], r["tpot_ms"], r["gpu_growth"]) == (None, None, None)
