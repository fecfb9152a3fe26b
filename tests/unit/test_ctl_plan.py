"""`hanodectl plan` against a real gRPC control server: the seed's three modes (issue 14)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hanode.cli import ctl
from tests.unit.api.fake import FakeBackend, ThreadedServer, _replica

READER = "reader-token-0123456789"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ENDPOINT", "TOKEN", "CA_FILE", "CERT_FILE", "KEY_FILE"):
        monkeypatch.delenv(f"HANODE_{name}", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _backend() -> FakeBackend:
    """Three models as the seed describes them, one replica per host."""
    b = FakeBackend()
    b.replicas.clear()
    layout = [
        ("ps", ["active", "standby"]),
        ("np1", ["active", "active", "active", "standby"]),
        ("aa", ["active"] * 4),
    ]
    for model, roles in layout:
        for i, role in enumerate(roles):
            name = f"{model}-{i}"
            b.replicas[name] = _replica(name, f"h{i}", role=role, model=model)
    return b


@pytest.fixture()
def server() -> Iterator[ThreadedServer]:
    srv = ThreadedServer(_backend(), (READER,))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = ctl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "hanode.toml"
    path.write_text(
        '[[models]]\nname = "ps"\nredundancy = "primary_standby"\ngpu_price_per_hour = 2.0\n'
        '[[models]]\nname = "np1"\nredundancy = "n_plus_1"\n'
        '[[models]]\nname = "aa"\nredundancy = "active_active"\n'
    )
    return path


def test_plan_matches_the_seed_figures(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, tmp_path: Path
) -> None:
    base = ["--endpoint", server.endpoint, "--token", READER, "plan", "--config"]
    code, out, err = _run(capsys, *base, str(_config(tmp_path)), "--json")
    assert code == 0, err
    got: dict[str, Any] = {m["model"]: m for m in json.loads(out)["models"]}
    ps, np1, aa = got["ps"], got["np1"], got["aa"]
    assert (ps["mode"], ps["active"], ps["standby"]) == ("primary_standby", 1, 1)
    assert (round(ps["cost_pct"]), round(ps["utilization_pct"])) == (200, 50)
    assert ps["price_per_hour"] == 4.0
    assert (np1["mode"], np1["active"], np1["standby"]) == ("n_plus_1", 3, 1)
    assert (round(np1["cost_pct"]), round(np1["utilization_pct"])) == (133, 75)
    assert all(x["serving"] == 3 and x["spare"] == 0 for x in np1["losing_one_host"])
    assert (aa["mode"], aa["active"], aa["standby"]) == ("active_active", 4, 0)
    assert (round(aa["cost_pct"]), round(aa["utilization_pct"])) == (100, 100)
    assert aa["losing_one_host"][0]["capacity_pct"] == 75.0
    # The table says the same to a person.
    code, out, _ = _run(capsys, *base, str(_config(tmp_path)))
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "200%" in lines["ps"] and "50%" in lines["ps"] and "4.00" in lines["ps"]
    assert (
        "133%" in lines["np1"] and "75%" in lines["np1"] and "3 of 3 active serving" in lines["np1"]
    )
    assert "100%" in lines["aa"] and "3 of 4 active serving (75% capacity)" in lines["aa"]


def test_plan_price_flag_and_bad_config(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, tmp_path: Path
) -> None:
    base = ["--endpoint", server.endpoint, "--token", READER, "plan"]
    code, out, _ = _run(capsys, *base, "--gpu-price", "1.5", "--json")
    got = {m["model"]: m for m in json.loads(out)["models"]}
    assert code == 0 and got["np1"]["price_per_hour"] == 6.0
    assert got["aa"]["mode"] == "n_plus_1"  # no config: the default mode
    bad = tmp_path / "bad.toml"
    bad.write_text('[[models]]\nname = "x"\nredundancy = "triple"\n')
    code, _, err = _run(capsys, *base, "--config", str(bad))
    assert code == ctl.EXIT_USAGE and err.count("\n") == 1 and "redundancy" in err
    code, _, err = _run(capsys, *base, "--gpu-price", "-2")
    assert code == ctl.EXIT_USAGE
