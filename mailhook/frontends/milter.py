"""The milter front end: speaks the Sendmail milter protocol with Postfix (``smtpd_milters``,
``non_smtpd_milters``) or Sendmail (``INPUT_MAIL_FILTER``) and hands each message to the flow.

The packets are read and written with ``kilter.protocol`` (its parser and encoder, no I/O);
this module is the asyncio connection around it. A message is collected from the MAIL, RCPT,
header and body steps; at its end the flow runs with an outlet that keeps the rewritten bytes
instead of relaying them, and the MTA is told to replace the body and change the headers the
rewrite changed. The flow's reply becomes the milter's answer: 2xx continue, 4xx a temporary
failure with mailhook's text (the MTA keeps the message and retries), 5xx a rejection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from dataclasses import dataclass, field

from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.messages import (
    Abort,
    ActionFlags,
    AddHeader,
    Body,
    ChangeHeader,
    Close,
    Connect,
    Continue,
    Data,
    EndOfHeaders,
    EndOfMessage,
    EnvelopeFrom,
    EnvelopeRecipient,
    Header,
    Helo,
    Macro,
    Message,
    Negotiate,
    ProtocolFlags,
    ReplaceBody,
    ReplyCode,
    Stage,
    Unknown,
)

from mailhook.config import MilterSettings, milter_socket
from mailhook.core.envelope import Upstream
from mailhook.core.replies import INTERNAL_ERROR, SHUTTING_DOWN, Reply
from mailhook.flow import Flow

log = logging.getLogger("mailhook.milter")

# The largest packet taken from the MTA. Body chunks are at most 65535 bytes (no larger size
# is negotiated); a header is bounded by Postfix's header_size_limit (100 KiB). Anything
# claiming more is not a milter client: the connection is dropped before reading it.
MAX_PACKET = 1024 * 1024
REPLACE_CHUNK = 65535  # libmilter's chunk size for body replacement
IDLE_TIMEOUT = 7200.0  # an MTA keeps milter connections open between messages
MAX_MESSAGE = 256 * 1024 * 1024  # a message larger than this is passed unchanged, unread
# What mailhook asks of the MTA: the steps it needs, none of them answered one by one
# ("no reply" flags) where the MTA offers that, and the end-of-message macros for the log line.
WANTED_STEPS = (ProtocolFlags.NO_CONNECT | ProtocolFlags.NO_HELO | ProtocolFlags.NO_UNKNOWN
                | ProtocolFlags.NO_DATA | ProtocolFlags.HEADER_LEADING_SPACE)
NO_REPLY_STEPS = (ProtocolFlags.NR_SENDER | ProtocolFlags.NR_RECIPIENT | ProtocolFlags.NR_HEADER
                  | ProtocolFlags.NR_END_OF_HEADERS | ProtocolFlags.NR_BODY)
ACTIONS = ActionFlags.CHANGE_BODY | ActionFlags.CHANGE_HEADERS | ActionFlags.ADD_HEADERS
END_MACROS = ("i", "{client_addr}", "{client_name}")
REWRITTEN_HEADERS = ("content-type", "content-transfer-encoding")
_HEADER = struct.Struct("!L")


class ProtocolError(Exception):
    """The peer broke the milter protocol; its connection is closed."""


@dataclass
class Pending:
    """One message as the milter steps told it (envelope, header fields, body)."""

    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    size: int = 0  # octets of header fields and body taken so far
    too_large: bool = False

    def content(self) -> bytes:
        """The message as bytes with CRLF line ends, as the SMTP front end would see it."""
        lines = b"".join(name.encode("ascii") + b":" + _crlf(value) + b"\r\n"
                         for name, value in self.headers)
        return lines + b"\r\n" + bytes(self.body)


class Collected:
    """The outlet of a milter transaction: keeps the message the flow would relay."""

    smtputf8 = True  # the message goes back to the MTA that took it

    def __init__(self) -> None:
        self.content: bytes | None = None

    async def rcpt(self, address: str, options: list[str]) -> Reply:
        return Reply(250, "2.1.5 Ok")

    async def data(self, content: bytes) -> Reply:
        self.content = content
        return Reply(250, "2.0.0 Ok")

    async def close(self) -> None:
        return None


class MilterServer:
    """The milter listener on the socket ``[milter] listen`` names."""

    def __init__(self, flow: Flow, settings: MilterSettings) -> None:
        self.flow = flow
        self.settings = settings
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        kind, where, port = milter_socket(self.settings.listen)
        if kind == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(where)  # a socket left by an earlier run
            self._server = await asyncio.start_unix_server(self._serve, where)
            os.chmod(where, int(self.settings.socket_mode, 8))
        else:
            self._server = await asyncio.start_server(self._serve, where, port)
        log.info("milter listening on %s", self.address)

    @property
    def address(self) -> str:
        """The socket in Postfix's notation (with the real port when 0 was asked for)."""
        kind, _where, _ = milter_socket(self.settings.listen)
        if kind == "unix" or self._server is None:
            return self.settings.listen
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"inet:{'[' + host + ']' if ':' in host else host}:{port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await MilterConnection(self.flow, reader, writer).run()
        except ProtocolError as exc:
            log.warning("milter client dropped: %s", exc)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the MTA went away or fell silent: nothing was accepted, it retries
        except Exception:
            log.exception("milter connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class MilterConnection:
    """One MTA connection: any number of messages, one after another."""

    def __init__(self, flow: Flow, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.flow = flow
        self.reader = reader
        self.writer = writer
        self.macros: dict[str, str] = {}
        self.message = Pending()
        self.no_reply = ProtocolFlags.NONE

    async def run(self) -> None:
        while True:
            packet = await self._receive()
            if packet is None:
                return
            if not await self._dispatch(packet):
                return

    async def _receive(self) -> Message | None:
        try:
            size = _HEADER.unpack(await asyncio.wait_for(self.reader.readexactly(4),
                                                         IDLE_TIMEOUT))[0]
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ProtocolError("truncated packet length") from None
            return None  # a clean end between packets
        if not 1 <= size <= MAX_PACKET:
            raise ProtocolError(f"packet of {size} bytes (at most {MAX_PACKET} taken)")
        try:
            data = await asyncio.wait_for(self.reader.readexactly(size), IDLE_TIMEOUT)
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed inside a packet") from None
        return _decode(_HEADER.pack(size) + data)

    async def _dispatch(self, packet: Message) -> bool:  # noqa: C901 - one case per packet kind
        """Handle one packet; False when the connection is to end."""
        match packet:
            case Negotiate():
                await self._send(self._negotiate(packet))
            case Macro():
                self.macros.update(packet.macros)
            case EnvelopeFrom():
                self.message = Pending(sender=_address(packet.sender))
                await self._answer(ProtocolFlags.NR_SENDER)
            case EnvelopeRecipient():
                self.message.recipients.append(_address(packet.recipient))
                await self._answer(ProtocolFlags.NR_RECIPIENT)
            case Header():
                self._collect(packet.name, bytes(packet.value))
                await self._answer(ProtocolFlags.NR_HEADER)
            case EndOfHeaders():
                await self._answer(ProtocolFlags.NR_END_OF_HEADERS)
            case Body():
                self._collect_body(bytes(packet.content))
                await self._answer(ProtocolFlags.NR_BODY)
            case EndOfMessage():
                self._collect_body(bytes(packet.content))
                await self._end_of_message()
            case Abort():
                self.message = Pending()
            case Close():
                return False
            case Connect() | Helo() | Data() | Unknown():
                await self._send(Continue())
            case _:
                raise ProtocolError(f"unexpected {type(packet).__name__} packet")
        return True

    def _negotiate(self, offer: Negotiate) -> Negotiate:
        if offer.version < 6:
            raise ProtocolError(f"milter protocol version {offer.version} (6 needed)")
        missing = ACTIONS & ~offer.action_flags
        if missing:
            raise ProtocolError(f"the MTA does not allow {missing!r}")
        steps = WANTED_STEPS & offer.protocol_flags
        self.no_reply = NO_REPLY_STEPS & offer.protocol_flags
        macros = {Stage.END_MESSAGE: END_MACROS} if ActionFlags.SETSYMLIST & offer.action_flags \
            else {}
        actions = ACTIONS | (ActionFlags.SETSYMLIST if macros else ActionFlags.NONE)
        return Negotiate(6, actions, steps | self.no_reply, macros)

    async def _answer(self, no_reply: ProtocolFlags) -> None:
        if not no_reply & self.no_reply:
            await self._send(Continue())

    def _collect(self, name: str, value: bytes) -> None:
        # A running total: summing every field again per field costs the square of their number.
        if self._taken(len(name) + len(value)):
            self.message.headers.append((name, value))

    def _collect_body(self, chunk: bytes) -> None:
        if self._taken(len(chunk)):
            self.message.body += chunk

    def _taken(self, octets: int) -> bool:
        """Count ``octets`` more of the message; False (and nothing kept) once it is over
        MAX_MESSAGE, so a message too large to handle holds no memory."""
        message = self.message
        message.size += octets
        if message.too_large or message.size > MAX_MESSAGE:
            message.too_large = True
            message.headers.clear()
            message.body.clear()
            return False
        return True

    async def _end_of_message(self) -> None:
        message, self.message = self.message, Pending()
        if message.too_large:
            log.warning("message over %d bytes passed unchanged", MAX_MESSAGE)
            await self._send(Continue())
            return
        if self.flow.stopping:
            await self._reply(SHUTTING_DOWN)
            return
        original = message.content()
        outlet = Collected()
        transaction = self.flow.transaction(message.sender, outlet, self._upstream())
        try:
            reply = await transaction.finish(message.recipients, original, smtputf8=True)
        except Exception:
            log.exception("the flow failed; the MTA is asked to try again")
            reply = INTERNAL_ERROR
        if reply.ok and outlet.content is not None and outlet.content != original:
            for change in changes(original, outlet.content):
                await self._send(change)
        await self._reply(reply)

    def _upstream(self) -> Upstream:
        name, addr = self.macros.get("{client_name}", ""), self.macros.get("{client_addr}", "")
        client = f"{name or 'unknown'}[{addr}]" if addr else name
        return Upstream(queue_id=self.macros.get("i", ""), client=client)

    async def _reply(self, reply: Reply) -> None:
        if reply.ok:
            await self._send(Continue())
            return
        # The MTA takes "4xx"/"5xx" with an enhanced status code and our text.
        code = 451 if reply.temporary else (reply.code if reply.code >= 500 else 550)
        text = reply.text.replace("%", "%%").replace("\r", " ").replace("\n", " ")
        await self._send(ReplyCode(f"{code} {text}".encode("utf-8", "replace") + b"\0"))

    async def _send(self, message: Message) -> None:
        buffer = SimpleBuffer(_packed_size(message))
        message.pack(buffer)
        self.writer.write(bytes(buffer[:]))
        await self.writer.drain()


def changes(original: bytes, rewritten: bytes) -> list[Message]:
    """The milter modifications that turn ``original`` into ``rewritten``: the body replaced
    when it changed, and the top-level MIME headers the rewrite changed."""
    old_head, old_body = _split(original)
    new_head, new_body = _split(rewritten)
    result: list[Message] = []
    old_fields, new_fields = _fields(old_head), _fields(new_head)
    for name in REWRITTEN_HEADERS:
        before = [value for key, value in old_fields if key.lower() == name]
        after = [value for key, value in new_fields if key.lower() == name]
        if before == after:
            continue
        spelled = next((key for key, _ in new_fields + old_fields if key.lower() == name), name)
        for index in range(max(len(before), len(after))):
            value = after[index] if index < len(after) else b""
            if index < len(before):
                result.append(ChangeHeader(index + 1, spelled, _lf(value)))
            else:
                result.append(AddHeader(spelled, _lf(value)))
    if new_body != old_body:
        result += [ReplaceBody(new_body[start:start + REPLACE_CHUNK])
                   for start in range(0, len(new_body), REPLACE_CHUNK)] or [ReplaceBody(b"")]
    return result


def _split(content: bytes) -> tuple[bytes, bytes]:
    end = content.find(b"\r\n\r\n")
    if end < 0:
        return content, b""
    return content[:end + 2], content[end + 4:]


def _fields(head: bytes) -> list[tuple[str, bytes]]:
    """The header fields as (name, raw value with its folding) pairs."""
    fields: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif b":" in line:
            raw_name, _, value = line.partition(b":")
            fields.append((raw_name.decode("ascii", "replace").strip(), value))
    return fields


def _decode(packet: bytes) -> Message:
    buffer = SimpleBuffer(len(packet))
    buffer[:] = packet
    try:
        message, _ = Message.unpack(buffer)
    except Exception as exc:  # noqa: BLE001 - the library's parse errors differ by packet (assert, struct)
        raise ProtocolError(f"malformed packet {packet[4:5]!r}: {exc or type(exc).__name__}") \
            from None
    if hasattr(message, "freeze"):
        message.freeze()
    return message


def _packed_size(message: Message) -> int:
    return 256 + sum(len(value) for value in vars(message).values()
                    if isinstance(value, bytes | str))


def _address(value: bytes | memoryview) -> str:
    text = bytes(value).decode("utf-8", "replace").strip()
    return text[1:-1] if text.startswith("<") and text.endswith(">") else text


def _crlf(value: bytes) -> bytes:
    """A header value as the MTA sends it (folded lines end in LF) with CRLF line ends."""
    return value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _lf(value: bytes) -> bytes:
    return value.replace(b"\r\n", b"\n")
