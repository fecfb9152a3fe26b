"""gRPC credentials from TLS files, for the control API's server and for its clients
(hanodectl, and a node forwarding a leader transfer to the leader)."""

from __future__ import annotations

from typing import Any

import grpc

from hanode.security.tls import TlsFiles

__all__ = ["channel_credentials", "server_credentials"]


def server_credentials(files: TlsFiles) -> Any:
    """Server TLS; with ``ca_file``, clients must present a certificate that CA signed (mTLS)."""
    ca = files.ca()
    return grpc.ssl_server_credentials(
        [(files.key(), files.cert())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def channel_credentials(
    ca: bytes | None, cert: bytes | None = None, key: bytes | None = None
) -> Any:
    """Client TLS trusting ``ca`` (the system roots when None), presenting ``cert`` if given."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
