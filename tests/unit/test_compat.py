"""Canary for mailhook/compat.py: the aiosmtplib and aiosmtpd private members it uses are still
there and still mean what compat.py assumes. A failure here means the installed library changed:
adapt mailhook/compat.py (and the version bound in pyproject.toml) before anything else."""

from __future__ import annotations

import asyncio
import inspect
import re
import tomllib
from collections.abc import AsyncIterator, Callable
from importlib.metadata import version
from pathlib import Path

import aiosmtpd.smtp
import aiosmtplib
import pytest
from aiosmtplib.protocol import SMTPProtocol

from mailhook import compat

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
CHANGED = "the installed aiosmtplib changed a private member mailhook/compat.py relies on: "
SERVER_CHANGED = "the installed aiosmtpd changed a private member mailhook/compat.py relies on: "


@pytest.mark.parametrize("library", ["aiosmtplib", "aiosmtpd"])
def test_library_is_bounded_below_its_next_major_version(library):
    """pyproject.toml keeps each library whose private members compat.py uses below its next
    major version, and the installed one is inside that range."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [spec] = [d for d in dependencies if re.match(rf"{library}\b(?!-)", d)]
    spec = spec.split("#")[0]
    bounds = re.fullmatch(rf"{library}>=(\d+)\.(\d+)(?:\.\d+)?,<(\d+)", spec.replace(" ", ""))
    assert bounds, f"{library} needs a lower and an upper bound, not {spec!r}"
    installed = tuple(int(n) for n in version(library).split(".")[:2])
    lower, upper = (int(bounds[1]), int(bounds[2])), int(bounds[3])
    assert lower <= installed and installed[0] < upper, (version(library), spec)


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


# --- aiosmtpd ---------------------------------------------------------------------------------


def _parameters(function: Callable[..., object]) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_aiosmtpd_private_members_are_there():
    """aiosmtpd's SMTP still has the private steps compat.SMTPSession overrides or calls, with
    the parameters it passes."""
    smtp = aiosmtpd.smtp.SMTP
    expected = {
        "_cb_client_connected": ["self", "reader", "writer"],
        "_handle_client": ["self"],
        "_getaddr": ["self", "arg"],
        "_set_post_data_state": ["self"],
        "_call_handler_hook": ["self", "command", "args"],
    }
    for name, parameters in expected.items():
        member = getattr(smtp, name, None)
        assert callable(member), SERVER_CHANGED + name
        assert _parameters(member) == parameters, SERVER_CHANGED + f"{name} parameters"
    for name in ("_handle_client", "_call_handler_hook", "smtp_DATA"):
        assert inspect.iscoroutinefunction(getattr(smtp, name)), SERVER_CHANGED + name
    session = smtp(object(), decode_data=False)
    assert session._decode_data is False, SERVER_CHANGED + "_decode_data"  # noqa: SLF001
    assert isinstance(session._handle_hooks, dict), SERVER_CHANGED + "_handle_hooks"  # noqa: SLF001
    assert session._getaddr("<a@b.example> SIZE=10") == ("a@b.example", "SIZE=10"), (  # noqa: SLF001
        SERVER_CHANGED + "_getaddr's result")
    # None until STARTTLS, then the plain transport (compat.SMTPSession.starting_tls).
    assert session._original_transport is None, SERVER_CHANGED + "_original_transport"  # noqa: SLF001
    assert "self._original_transport = self.transport" in inspect.getsource(smtp.smtp_STARTTLS), (
        SERVER_CHANGED + "smtp_STARTTLS")


class Hooks(compat.SMTPSession):
    """A session that records which of compat's hooks aiosmtpd reached, and when."""

    events: list[str]
    line_length_limit = 100  # the stream's limit, set when aiosmtpd makes the stream

    async def admit(self) -> bool:
        self.events.append("admit")
        return True

    async def refuse_long_line(self) -> None:
        self.events.append("long line")
        await self.push("500 5.5.2 Line too long")

    def plain_path(self, arg: str) -> tuple[str, str] | None:
        self.events.append(f"path {arg.strip()}")
        return None  # aiosmtpd's own parser then

    def transaction_ended(self) -> None:
        self.events.append("ended")


class Keeper:
    """An aiosmtpd handler that keeps the message and how it saw the streams."""

    def __init__(self) -> None:
        self.content = b""
        self.streams: tuple[type, type] | None = None

    async def handle_DATA(self, server, session, envelope) -> str:
        self.content = envelope.original_content
        self.streams = (type(server._reader), type(server._writer))  # noqa: SLF001
        return "250 2.0.0 kept"


async def test_aiosmtpd_reaches_every_hook_of_compat():
    """On a real session aiosmtpd calls compat's steps where compat assumes: the admission
    before the greeting, the bounded command reader, the address parse, DATA read into one
    buffer and handed to handle_DATA, the end of each transaction."""
    events: list[str] = []
    keeper = Keeper()

    def session() -> Hooks:
        hooks = Hooks(keeper, hostname="canary.test", data_size_limit=10_000)
        hooks.events = events
        return hooks

    server = await asyncio.get_running_loop().create_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def say(line: bytes) -> bytes:
        writer.write(line)
        reply = b""
        while not reply[3:4] == b" ":
            reply = await asyncio.wait_for(reader.readline(), 5)
        return reply

    try:
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"220")
        assert "admit" in events, SERVER_CHANGED + "_handle_client before the greeting"
        assert (await say(b"EHLO client.test\r\n")).startswith(b"250")
        assert (await say(b"NOOP " + b"x" * 300 + b"\r\n")).startswith(b"500")
        assert "long line" in events, SERVER_CHANGED + "_reader from _cb_client_connected"
        assert (await say(b"MAIL FROM:<a@example.com>\r\n")).startswith(b"250")
        assert "path <a@example.com>" in events, SERVER_CHANGED + "_getaddr for MAIL"
        assert (await say(b"RCPT TO:<b@example.com>\r\n")).startswith(b"250")
        assert (await say(b"DATA\r\n")).startswith(b"354")
        ended = events.count("ended")
        assert (await say(b"Subject: x\r\n\r\n..dot\r\n.\r\n")) == b"250 2.0.0 kept\r\n"
        assert keeper.content == b"Subject: x\r\n\r\n.dot\r\n"
        assert keeper.streams == (compat.CommandReader, asyncio.StreamWriter), (
            SERVER_CHANGED + "_reader/_writer")
        assert events.count("ended") == ended + 1, SERVER_CHANGED + "_set_post_data_state"
        assert (await say(b"RSET\r\n")).startswith(b"250")
        assert events.count("ended") == ended + 2, SERVER_CHANGED + "_set_post_data_state on RSET"
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
