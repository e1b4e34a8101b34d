"""The private members of aiosmtplib and aiosmtpd that mailhook needs, used here and nowhere
else.

aiosmtplib has no public way to wait while the connection's send buffer is full (so that a large
message is written in pieces instead of copied whole into the transport), nor to see reply bytes
that the next hop sent without being asked (the sign of a session that is out of step, which
must never be reused).

aiosmtpd has no public hook to turn a client away before its greeting, to bound a command
line while it arrives, to read DATA without keeping every line as an object of its own, to
parse a plain address cheaply, nor to learn that a transaction ended: ``SMTPSession`` below
overrides the private steps behind these and offers them as named methods.

tests/unit/test_compat.py fails when an installed aiosmtplib or aiosmtpd changes any member used
here; pyproject.toml keeps both below their next major version.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import MISSING, SMTP, syntax
from aiosmtplib.protocol import SMTPProtocol

# Bytes each session received while no command was waiting for a reply. aiosmtplib drops such
# bytes silently; mailhook counts them so the session is closed instead of pooled.
_UNASKED: weakref.WeakKeyDictionary[SMTPProtocol, int] = weakref.WeakKeyDictionary()


async def drain(protocol: SMTPProtocol) -> None:
    """Wait while the transport's send buffer is above its high-water mark."""
    await protocol._drain_helper()  # noqa: SLF001


def watch_replies(client: aiosmtplib.SMTP) -> None:
    """Count the bytes a freshly connected session receives when no reply is awaited."""
    protocol = client.protocol
    if protocol is None:
        return
    received = protocol.data_received
    _UNASKED[protocol] = 0

    def data_received(data: bytes) -> None:
        if not _awaiting_reply(protocol):
            _UNASKED[protocol] = _UNASKED.get(protocol, 0) + len(data)
        received(data)

    protocol.data_received = data_received  # type: ignore[method-assign]


def _awaiting_reply(protocol: SMTPProtocol) -> bool:
    """Whether a command is waiting for a reply that has not been read yet (else aiosmtplib
    would drop the bytes that just arrived)."""
    waiter = protocol._response_waiter  # noqa: SLF001
    pending = bool(protocol._response_pending)  # noqa: SLF001
    return pending and waiter is not None and not waiter.done()


def unread_reply_bytes(client: aiosmtplib.SMTP) -> int:
    """Bytes of the session's replies that no command has read, or that arrived unasked.

    After the reply to the last command is read this must be 0: anything else means the next
    hop answered more than was asked (for example a second message smuggled into the first's
    data), and the next command would be paired with a stale reply.
    """
    protocol = client.protocol
    if protocol is None:
        return 0
    return len(protocol._buffer) + _UNASKED.get(protocol, 0)  # noqa: SLF001


# --- aiosmtpd ---------------------------------------------------------------------------------

TOO_MUCH_DATA = "552 5.3.4 Message size exceeds fixed maximum message size"


