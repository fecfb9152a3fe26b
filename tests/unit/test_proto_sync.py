"""The committed generated code in hanode/_proto matches proto/ (run `make proto` after an edit).

Regenerates into a temporary directory exactly as the Makefile's ``proto`` target does
(grpc_tools.protoc with ``-I proto``, imports rewritten to ``hanode._proto.hanode.v1``, an
``__init__.py`` in every directory) and compares file by file. Version stamps of the generator
are ignored so a patch release of grpcio-tools does not fail the check.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
COMMITTED = ROOT / "hanode" / "_proto"

# Must stay the same rewrite as the sed expression of `make proto`.
_IMPORT = re.compile(r"^(from|import) hanode\.v1([. ])", re.MULTILINE)
_VERSION_STAMPS = [
    re.compile(r"^# Protobuf Python Version: .*$", re.MULTILINE),
    re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.MULTILINE),
    re.compile(r"^_runtime_version\.ValidateProtobufRuntimeVersion\(.*?^\)$", re.M | re.S),
]


def _generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in PROTO.rglob("*.proto"))
    assert protos, "no .proto files under proto/"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "proto",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for path in out.rglob("*"):
        if path.suffix in (".py", ".pyi"):
            path.write_text(_IMPORT.sub(r"\1 hanode._proto.hanode.v1\2", path.read_text()))
    for directory in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()


def _files(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".pyi"):
            text = path.read_text()
            for stamp in _VERSION_STAMPS:
                text = stamp.sub("<version>", text)
            out[str(path.relative_to(root))] = text
    return out


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    out = tmp_path / "_proto"
    out.mkdir()
    _generate(out)
    fresh = _files(out)
    committed = _files(COMMITTED)
    assert sorted(committed) == sorted(fresh), "run `make proto`: generated files differ"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `make proto`: hanode/_proto is stale for {stale}"


def test_makefile_rewrites_imports_the_same_way() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\nproto:" in makefile
    assert r"s/^(from|import) hanode\.v1([. ])/\1 hanode._proto.hanode.v1\2/" in makefile


def test_generated_imports_are_package_relative() -> None:
    for path in COMMITTED.rglob("*.py"):
        assert not re.search(r"^(from|import) hanode\.v1\b", path.read_text(), re.M), path
