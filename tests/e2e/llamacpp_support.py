"""Real ``llama-server`` replicas for the end-to-end tests: binary, models, processes.

The binary is upstream llama.cpp's C++ server, built once per machine by
``scripts/build_llama_server.sh`` (``make llama-server``) and cached outside the clone;
``HANODE_LLAMA_SERVER`` names another one. The models are random-weight llamas written by
:mod:`hanode.devtools.tiny_gguf` into the same cache. Nothing here skips: a missing binary is a
test failure that says how to build it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hanode.devtools.procs import PACKAGE_ROOT, ChildProcess, free_port, http_get
from hanode.devtools.tiny_gguf import ModelShape, cached_model

BUILD_SCRIPT = PACKAGE_ROOT / "scripts" / "build_llama_server.sh"
ALIAS = "tiny-llama"

# The loading-test model: 24 layers of 1024 dims (0.6 GB, written once into the cache, in about
# 7 s). Read without mmap (SLOW_ARGS) and with a 16k context, whose 1.6 GB KV cache llama-server
# allocates and clears before it is ready, it answers /health with 503 for a few seconds.
SLOW_SHAPE = ModelShape(layers=24, dim=1024, heads=8, kv_heads=8, ffn=2816, context=16384)
SLOW_CTX = 16384
SLOW_ARGS = ["--load-mode", "none"]


def cache_dir() -> Path:
    base = os.environ.get("HANODE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hanode"
    )
    return Path(base)


def llama_server_binary() -> Path:
    """The built ``llama-server``; fails the test (never skips) when it is not there."""
    env = os.environ.get("HANODE_LLAMA_SERVER")
    if env:
        path = Path(env)
    else:
        out = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-path"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        path = Path(out.stdout.strip())
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"llama-server is not built: {path} is missing.\n"
            f"Build it once per machine (about 11 minutes on 2 cores; needs a C/C++ compiler, "
            f"cmake and ninja) with:\n    make llama-server\nor\n    bash {BUILD_SCRIPT}\n"
            "or point HANODE_LLAMA_SERVER at an existing llama-server binary.",
            pytrace=False,
        )
    return path


def tiny_model() -> Path:
    """The 2-layer, 64-dim random llama (< 1 MB, written in well under a second)."""
    return cached_model(cache_dir() / "models", ModelShape())


def slow_model() -> Path:
    return cached_model(cache_dir() / "models", SLOW_SHAPE)


class LlamaServer(ChildProcess):
    """One ``llama-server`` on 127.0.0.1, stopped by its pid like every other child."""

    kind = "llama-server"

    def __init__(
        self,
        model: Path,
        *,
        alias: str = ALIAS,
        ctx: int = 4096,
        parallel: int = 4,
        extra: list[str] | None = None,
        port: int | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = model
        cmd = [
            str(llama_server_binary()),
            "-m", str(model),
            "--alias", alias,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "-c", str(ctx),
            "-np", str(parallel),
            "-t", "1",
            "--metrics",
            "--jinja",
            "--no-ui",
            *(extra or []),
        ]  # fmt: skip
        super().__init__(cmd, log_path=log_path)

    def health(self) -> tuple[int, bytes]:
        status, _, body = http_get(self.url + "/health", timeout=1.0)
        return status, body

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            self._alive_or_raise()
            return self.health()[0] == 200

        self._wait(ready, timeout, "llama-server GET /health == 200")

    def wait_http(self, timeout: float = 30.0) -> int:
        """Wait until the HTTP server answers at all (503 while the model is still loading)."""

        def answers() -> int | None:
            self._alive_or_raise()
            return self.health()[0]

        return self._wait(answers, timeout, "llama-server answering /health")
