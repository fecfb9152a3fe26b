"""A private nginx: round-robin proxy over the simulators, in the foreground, in a temp prefix."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from bench.harness import HOST, BenchError, ProcGroup, child_pids, cpu_seconds
from hanode.devtools.procs import ChildProcess, http_get, wait_until

CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;

    upstream sims {{
{servers}
        keepalive 128;
        keepalive_requests 1000000;
    }}

    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://sims;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


CANNED_SERVER = """\
    server {{
        listen {host}:{port};
        location = /v1/completions {{
            default_type application/json;
            return 200 '{completion}';
        }}
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{chat}';
        }}
        location / {{
            proxy_pass http://sims;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


def nginx_string(text: str) -> str:
    """``text`` inside an nginx single-quoted string (``return 200 '...'``)."""
    if "$" in text or "\\" in text:
        raise ValueError("no $ or backslash in a canned answer (nginx would interpolate)")
    return text.replace("'", "\\'")


class Nginx:
    """nginx master (foreground) + 1 worker; CPU time is the sum of both."""

    def __init__(self, binary: str, prefix: Path, port: int, upstream_ports: list[int]) -> None:
        self.binary = binary
        self.prefix = prefix
        self.port = port
        self.upstream_ports = upstream_ports
        self.proc: ChildProcess | None = None

    def write_conf(self) -> Path:
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.conf_text())
        return conf

    def conf_text(self) -> str:
        self.prefix.mkdir(parents=True, exist_ok=True)
        # Workers run as an unprivileged user when we are root: they must reach the prefix
        # (inside the run's own temporary directory, created 0700).
        for p in (self.prefix, self.prefix.parent):
            with contextlib.suppress(OSError):
                os.chmod(p, 0o755)
        servers = "\n".join(f"        server {HOST}:{p};" for p in self.upstream_ports)
        return CONF.format(prefix=self.prefix, servers=servers, host=HOST, port=self.port)

    def start(self, group: ProcGroup, timeout_s: float = 10.0) -> None:
        conf = self.write_conf()
        argv = [
            self.binary,
            "-p",
            f"{self.prefix}/",
            "-c",
            str(conf),
            "-e",
            str(self.prefix / "error.log"),
        ]
        proc = self.proc = group.command("nginx", argv)
        group.extra_stops.append(self._stop_workers)

        def up() -> bool:
            if not proc.alive:
                raise BenchError(f"nginx exited:\n{proc.output()[-2000:]}")
            return http_get(f"http://{HOST}:{self.port}/health", timeout=1.0)[0] == 200

        try:
            wait_until(up, timeout_s, 0.05, f"nginx on port {self.port}")
        except TimeoutError as exc:
            raise BenchError(f"{exc}\n--- nginx output ---\n{proc.output()[-2000:]}") from None

    def pids(self) -> list[int]:
        if self.proc is None:
            return []
        return [self.proc.pid, *child_pids(self.proc.pid)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def _stop_workers(self) -> None:
        """Before the master is stopped: remember workers, stop master, then any leftover."""
        if self.proc is None:
            return
        workers = child_pids(self.proc.pid) if self.proc.alive else []
        self.proc.stop()
        for pid in workers:
            with contextlib.suppress(OSError):
                # Still ours only if it still names nginx; then it outlived its master.
                if "nginx" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    os.kill(pid, 9)


class CannedNginx(Nginx):
    """The fast upstream of the proxy-limited run: answers every completion with one canned
    body on each of ``ports`` (one port per replica), and passes the rest (``/health``,
    ``/metrics``, ``/v1/models``: what health checks read) to the simulators behind it."""

    def __init__(
        self,
        binary: str,
        prefix: Path,
        ports: list[int],
        sim_ports: list[int],
        completion: str,
        chat: str,
    ) -> None:
        super().__init__(binary, prefix, ports[0], sim_ports)
        self.ports = ports
        self.completion = nginx_string(completion)
        self.chat = nginx_string(chat)

    def conf_text(self) -> str:
        text = super().conf_text()
        head, _, _ = text.rpartition("    server {")  # the proxying server block goes
        servers = "".join(
            CANNED_SERVER.format(host=HOST, port=p, completion=self.completion, chat=self.chat)
            for p in self.ports
        )
        return head + servers + "}\n"
