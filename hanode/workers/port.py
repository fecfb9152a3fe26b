"""The router port shared by a node's data-plane workers (SO_REUSEPORT)."""

from __future__ import annotations

import socket


def reuseport_socket(host: str, port: int, backlog: int | None = None) -> socket.socket:
    """A socket bound to ``host:port`` in the port's SO_REUSEPORT group; listening (and
    non-blocking) when ``backlog`` is given.

    The node binds one without listening to reserve the port while workers come and go: only
    sockets of the same user may join the group, and connections go only to listening ones.
    Each worker binds one that listens; the kernel spreads new connections over those."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if info[0] == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(info[4])
        if backlog is not None:
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
