"""The node <-> worker channel: length-prefixed pickled messages over an inherited socketpair.

Pickle is safe here because nothing else can reach the channel: it is one end of a
``socketpair()`` made by the node and passed to the worker it starts (an inherited file
descriptor, no path, no port), so both ends are the same program run by the same user. It is
never used on a socket anyone can connect to (the Raft port has its own password and framing).
A message is ``(kind, payload)``; a frame larger than :data:`MAX_FRAME` ends the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import socket
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024  # a pool snapshot of thousands of replicas is a few MB
# A peer that reads nothing while this much waits for it is stuck: the sender stops writing
# (stuck), and the node replaces the worker.
MAX_BACKLOG = 256 * 1024 * 1024

Message = tuple[str, Any]


class ChannelClosed(Exception):
    """The other end went away (EOF, reset, an oversized or broken frame)."""


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.closed = False

    @classmethod
    async def over(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_FRAME)
        return cls(reader, writer)

    @property
    def stuck(self) -> bool:
        transport = self._writer.transport
        return transport.get_write_buffer_size() > MAX_BACKLOG

    def send(self, kind: str, payload: Any = None) -> bool:
        """Queue one message; False when the channel is closed or the peer is stuck."""
        if self.closed or self._writer.is_closing() or self.stuck:
            return False
        data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(HEADER.pack(len(data)) + data)
        return True

    async def recv(self) -> Message:
        """The next message; raises :class:`ChannelClosed` when there is none to come."""
        try:
            head = await self._reader.readexactly(HEADER.size)
            (size,) = HEADER.unpack(head)
            if size > MAX_FRAME:
                raise ChannelClosed(f"frame of {size} bytes (at most {MAX_FRAME})")
            kind, payload = pickle.loads(await self._reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            raise ChannelClosed(repr(exc)) from None
        except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as exc:
            raise ChannelClosed(f"unreadable frame: {exc!r}") from None
        return str(kind), payload

    async def drain(self) -> None:
        """Wait until what was sent has been handed to the kernel (before exiting)."""
        if not self.closed and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.drain()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()
