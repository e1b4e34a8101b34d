"""Canary for mailhook/compat.py: the aiosmtplib private members it uses are still there and
still mean what compat.py assumes. A failure here means the installed aiosmtplib changed:
adapt mailhook/compat.py (and the version bound in pyproject.toml) before anything else."""

from __future__ import annotations

import asyncio
import inspect
import re
import tomllib
from collections.abc import AsyncIterator, Callable
from importlib.metadata import version
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtplib.protocol import SMTPProtocol

from mailhook import compat

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
CHANGED = "the installed aiosmtplib changed a private member mailhook/compat.py relies on: "


def test_aiosmtplib_is_bounded_below_its_next_major_version():
    """pyproject.toml keeps aiosmtplib below the next major version, and the installed one is
    inside that range."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [spec] = [d for d in dependencies if d.startswith("aiosmtplib")]
    bounds = re.fullmatch(r"aiosmtplib>=(\d+)\.(\d+),<(\d+)", spec.replace(" ", ""))
    assert bounds, f"aiosmtplib needs a lower and an upper bound, not {spec!r}"
    installed = tuple(int(n) for n in version("aiosmtplib").split(".")[:2])
    lower, upper = (int(bounds[1]), int(bounds[2])), int(bounds[3])
    assert lower <= installed and installed[0] < upper, (version("aiosmtplib"), spec)


def test_private_members_are_there():
    """SMTPProtocol still has _drain_helper (a coroutine), and a connected protocol keeps
    _buffer, _response_waiter and _response_pending."""
    assert inspect.iscoroutinefunction(getattr(SMTPProtocol, "_drain_helper", None)), (
        CHANGED + "SMTPProtocol._drain_helper")
    protocol = SMTPProtocol(loop=asyncio.new_event_loop())
    assert isinstance(getattr(protocol, "_buffer", None), bytearray), CHANGED + "_buffer"
    assert hasattr(protocol, "_response_waiter"), CHANGED + "_response_waiter"
    assert isinstance(getattr(protocol, "_response_pending", None), bool), (
        CHANGED + "_response_pending")
    protocol._loop.close()  # noqa: SLF001


Replies = Callable[[bytes], list[bytes]]
LATER = b"421 4.4.2 idle too long\r\n"


@pytest.fixture
async def next_hop() -> AsyncIterator[Callable[[Replies], asyncio.Future[int]]]:
    """Start a tiny SMTP server on loopback whose replies to each command line are scripted
    (all pushed in one write); after "NOOP LATER" it also speaks up unasked a moment later."""
    servers: list[asyncio.Server] = []

    async def start(script: Replies) -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 canary ESMTP\r\n")
            while line := await reader.readline():
                writer.write(b"".join(script(line.strip())))
                await writer.drain()
                if line.strip().upper() == b"NOOP LATER":
                    await asyncio.sleep(0.1)
                    writer.write(LATER)
                    await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


def _ordinary(command: bytes) -> list[bytes]:
    if command.upper().startswith(b"QUIT"):
        return [b"221 bye\r\n"]
    if command.upper() == b"NOOP TWICE":
        return [b"250 ok\r\n", b"250 2.0.0 queued as FORGED\r\n"]  # one reply too many
    return [b"250 ok\r\n"]


async def _connected(port: int) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5, start_tls=False)
    await client.connect()
    compat.watch_replies(client)
    await client.ehlo()
    return client


async def test_a_session_in_step_has_nothing_unread(next_hop):
    """After ordinary command/reply pairs, no reply bytes are left over, and drain returns."""
    client = await _connected(await next_hop(_ordinary))
    await client.noop()
    assert compat.unread_reply_bytes(client) == 0
    assert client.protocol is not None
    await asyncio.wait_for(compat.drain(client.protocol), 5)
    await client.quit()


async def test_a_second_reply_in_the_same_read_is_seen(next_hop):
    """A reply that came with the one the command read stays visible as unread bytes
    (aiosmtplib keeps it in _buffer)."""
    client = await _connected(await next_hop(_ordinary))
    await client.execute_command(b"NOOP", b"TWICE")
    assert compat.unread_reply_bytes(client) == len(b"250 2.0.0 queued as FORGED\r\n"), (
        CHANGED + "an extra reply is no longer kept in SMTPProtocol._buffer")
    client.close()


async def test_a_reply_that_arrives_while_idle_is_seen(next_hop):
    """Bytes that arrive while no command waits for a reply (aiosmtplib drops them) are
    counted by the watch compat.py puts on the session."""
    client = await _connected(await next_hop(_ordinary))
    await client.execute_command(b"NOOP", b"LATER")
    for _ in range(500):  # up to 5 s for the server's 0.1 s pause
        if compat.unread_reply_bytes(client):
            break
        await asyncio.sleep(0.01)
    assert compat.unread_reply_bytes(client) == len(LATER), (
        CHANGED + "unasked bytes can no longer be watched through data_received")
    client.close()
