"""One keep-alive client connection for the bench's stream clients: send a request, read its
response into a :class:`~bench.sse.StreamTally`, and open a new connection after an error or
when the server closes (the relay run and the per-target failover run count the same way)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from bench.harness import HOST
from bench.sse import StreamTally


class KeepAlive:
    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def exchange(
        self, request: bytes, read_timeout: Callable[[], float]
    ) -> tuple[StreamTally, BaseException | None]:
        """One request and its response; ``read_timeout()`` bounds each read. An error is
        returned, not raised; the connection is dropped after one, or after a response that
        did not finish or said ``connection: close``."""
        tally = StreamTally()
        error: BaseException | None = None
        try:
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
            assert self._reader is not None
            self._writer.write(request)
            while not tally.finished:
                data = await asyncio.wait_for(self._reader.read(65536), read_timeout())
                if not data:
                    tally.eof()
                    break
                tally.feed(data)
        except (OSError, TimeoutError, ValueError) as exc:
            error = exc
        if error is not None or not tally.finished or tally.close:
            await self.close()
        return tally, error

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