class CommandReader:
    """The client's stream as aiosmtpd's command loop reads it.

    A command line longer than the stream's limit is answered at once and its octets are
    dropped as they come, up to its line end; so a client holds at most about one socket read
    of memory however long its line is. aiosmtpd alone would buffer the line to its end before
    answering. Everything else is the stream's own, including the transport aiosmtpd swaps
    in after STARTTLS (its one path that reaches into the stream's internals).
    """

    def __init__(self, stream: asyncio.StreamReader, refuse: Callable[[], Awaitable[None]]) -> None:
        self.stream = stream
        self._refuse = refuse

    @property
    def _transport(self) -> Any:
        return self.stream._transport  # type: ignore[attr-defined]  # noqa: SLF001

    @_transport.setter
    def _transport(self, transport: Any) -> None:
        self.stream._transport = transport  # type: ignore[attr-defined]  # noqa: SLF001

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        while True:
            try:
                return await self.stream.readuntil(separator)
            except asyncio.LimitOverrunError as exc:
                await self.stream.read(exc.consumed)
                await self._refuse()
                await self._skip_line(separator)

    async def _skip_line(self, separator: bytes) -> None:
        while True:
            try:
                await self.stream.readuntil(separator)
                return
            except asyncio.LimitOverrunError as exc:
                await self.stream.read(exc.consumed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


async def begin_data(server: SMTP, arg: str) -> bool:
    """DATA's checks and its 354 as aiosmtpd makes them, for a server that reads the message
    itself; False when a reply already refused the command."""
    if await server.check_helo_needed() or await server.check_auth_needed("DATA"):
        return False
    assert server.envelope is not None
    if not server.envelope.rcpt_tos:
        await server.push("503 Error: need RCPT command")
        return False
    if arg:
        await server.push("501 Syntax: DATA")
        return False
    await server.push("354 End data with <CR><LF>.<CR><LF>")
    return True


class SMTPSession(SMTP):
    """aiosmtpd's SMTP session with its private steps offered as hooks for a subclass:
    ``admit`` (before the greeting), ``refuse_long_line``, ``plain_path`` (a cheap MAIL/RCPT
    argument parse), ``transaction_ended``; and DATA read into one buffer."""

    async def admit(self) -> bool:
        """Serve this client? (False: the hook has given it its reply and closed.)"""
        return True

    async def refuse_long_line(self) -> None:
        """Answer a command line longer than the stream's limit."""

    def plain_path(self, arg: str) -> tuple[str, str] | None:
        """(address, parameters) of a MAIL/RCPT argument, or None for aiosmtpd's own parser."""
        return None

    def transaction_ended(self) -> None:
        """The transaction ended (DATA answered, RSET, or a new EHLO)."""

    def starting_tls(self) -> bool:
        """Is aiosmtpd making the connection anew for STARTTLS (the same client, not a new
        one)? It calls ``connection_made`` again then, and starts the session afresh."""
        return self._original_transport is not None  # noqa: SLF001

    def _cb_client_connected(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        super()._cb_client_connected(reader, writer)
        self._client_stream = reader
        self._reader = CommandReader(reader, self.refuse_long_line)  # type: ignore[assignment]

    async def _handle_client(self) -> None:
        if await self.admit():
            await super()._handle_client()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = self.plain_path(arg)
        return plain if plain is not None else super()._getaddr(arg)

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()  # type: ignore[no-untyped-call]
        self.transaction_ended()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """DATA as aiosmtpd answers it, with the message read into one buffer.

        aiosmtpd keeps every line as its own object until the end of the message, which costs
        about twice the message's size again on top of the message itself; this appends each
        line to one buffer as it arrives.
        """
        if self._decode_data:
            await super().smtp_DATA(arg)  # not how mailhook runs, but aiosmtpd knows how
            return
        if not await begin_data(self, arg):
            return
        assert self.envelope is not None
        content, problem = await self._read_message()
        if content is None:
            return  # the client went away
        if problem:
            await self.push(problem)
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA") if "DATA" in self._handle_hooks else MISSING
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_message(self) -> tuple[bytes | None, str]:
        """The message up to the lone dot, unstuffed (RFC 5321 4.5.2), and the refusal for it
        ("" when it is fine); None when the connection ended first.

        The size limit applies to the message as it will be relayed: the dots SMTP adds in
        transit are not counted. Past the size limit nothing more is kept.

        Lines end at CRLF only, as for commands. The stream is read in pieces that end at
        ".<CRLF>" (or at the stream's limit), not line by line: a line of its own that is a
        dot can only end such a piece, and a piece costs as much as a line did.
        """
        stream, limit = self._client_stream, self.data_size_limit
        buffer = bytearray()
        too_big = False
        tail = b"\r\n"  # the last two octets read: the message begins at a line start
        while self.transport is not None:
            try:
                piece = await stream.readuntil(b".\r\n")
            except asyncio.CancelledError:
                self._writer.close()  # the connection was reset during DATA
                raise
            except asyncio.LimitOverrunError as exc:
                piece = await stream.read(exc.consumed)  # as much as there is, no ".<CRLF>"
            seen = tail + piece
            ended = seen.endswith(b"\r\n.\r\n")
            if ended:
                seen = seen[:-3]
            # A dot that begins a line is SMTP's, not the message's; the two octets before
            # the piece only show where its first line begins and are never changed.
            text = seen.replace(b"\r\n.", b"\r\n")[len(tail):]
            tail = (tail + piece)[-2:]
            if not too_big and limit and len(buffer) + len(text) > limit:
                too_big = True
                buffer = bytearray()  # keep reading to the end, but keep nothing
            if not too_big:
                buffer += text
            if ended:
                if too_big:
                    return b"", TOO_MUCH_DATA
                content = bytes(buffer)
                del buffer[:]
                return content, ""
        return None, ""
