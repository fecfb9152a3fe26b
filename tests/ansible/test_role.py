"""The Ansible role and its rolling upgrade, run for real on this machine (issue 14).

Each "host" is an inventory entry with `ansible_connection: local` and its own venv, config
dir, data dir and ports; the role runs hanode with `hanode_service_manager: process` (a
background process by pid file: there is no systemd as PID 1 here). The package is a wheel
built from this checkout, installed by the role's pip task with --no-deps into a venv whose
dependencies come from this checkout's .venv (a .pth file): no package index is needed.

- `ansible-playbook --syntax-check` and `ansible-lint` on the playbook and role;
- one standalone host: the role installs, configures (generated API key, loopback ops) and
  starts hanode, which then answers the official openai client;
- three cluster hosts, first deployed together, then upgraded host by host by site.yml
  (drain, leader handover, reinstall, restart, wait for quorum and healthy replicas,
  undrain) while clients send requests through a health-checking balancer in front of the
  three front doors: every host restarted, 0 client errors.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from hanode.devtools.procs import PACKAGE_ROOT, SimProcess, free_port, start_sim, wait_until

ANSIBLE = PACKAGE_ROOT / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOK = BIN / "ansible-playbook"
LINT = BIN / "ansible-lint"
MODEL = "sim-model"

needs_ansible = pytest.mark.skipif(
    not PLAYBOOK.exists(), reason="ansible-core not installed (pip install -e '.[dev]')"
)
pytestmark = [needs_ansible, pytest.mark.e2e, pytest.mark.timeout(600)]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def _playbook(tmp_path: Path, inventory: Path, *extra: str, timeout: float = 480) -> str:
    done = subprocess.run(
        [str(PLAYBOOK), "-i", str(inventory), str(ANSIBLE / "site.yml"), *extra],
        cwd=ANSIBLE, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    out = done.stdout + done.stderr
    (tmp_path / f"ansible-{time.monotonic_ns()}.log").write_text(out)
    assert done.returncode == 0, out[-6000:]
    return out


def test_syntax_check(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[hanode]\nlocalhost ansible_connection=local\n")
    done = subprocess.run(
        [str(PLAYBOOK), "--syntax-check", "-i", str(inventory), "site.yml"],
        cwd=ANSIBLE, env=_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(
    not LINT.exists(), reason="ansible-lint not installed (pip install -e '.[dev]')"
)
def test_ansible_lint(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(LINT), "--offline", "site.yml"],
        cwd=ANSIBLE, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(PACKAGE_ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return next(out.glob("hanode-*.whl"))


def _seed_venv(venv: Path) -> None:
    """A venv whose dependencies are this checkout's .venv's (hanode itself the role installs)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = next((BIN.parent / "lib").glob("python3*/site-packages"))
    (site / "hanode-test-deps.pth").write_text(f"{deps}\n")
    pip = BIN / "pip"  # the role's pip module needs a pip in the venv: this one, run by it
    (venv / "bin" / "pip").write_text(f"#!{venv}/bin/python\nimport runpy, sys\n"
                                      f"sys.argv[0] = {str(pip)!r}\n"
                                      "runpy.run_module('pip', run_name='__main__')\n")  # fmt: skip
    (venv / "bin" / "pip").chmod(0o755)


