"""The wiring of issue 9's signals outside health/: one growth watch per GPU in the daemon, and
the cluster agent reporting a moved TPOT or growth (and not noise)."""

from __future__ import annotations

from dataclasses import replace

from hanode.cluster.agent import ReportHysteresis, should_report
from hanode.config import parse_config
from hanode.daemon import growth_watches
from hanode.pool.replica import HealthLevel, Observation


def config_with(*replicas: dict[str, object]) -> object:
    return parse_config(
        {
            "node": {"name": "n1", "data_dir": "/var/lib/hanode"},
            "router": {"listen": "127.0.0.1:8080"},
            "metrics": {"listen": "127.0.0.1:9100"},
            "replicas": list(replicas),
        },
        "hanode.toml",
    )


def test_replicas_on_one_gpu_share_a_watch_others_have_their_own() -> None:
    def r(name: str, port: int, gpu: int | None) -> dict[str, object]:
        entry: dict[str, object] = {"name": name, "model": "m", "url": f"http://127.0.0.1:{port}"}
        if gpu is not None:
            entry["gpu"] = gpu
        return entry

    cfg = config_with(r("a", 1, 0), r("b", 2, 0), r("c", 3, 1), r("d", 4, None))
    watches = growth_watches(cfg, 0.05)  # type: ignore[arg-type]
    assert watches["a"] is watches["b"]
    assert watches["a"].members == frozenset({"a", "b"})
    assert watches["c"] is not watches["a"] and watches["c"].members == frozenset({"c"})
    assert watches["d"].members == frozenset({"d"})
    assert {w.mark for w in watches.values()} == {0.05}


H = ReportHysteresis(heartbeat_s=10.0)
BASE = Observation(level=HealthLevel.HEALTHY, tpot_ms=5.0, gpu_growth=0.0)


def test_agent_reports_tpot_and_growth_moves() -> None:
    def moved(**change: float | None) -> bool:
        return should_report(BASE, replace(BASE, **change), 100.0, 100.0, H)  # type: ignore[arg-type]

    assert moved(tpot_ms=6.5)  # +30 %
    assert not moved(tpot_ms=5.5)  # +10 %: noise
    assert moved(gpu_growth=0.06)
    assert not moved(gpu_growth=0.005)
    assert moved(tpot_ms=None)
