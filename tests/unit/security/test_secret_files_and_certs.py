"""Secret file permissions and the `hanode certs` CA (issue 14)."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from hanode.security.certs import CertError, init_ca, issue_node
from hanode.security.secret_files import secret_file_problem
from hanode.security.tls import TlsError, TlsFiles, server_ssl_context


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_files_pass(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "s"
    path.write_text("x")
    path.chmod(mode)
    assert secret_file_problem(path) is None


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o620, 0o602, 0o660])
def test_files_open_to_group_or_others_are_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "s"
    path.write_text("x")
    path.chmod(mode)
    problem = secret_file_problem(path)
    assert problem is not None and f"mode {mode:04o}" in problem and "chmod 600" in problem


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    problem = secret_file_problem(tmp_path / "nope")
    assert problem is not None and "cannot read" in problem and "nope" in problem


def test_ca_and_node_certificates(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    node = issue_node(tmp_path, "gpu-node-1", ["10.0.0.11", "gpu-node-1.internal", "10.0.0.11"])
    for key in (ca.key, node.key):
        assert secret_file_problem(key) is None  # written 0600
    cert = x509.load_pem_x509_certificate(node.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gpu-node-1", "gpu-node-1.internal"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.11"]
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    # Usable as a TLS server context, the CA as the client-certificate authority.
    ctx = server_ssl_context(TlsFiles(node.cert, node.key, ca.cert))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(CertError, match="exists"):
        init_ca(tmp_path)  # never overwrites a CA
    with pytest.raises(CertError, match="exists"):
        issue_node(tmp_path, "gpu-node-1")
    with pytest.raises(CertError, match="hanode certs init"):
        issue_node(tmp_path / "empty", "n1")
    with pytest.raises(CertError, match="not a node name"):
        issue_node(tmp_path, "../x")
    with pytest.raises(TlsError):
        server_ssl_context(TlsFiles(tmp_path / "none.crt", node.key))


def test_hanode_certs_command(tmp_path: Path) -> None:
    def certs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hanode", "certs", "--dir", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert certs("node", "n1").returncode == 1  # no CA yet: one line
    assert certs("init").returncode == 0
    done = certs("node", "n1", "--host", "127.0.0.1")
    assert done.returncode == 0 and "n1.crt" in done.stdout, done.stderr
    again = certs("init")
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "exists" in again.stderr
