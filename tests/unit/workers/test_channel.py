"""The node <-> worker channel: framing, EOF, oversized frames, worker counts."""

from __future__ import annotations

import asyncio
import socket

import pytest

from hanode.workers import channel as channel_mod
from hanode.workers.channel import HEADER, Channel, ChannelClosed
from hanode.workers.count import AUTO_CAP, resolve_workers


async def pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return await Channel.over(a), await Channel.over(b)


def test_messages_arrive_in_order_and_eof_closes() -> None:
    asyncio.run(_in_order())


async def _in_order() -> None:
    a, b = await pair()
    for i in range(100):
        assert a.send("n", {"i": i, "blob": b"x" * i})
    for i in range(100):
        kind, payload = await b.recv()
        assert (kind, payload["i"], len(payload["blob"])) == ("n", i, i)
    a.close()
    with pytest.raises(ChannelClosed):
        await b.recv()
    assert not a.send("late", None)


def test_an_oversized_frame_ends_the_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel_mod, "MAX_FRAME", 16)
    asyncio.run(_oversized())


async def _oversized() -> None:
    a, b = await pair()
    a.send("big", b"y" * 100)
    with pytest.raises(ChannelClosed, match="frame of"):
        await b.recv()


def test_a_broken_frame_ends_the_channel() -> None:
    asyncio.run(_broken())


async def _broken() -> None:
    x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    b = await Channel.over(y)
    x.sendall(HEADER.pack(5) + b"nope!")
    with pytest.raises(ChannelClosed, match="unreadable"):
        await asyncio.wait_for(b.recv(), 5)
    x.close()


def test_worker_counts() -> None:
    assert resolve_workers(1, 64) == 1
    assert resolve_workers(3, 2) == 3  # as asked, even past the cores
    assert resolve_workers("auto", 2) == 2
    assert resolve_workers("auto", 1) == 1
    assert resolve_workers("auto", 256) == AUTO_CAP
