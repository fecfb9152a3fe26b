"""The LLM routers' cached venvs (bench/venvs.py): reuse, and a failed install as a skip line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import venvs
from bench.nginx import nginx_string
from bench.wrk import write_lua

SPEC = venvs.Spec("thing", "thing==1.2", "pytest", "thing-cli")


def fake_venv(root: Path, requirement: str) -> Path:
    venv = root / SPEC.name
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)  # has "pytest" (the distribution)
    (venv / "bin" / SPEC.executable).write_text("#!/bin/sh\n")
    (venv / ".hanode-bench-requirement").write_text(requirement + "\n")
    return venv


def test_a_venv_with_the_pinned_stamp_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = fake_venv(tmp_path, SPEC.requirement)
    real_run = subprocess.run

    def only_version_queries(argv: list[str], **kw: Any) -> Any:
        assert argv[1] == "-c", f"no install expected, got {argv}"
        return real_run(argv, **kw)

    monkeypatch.setattr(venvs.subprocess, "run", only_version_queries)
    got = venvs.ensure(SPEC, install=True, cache=tmp_path)
    assert isinstance(got, venvs.Installed)
    assert got.venv == venv
    assert got.version and got.version == venvs.installed_version(got.python, "pytest")
    assert got.executable == str(venv / "bin" / "thing-cli")


def test_a_failed_install_is_a_skip_with_pips_last_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_venv(tmp_path, "thing==1.1")  # another pin: reinstalled
    calls: list[list[str]] = []

    def pip_fails(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        if "pip" in argv:
            err = "WARNING: index ignored\nERROR: No matching distribution found for thing==1.2\n"
            return subprocess.CompletedProcess(argv, 1, "", err)
        (tmp_path / SPEC.name / "bin").mkdir(parents=True, exist_ok=True)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(venvs.subprocess, "run", pip_fails)
    got = venvs.ensure(SPEC, install=True, cache=tmp_path)
    assert isinstance(got, venvs.Skip)
    assert "No matching distribution found for thing==1.2" in got.reason
    assert "WARNING" not in got.reason
    assert [c[1:3] for c in calls] == [["-m", "venv"], ["-m", "pip"]]
    assert not (tmp_path / SPEC.name).exists()  # no half-installed venv is left for reuse


def test_without_install_a_missing_venv_is_a_skip(tmp_path: Path) -> None:
    got = venvs.ensure(SPEC, install=False, cache=tmp_path)
    assert isinstance(got, venvs.Skip) and "--no-install" in got.reason


def test_wrk_script_sends_the_api_key(tmp_path: Path) -> None:
    text = write_lua(tmp_path / "s.lua", '{"a":1}', {"authorization": "Bearer sk-x"}).read_text()
    assert "wrk.headers['authorization'] = 'Bearer sk-x'" in text
    with pytest.raises(ValueError):
        write_lua(tmp_path / "t.lua", "{}", {"x": "it's"})


def test_canned_answers_are_quoted_for_nginx() -> None:
    assert nginx_string('{"text":"it\'s"}') == '{"text":"it\\\'s"}'
    with pytest.raises(ValueError):
        nginx_string('{"text":"$host"}')