@dataclass
class Host:
    name: str
    root: Path
    sim: SimProcess
    router: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)
    api: int = field(default_factory=free_port)
    raft: int = field(default_factory=free_port)

    def vars(self) -> dict[str, Any]:
        return {
            "hanode_node_name": self.name,
            "hanode_home": str(self.root / "opt"),
            "hanode_venv": str(self.root / "venv"),
            "hanode_config_dir": str(self.root / "etc"),
            "hanode_data_dir": str(self.root / "data"),
            "hanode_router_listen": f"127.0.0.1:{self.router}",
            "hanode_metrics_listen": f"127.0.0.1:{self.metrics}",
            "hanode_api_listen": f"127.0.0.1:{self.api}",
            "hanode_raft_host": "127.0.0.1",
            "hanode_raft_port": self.raft,
            "hanode_replicas": [{"name": f"{self.name}-r", "model": MODEL, "url": self.sim.url}],
        }

    def pid(self) -> int:
        return int((self.root / "data" / "hanode.pid").read_text())

    def log(self) -> str:
        path = self.root / "data" / "hanode.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _inventory(tmp_path: Path, wheel: Path, hosts: list[Host], cluster: bool) -> Path:
    common = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "hanode_become": False,
        "hanode_manage_user": False,
        "hanode_user": "root",
        "hanode_service_manager": "process",
        "hanode_package": str(wheel),
        "hanode_pip_extra_args": "--no-deps --no-index",
        "hanode_credentials_dir": str(tmp_path / "credentials"),
        "hanode_advertise_host": "127.0.0.1",
        "hanode_cluster": cluster,
        "hanode_health": {"interval_s": 0.2, "timeout_s": 1.0, "rise": 2, "fall": 2},
        "hanode_cluster_extra": {"election_min_s": 0.3, "election_max_s": 0.9,
                                 "planner_interval_s": 0.3, "heartbeat_s": 2.0},
        "hanode_router_extra": {"drain_timeout_s": 20.0},
        "hanode_check_delay": 0.5,
        "hanode_check_retries": 120,
    }  # fmt: skip
    doc = {
        "all": {
            "children": {"hanode": {"hosts": {h.name: h.vars() for h in hosts}}},
            "vars": common,
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(doc))
    for h in hosts:
        if not (h.root / "venv").exists():
            _seed_venv(h.root / "venv")
    return path


@pytest.fixture()
def procs() -> Iterator[list[Any]]:
    """Simulators and the pids of the nodes the role started, stopped by pid at the end."""
    started: list[Any] = []
    yield started
    for item in reversed(started):
        if isinstance(item, Host):
            with contextlib.suppress(OSError, ValueError):  # started in its own session
                os.killpg(item.pid(), signal.SIGKILL)
        else:
            item.stop()


def _api_key(tmp_path: Path) -> str:
    return (tmp_path / "credentials" / "api_key").read_text().split()[0]


def test_role_runs_a_standalone_node_on_this_machine(
    tmp_path: Path, wheel: Path, procs: list[Any]
) -> None:
    sim = start_sim("--model", MODEL, "--ttft-ms", "2", wait="none")
    procs.append(sim)
    host = Host("solo", tmp_path / "solo", sim)
    procs.append(host)
    inventory = _inventory(tmp_path, wheel, [host], cluster=False)
    _playbook(tmp_path, inventory, "-e", "hanode_rolling=false")
    key = _api_key(tmp_path)
    assert len(key) >= 32
    # Secrets 0600, listeners where the role put them, the node answering from its own venv.
    assert (host.root / "etc" / "api_keys").stat().st_mode & 0o777 == 0o600
    pid = host.pid()
    exe = os.readlink(f"/proc/{pid}/exe")
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert str(host.root / "venv" / "bin" / "hanode").encode() in cmdline, (exe, cmdline)
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{host.router}/v1", api_key=key, max_retries=0
    )
    wait_until(lambda: _health(host.router), 30)
    out = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert out.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):  # closed by default: the key is required
        openai.OpenAI(
            base_url=f"http://127.0.0.1:{host.router}/v1", api_key="nope", max_retries=0
        ).models.list()
    # A second run changes nothing and keeps the same process.
    out = _playbook(tmp_path, inventory, "-e", "hanode_rolling=false")
    assert host.pid() == pid and "changed=0" in out, out[-1500:]


