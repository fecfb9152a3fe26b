"""Spawn and drive real hanode processes (simulators, nodes) on loopback, bounded everywhere.

Every wait is bounded in time; every process is stopped by its own pid (SIGTERM, then SIGKILL);
captured output is attached to failures so a broken start explains itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self, TypeVar

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds ``hanode/``
T = TypeVar("T")
Wait = Literal["ready", "listening", "none"]


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value; TimeoutError after ``timeout`` s.

    Exceptions from the predicate count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            extra = f" (last error: {last_exc!r})" if last_exc is not None else ""
            raise TimeoutError(f"{text} not reached within {timeout}s{extra}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    """GET on loopback; HTTP errors are returned, not raised. Connection errors raise OSError."""
    return http_request("GET", url, None, timeout)


def http_request(
    method: str,
    url: str,
    body: Any = None,
    timeout: float = 2.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """JSON-encode ``body`` (when given) and send it; see :func:`raw_request`."""
    data = None if body is None else json.dumps(body).encode()
    return raw_request(method, url, data, headers, timeout)


def raw_request(
    method: str,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    """Send exactly ``data`` on loopback; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


class ChildProcess:
    """A Python child process of ours, its output captured to a file, stopped by its pid."""

    kind = "process"

    def __init__(
        self,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self._log: IO[bytes]
        if log_path is None:
            self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
                prefix=f"hanode-{self.kind}-", suffix=".log", delete=False
            )
        else:
            self._log = open(log_path, "w+b")  # noqa: SIM115 - closed in stop()
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PACKAGE_ROOT), child_env.get("PYTHONPATH", "")) if p
        )
        child_env.update(env or {})
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd,
            cwd=PACKAGE_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=child_env,
        )
        self.pid = self.proc.pid

    # -- observation -----------------------------------------------------------------------
    def output(self) -> str:
        try:
            return Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""

    def _fail_text(self, what: str) -> str:
        return f"{what}; cmd={self.cmd!r} rc={self.proc.poll()}\n--- output ---\n{self.output()}"

    def _alive_or_raise(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(self._fail_text(f"{self.kind} exited"))

    def wait_listening(self, timeout: float = 15.0) -> dict[str, Any]:
        def listening() -> dict[str, Any] | None:
            self._alive_or_raise()
            for line in self.output().splitlines():
                if line.startswith("{") and '"listening"' in line:
                    event: dict[str, Any] = json.loads(line)
                    return event
            return None

        return self._wait(listening, timeout, "listening line")

    def _wait(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while True:
            value: T | None = None
            try:
                value = predicate()
            except RuntimeError:
                raise
            except (OSError, ValueError, http.client.HTTPException):
                pass
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(self._fail_text(f"{what} not reached within {timeout}s"))
            time.sleep(0.05)

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(self._fail_text(f"still running after {timeout}s")) from None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    # -- lifetime --------------------------------------------------------------------------
    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; returns the exit code."""
        rc: int | None = self.proc.poll()
        if rc is None:
            self.kill(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                rc = self.proc.wait(timeout)
        if not self._log.closed:
            self._log.close()
        return rc

    def cleanup(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.cleanup()


class SimProcess(ChildProcess):
    """A ``python -m hanode.sim`` replica simulator on 127.0.0.1."""

    kind = "sim"

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        wait: Wait = "ready",
        timeout: float = 15.0,
        env: dict[str, str] | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.args = [str(a) for a in args]
        self.url = f"http://127.0.0.1:{self.port}"
        # No cold start unless asked (--load-s defaults to a realistic 20 s): tests and the
        # demo start many simulators; ``args`` may give --load-s (or the phases) again.
        cmd = [
            sys.executable, "-m", "hanode.sim", "--port", str(self.port), "--load-s", "0",
            *self.args,
        ]  # fmt: skip
        super().__init__(cmd, env=env, log_path=log_path)
        try:
            if wait == "ready":
                self.wait_ready(timeout)
            elif wait == "listening":
                self.wait_listening(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            self._alive_or_raise()
            return http_get(f"{self.url}/health", timeout=1.0)[0] == 200

        self._wait(ready, timeout, "GET /health == 200")

    # -- admin and HTTP helpers ------------------------------------------------------------
    def admin(self, path: str, json_body: Any = None, timeout: float = 5.0) -> Any:
        """GET (no body) or POST (with a body) ``/admin/<path>``; returns decoded JSON."""
        path = path if path.startswith("/") else f"/admin/{path}"
        method = "GET" if json_body is None else "POST"
        status, _, body = http_request(method, self.url + path, json_body, timeout)
        if status != 200:
            raise RuntimeError(f"{method} {path} -> {status}: {body!r}")
        return json.loads(body) if body else None

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path, timeout)

    def post(
        self, path: str, body: Any, timeout: float = 5.0, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return http_request("POST", self.url + path, body, timeout, headers)


def start_sim(*args: str, **opts: Any) -> SimProcess:
    """Start a simulator: ``with start_sim("--ttft-ms", "0") as sim: ...``.

    Options: ``port`` (default: a free one), ``wait`` ("ready": /health is 200, "listening":
    the listening line was printed, "none"), ``timeout`` (s), ``env`` (extra variables).
    """
    return SimProcess(*args, **opts)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def node_config_toml(
    *,
    name: str,
    data_dir: str | Path,
    router_port: int,
    metrics_port: int,
    replicas: list[dict[str, Any]],
    sections: dict[str, dict[str, Any]] | None = None,
    models: list[dict[str, Any]] | None = None,
) -> str:
    """A node configuration; ``sections`` adds or extends tables such as ``health``;
    ``models`` are ``[[models]]`` tables."""
    tables: dict[str, dict[str, Any]] = {
        "node": {"name": name, "data_dir": str(data_dir)},
        "router": {"listen": f"127.0.0.1:{router_port}"},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
    }
    for table, values in (sections or {}).items():
        tables.setdefault(table, {}).update(values)
    # No load balancer watches these nodes' /health: a stopping node need not wait for one.
    tables["router"].setdefault("drain_notice_s", 0.0)
    if "cluster" in tables:  # a cluster on one host: peers reach its replicas on loopback
        tables["node"].setdefault("advertise_host", "127.0.0.1")
    out: list[str] = []
    for table, values in tables.items():
        out.append(f"[{table}]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        out.append("")
    for array, items in (("replicas", replicas), ("models", models or [])):
        for item in items:
            out.append(f"[[{array}]]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
            out.append("")
    return "\n".join(out)


class NodeProcess(ChildProcess):
    """A ``python -m hanode run`` node; its ports come from its listening line."""

    kind = "node"

    def __init__(
        self,
        config_path: str | Path,
        *,
        wait: bool = True,
        timeout: float = 20.0,
        env: dict[str, str] | None = None,
        log_path: str | Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        cmd = [sys.executable, "-m", "hanode", "run", "--config", str(config_path)]
        super().__init__(cmd + list(extra_args or []), env=env, log_path=log_path)
        self.router_port = 0
        self.metrics_port = 0
        if wait:
            try:
                event = self.wait_listening(timeout)
            except BaseException:
                self.stop()
                raise
            self.router_port = int(event["router_port"])
            self.metrics_port = int(event["metrics_port"])

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def status(self, timeout: float = 2.0) -> dict[str, Any]:
        code, _, body = http_get(self.ops_url + "/status", timeout)
        if code != 200:
            raise RuntimeError(f"GET /status -> {code}: {body!r}")
        doc: dict[str, Any] = json.loads(body)
        return doc

    def replicas(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.status()["replicas"]}

    def metrics_text(self, timeout: float = 2.0) -> str:
        code, _, body = http_get(self.ops_url + "/metrics", timeout)
        if code != 200:
            raise RuntimeError(f"GET /metrics -> {code}")
        return body.decode()

    def wait_health(self, wanted: dict[str, str], timeout: float = 20.0) -> dict[str, Any]:
        """Wait until each named replica has the wanted health ("healthy", "down", ...)."""

        def reached() -> dict[str, Any] | None:
            self._alive_or_raise()
            doc = self.status()
            health = {r["name"]: r["health"] for r in doc["replicas"]}
            return doc if all(health.get(n) == h for n, h in wanted.items()) else None

        return self._wait(reached, timeout, f"replica health {wanted}")
