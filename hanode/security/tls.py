"""TLS material from files: server contexts for the front door, credentials for gRPC.

Files are read once at start; a missing or unreadable file is a ``TlsError`` with one line
naming it. Rotation is a restart (systemd reload is not wired to it).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsError", "TlsFiles", "server_ssl_context"]


class TlsError(Exception):
    """TLS material cannot be used (one line, naming the file)."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A certificate chain, its private key and (optionally) the CA that signs peers."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None

    def cert(self) -> bytes:
        return _read(self.cert_file, "certificate")

    def key(self) -> bytes:
        return _read(self.key_file, "private key")

    def ca(self) -> bytes | None:
        return None if self.ca_file is None else _read(self.ca_file, "CA certificate")


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A TLS 1.2+ server context; with ``ca_file``, clients must present a certificate it
    signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(files.cert_file), str(files.key_file))
        if files.ca_file is not None:
            ctx.load_verify_locations(cafile=str(files.ca_file))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(
            f"cannot load {files.cert_file} / {files.key_file}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