def _health(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


class Balancer:
    """What a health-checking load balancer in front of the front doors does: it sends each
    request to a node whose /health answered 200 at its last check (every 0.1 s), and moves a
    request the node did not take (connection refused, 503 `node_draining`) to the next node.
    Anything else that is not a full 200 answer is a client error."""

    def __init__(self, ports: list[int], key: str) -> None:
        self.ports = ports
        self.key = key
        self.healthy = set(ports)
        self.ok = 0
        self.moved = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._check, daemon=True)]
        self._threads += [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(4)
        ]

    def __enter__(self) -> Balancer:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _check(self) -> None:
        while not self._stop.is_set():
            healthy = {p for p in self.ports if _health(p)}
            with self._lock:
                self.healthy = healthy
            self._stop.wait(0.1)

    def _order(self, i: int) -> list[int]:
        with self._lock:
            healthy = [p for p in self.ports if p in self.healthy]
        start = i % max(1, len(healthy))
        return healthy[start:] + healthy[:start]

    def _one(self, port: int, stream: bool) -> str:
        """'ok', 'moved' (the node did not take it) or an error description."""
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 8, "stream": stream}  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            try:
                conn.request("POST", "/v1/chat/completions", json.dumps(body),
                             {"content-type": "application/json",
                              "authorization": f"Bearer {self.key}"})  # fmt: skip
            except ConnectionRefusedError:
                return "moved"
            resp = conn.getresponse()
            data = resp.read()
            if resp.status == 503 and b"node_draining" in data:
                return "moved"
            if resp.status != 200:
                return f"{port}: HTTP {resp.status} {data[:200]!r}"
            if stream and not data.rstrip().endswith(b"data: [DONE]"):
                return f"{port}: stream cut {data[-200:]!r}"
            return "ok"
        except OSError as exc:
            return f"{port}: {type(exc).__name__}: {exc}"
        finally:
            conn.close()

    def _client(self, index: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            result = "no healthy node"
            for port in self._order(index + n):
                result = self._one(port, stream=n % 2 == 0)
                if result != "moved":
                    break
                with self._lock:
                    self.moved += 1
            with self._lock:
                if result == "ok":
                    self.ok += 1
                else:
                    self.errors.append(result)


def test_rolling_upgrade_of_three_nodes_under_traffic(
    tmp_path: Path, wheel: Path, procs: list[Any]
) -> None:
    hosts = []
    for name in ("n1", "n2", "n3"):
        sim = start_sim("--model", MODEL, "--ttft-ms", "2", "--tpot-ms", "5", wait="none")
        procs.append(sim)
        hosts.append(Host(name, tmp_path / name, sim))
    procs.extend(hosts)
    inventory = _inventory(tmp_path, wheel, hosts, cluster=True)
    # First deployment: the three hosts together (none runs yet, so nothing to drain).
    _playbook(tmp_path, inventory, "-e", "hanode_rolling=false", "-e", "hanode_serial=3")
    before = {h.name: h.pid() for h in hosts}
    key = _api_key(tmp_path)
    wait_until(lambda: all(_health(h.router) for h in hosts), 30)
    with Balancer([h.router for h in hosts], key) as lb:
        wait_until(lambda: lb.ok >= 20, 30)
        out = _playbook(tmp_path, inventory, "-e", "hanode_force_restart=true")
        at_end = lb.ok
        wait_until(lambda: lb.ok >= at_end + 20, 30)  # and it keeps serving after the upgrade
    after = {h.name: h.pid() for h in hosts}
    assert all(after[n] != before[n] for n in before), (before, after)
    # One host at a time: each host drained and undrained before the next one is drained.
    assert _steps(out) == [(step, h.name) for h in hosts for step in ("drain", "undrain")], out
    print(f"rolling upgrade: {lb.ok} answered, {lb.moved} moved by the balancer, "
          f"{len(lb.errors)} client errors")  # fmt: skip
    assert lb.errors == [], (lb.errors[:10], lb.ok, lb.moved)
    assert lb.ok > 40
    for h in hosts:
        assert '"router_draining"' in h.log(), h.name  # each stopped gracefully


def _steps(out: str) -> list[tuple[str, str]]:
    """(drain|undrain, host) in the order the play ran them."""
    steps, task = [], ""
    for line in out.splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith(("changed: [", "ok: [")) and "rain this node's replicas" in task:
            step = "undrain" if "Undrain" in task else "drain"
            steps.append((step, line.split("[", 1)[1].split("]", 1)[0]))
    return steps
