"""Issue 14: the control API's refusals, shown through hanodectl as an operator meets them.

A real grpc.aio server (in-memory backend) with admin and read-only tokens, TLS and client
certificates made by `hanode certs`; hanodectl runs in-process and must answer each refusal
with one line and its exit code: no token, a wrong token, a read-only token trying a write, a
missing client certificate, one signed by another CA, a plaintext client on a TLS port.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hanode.api.roles import READ_METHODS, Role, allows, method_needs
from hanode.api.server import start_api_server
from hanode.cli import ctl
from hanode.security.certs import init_ca, issue_node
from hanode.security.tls import TlsFiles
from tests.unit.api.fake import FakeBackend, ThreadedServer

ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"


class SecureServer(ThreadedServer):
    def __init__(self, tls: TlsFiles | None, tokens: tuple[str, ...], read_only: tuple[str, ...]):
        super().__init__(FakeBackend(), tokens)
        self.tls = tls
        self.read_only = read_only

    async def _start(self) -> tuple[Any, int]:
        return await start_api_server(
            self.backend, "127.0.0.1", 0, self.tokens, self.read_only, self.tls
        )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ENDPOINT", "TOKEN", "CA_FILE", "CERT_FILE", "KEY_FILE", "SERVER_NAME"):
        monkeypatch.delenv(f"HANODE_{name}", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cluster CA with a node and an operator certificate, and a stranger CA with its own."""
    root = tmp_path_factory.mktemp("pki")
    init_ca(root / "ca")
    issue_node(root / "ca", "n1", ["127.0.0.1"])
    issue_node(root / "ca", "operator")
    init_ca(root / "other", name="someone else's CA")
    issue_node(root / "other", "intruder", ["127.0.0.1"])
    return root


@pytest.fixture()
def mtls_server(pki: Path) -> Iterator[SecureServer]:
    ca = pki / "ca"
    srv = SecureServer(TlsFiles(ca / "n1.crt", ca / "n1.key", ca / "ca.crt"), (ADMIN,), (READER,))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = ctl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hanodectl: "), err
    assert "Traceback" not in err
    return lines[0]


def client_tls(pki: Path, who: str = "operator", ca_dir: str = "ca") -> list[str]:
    return [
        "--ca-file",
        str(pki / "ca" / "ca.crt"),
        "--cert-file",
        str(pki / ca_dir / f"{who}.crt"),
        "--key-file",
        str(pki / ca_dir / f"{who}.key"),
    ]


def test_roles_of_the_methods() -> None:
    for name in READ_METHODS:
        assert method_needs(f"/hanode.v1.Control/{name}") is Role.READ_ONLY
    writes = (
        "Drain",
        "Undrain",
        "Promote",
        "Demote",
        "AddMember",
        "RemoveMember",
        "TransferLeader",
        "ResetBreaker",
        "Restart",
        "Sleep",
        "Wake",
        "SomethingNew",
    )
    for name in writes:
        assert method_needs(f"/hanode.v1.Control/{name}") is Role.ADMIN
    assert method_needs("/other.Service/GetStatus") is Role.ADMIN  # only our reads are reads
    assert allows(Role.ADMIN, Role.ADMIN) and allows(Role.READ_ONLY, Role.READ_ONLY)
    assert not allows(Role.READ_ONLY, Role.ADMIN)


def test_tokens_and_roles_over_mtls(
    capsys: pytest.CaptureFixture[str], mtls_server: SecureServer, pki: Path
) -> None:
    base = ["--endpoint", mtls_server.endpoint, *client_tls(pki)]
    code, _, err = run(capsys, *base, "status")
    assert code == ctl.EXIT_CLUSTER and "no token given" in one_line(err)
    code, _, err = run(capsys, *base, "--token", "wrong-token-0123456789", "status")
    assert code == ctl.EXIT_CLUSTER and "wrong token" in one_line(err)
    # A read-only token reads...
    code, out, err = run(capsys, *base, "--token", READER, "status", "--json")
    assert code == 0, err
    for read in (["events"], ["breakers"], ["members"], ["incidents"]):
        assert run(capsys, *base, "--token", READER, *read)[0] == 0, read
    # ...and every write is refused, naming the method; the backend never sees it.
    writes = [
        ["drain", "r1"],
        ["promote", "r3"],
        ["members", "add", "10.0.0.9:7001"],
        ["restart", "r1"],
        ["sleep", "r1"],
        ["wake", "r3"],
        ["leader", "transfer"],
    ]
    for write in writes:
        code, _, err = run(capsys, *base, "--token", READER, *write)
        line = one_line(err)
        assert code == ctl.EXIT_CLUSTER and "needs an admin token" in line, (write, line)
    assert mtls_server.backend.replicas["r1"]["admin"] == "enabled"
    code, out, err = run(capsys, *base, "--token", ADMIN, "drain", "r1")
    assert code == 0 and "drained: r1" in out, err
    assert mtls_server.backend.replicas["r1"]["admin"] == "drained"


def test_client_certificates_are_required_and_checked(
    capsys: pytest.CaptureFixture[str], mtls_server: SecureServer, pki: Path
) -> None:
    endpoint = ["--endpoint", mtls_server.endpoint, "--token", ADMIN, "--timeout", "3"]
    # TLS but no client certificate: the handshake fails before any method runs.
    code, _, err = run(capsys, *endpoint, "--ca-file", str(pki / "ca" / "ca.crt"), "status")
    assert code == ctl.EXIT_UNREACHABLE, err
    one_line(err)
    # A certificate from another CA: refused the same way.
    code, _, err = run(capsys, *endpoint, *client_tls(pki, "intruder", "other"), "status")
    assert code == ctl.EXIT_UNREACHABLE, err
    one_line(err)
    # Plaintext against the TLS port.
    code, _, err = run(capsys, *endpoint, "status")
    assert code == ctl.EXIT_UNREACHABLE, err
    one_line(err)
    # The client does not trust a server whose CA it was not given.
    code, _, err = run(
        capsys,
        *endpoint,
        *client_tls(pki, "intruder", "other")[2:],
        "--ca-file",
        str(pki / "other" / "ca.crt"),
        "status",
    )
    assert code == ctl.EXIT_UNREACHABLE, err
    assert run(capsys, *endpoint, *client_tls(pki), "status")[0] == 0


def test_certificates_and_token_from_env_and_config_file(
    capsys: pytest.CaptureFixture[str],
    mtls_server: SecureServer,
    pki: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = pki / "ca"
    monkeypatch.setenv("HANODE_ENDPOINT", mtls_server.endpoint)
    monkeypatch.setenv("HANODE_TOKEN", READER)
    monkeypatch.setenv("HANODE_CA_FILE", str(ca / "ca.crt"))
    monkeypatch.setenv("HANODE_CERT_FILE", str(ca / "operator.crt"))
    monkeypatch.setenv("HANODE_KEY_FILE", str(ca / "operator.key"))
    assert run(capsys, "status")[0] == 0
    for name in ("ENDPOINT", "TOKEN", "CA_FILE", "CERT_FILE", "KEY_FILE"):
        monkeypatch.delenv(f"HANODE_{name}")
    config = tmp_path / "config" / "hanode" / "hanodectl.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'endpoint = "{mtls_server.endpoint}"\ntoken = "{ADMIN}"\n'
        f'ca_file = "{ca / "ca.crt"}"\ncert_file = "{ca / "operator.crt"}"\n'
        f'key_file = "{ca / "operator.key"}"\n'
    )
    code, out, err = run(capsys, "drain", "r2")
    assert code == 0 and "drained: r2" in out, err
    code, _, err = run(capsys, "--cert-file", str(ca / "operator.crt"), "--key-file", "", "status")
    assert code == 0  # an empty flag falls back to the config file's key
    config.write_text(f'endpoint = "{mtls_server.endpoint}"\ncert_file = "x"\n')
    code, _, err = run(capsys, "status")
    assert code == ctl.EXIT_USAGE and "together" in one_line(err)


def test_server_name_override(capsys: pytest.CaptureFixture[str], pki: Path) -> None:
    """A node certificate without the address hanodectl dials: --server-name names it."""
    ca = pki / "ca"
    srv = SecureServer(TlsFiles(ca / "operator.crt", ca / "operator.key"), (), ())
    srv.start()
    try:
        base = ["--endpoint", srv.endpoint, "--ca-file", str(ca / "ca.crt"), "--timeout", "3"]
        code, _, err = run(capsys, *base, "status")
        assert code == ctl.EXIT_UNREACHABLE, err
        code, _, err = run(capsys, *base, "--server-name", "operator", "status")
        assert code == 0, err
    finally:
        srv.stop()
