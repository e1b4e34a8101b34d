"""The milter front end: speaks the Sendmail milter protocol with Postfix (``smtpd_milters``,
``non_smtpd_milters``) or Sendmail (``INPUT_MAIL_FILTER``) and hands each message to the flow.

The packets are read and written with ``kilter.protocol`` (``milter_packets`` frames them);
this module is the asyncio connection around them. A message is collected from the MAIL, RCPT,
header and body steps. One that cannot hold a calendar (its header section tells) is answered
at the end of its header section and its body is never sent. For any other, at its end the
flow runs with an outlet that keeps the rewritten bytes instead of relaying them, and the MTA
is told to replace the body and change the headers the rewrite changed. The flow's reply
becomes the milter's answer: 2xx continue (accept, at the end of the header section), 4xx a
temporary failure with mailhook's text (the MTA keeps the message and retries), 5xx a
rejection.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from dataclasses import dataclass, field

from kilter.protocol.messages import (
    Abort,
    Accept,
    ActionFlags,
    Body,
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
    ReplyCode,
    Stage,
    Unknown,
)

from mailhook.config import MilterSettings, milter_socket
from mailhook.core.envelope import Upstream
from mailhook.core.mime import holds_no_calendar
from mailhook.core.replies import INTERNAL_ERROR, SHUTTING_DOWN, Reply
from mailhook.flow import Flow
from mailhook.frontends.milter_packets import ProtocolError, address, changes, crlf
from mailhook.frontends.milter_pump import CLOSE, PacketPump, Step

log = logging.getLogger("mailhook.milter")

MAX_MESSAGE = 256 * 1024 * 1024  # a message larger than this is passed unchanged, unread
# The largest header section read at its end on the event loop; a larger one (rare, or
# hostile) is read with its body at the end of the message, off the loop like any large one.
EARLY_ANSWER_MAX = 256 * 1024
# What mailhook asks of the MTA: the steps it needs, and no answer to each envelope address,
# header field and body chunk ("no reply" flags) where the MTA offers that. The end of the
# header section is answered: a message that cannot hold a calendar is accepted there, so its
# body never crosses the socket. The log line's macros are asked for at both ends.
WANTED_STEPS = (ProtocolFlags.NO_CONNECT | ProtocolFlags.NO_HELO | ProtocolFlags.NO_UNKNOWN
                | ProtocolFlags.NO_DATA | ProtocolFlags.HEADER_LEADING_SPACE)
NO_REPLY_STEPS = (ProtocolFlags.NR_SENDER | ProtocolFlags.NR_RECIPIENT | ProtocolFlags.NR_HEADER
                  | ProtocolFlags.NR_BODY)
ACTIONS = ActionFlags.CHANGE_BODY | ActionFlags.CHANGE_HEADERS | ActionFlags.ADD_HEADERS
END_MACROS = ("i", "{client_addr}", "{client_name}")


@dataclass
class Pending:
    """One message as the milter steps told it (envelope, header fields, body)."""

    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    size: int = 0  # octets of header fields and body taken so far
    too_large: bool = False

    def head(self) -> bytes:
        """The header section with CRLF line ends and its blank line."""
        return b"".join(name.encode("utf-8", "surrogateescape") + b":" + crlf(value) + b"\r\n"
                        for name, value in self.headers) + b"\r\n"

    def content(self) -> bytes:
        """The message as bytes with CRLF line ends, as the SMTP front end would see it."""
        return self.head() + bytes(self.body)


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

    async def start(self) -> None:
        """Listen on the socket; OSError when it cannot be taken."""
        kind, where, port = milter_socket(self.settings.listen)
        loop = asyncio.get_running_loop()
        if kind == "unix":
            _remove_stale_socket(where)
            self._server = await loop.create_unix_server(self._connection, where)
            os.chmod(where, int(self.settings.socket_mode, 8))
        else:
            self._server = await loop.create_server(self._connection, where, port)
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

    def _connection(self) -> MilterConnection:
        return MilterConnection(self.flow)


def _remove_stale_socket(path: str) -> None:
    """Remove a socket an earlier run left at ``path``; anything else there stays, and the
    milter does not start (a mistyped ``listen`` must not delete a file)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, f"{path} exists and is not a socket; mailhook "
                                            "does not replace it")
    os.unlink(path)


class MilterConnection(PacketPump):
    """One MTA connection: any number of messages, one after another."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow
        self.macros: dict[str, str] = {}
        self.message = Pending()
        self.no_reply = ProtocolFlags.NONE

    def handle(self, packet: Message) -> Step | str | None:  # noqa: C901 - one case per kind
        match packet:
            case Negotiate():
                self.send(self._negotiate(packet))
            case Macro():
                # Only the macros mailhook uses are kept: a peer naming new ones without end
                # must not grow the connection's memory.
                self.macros.update((name, value) for name, value in packet.macros.items()
                                   if name in END_MACROS)
            case EnvelopeFrom():
                self.message = Pending(sender=address(packet.sender))
                self._answer(ProtocolFlags.NR_SENDER)
            case EnvelopeRecipient():
                self._collect_recipient(address(packet.recipient))
                self._answer(ProtocolFlags.NR_RECIPIENT)
            case Header():
                self._collect(packet.name, bytes(packet.value))
                self._answer(ProtocolFlags.NR_HEADER)
            case EndOfHeaders():
                return self._end_of_headers()
            case Body():
                self._collect_body(bytes(packet.content))
                self._answer(ProtocolFlags.NR_BODY)
            case EndOfMessage():
                self._collect_body(bytes(packet.content))
                return self._end_of_message()
            case Abort():
                self.message = Pending()
            case Close():
                return CLOSE
            case Connect() | Helo() | Data() | Unknown():
                self.send(Continue())
            case _:
                raise ProtocolError(f"unexpected {type(packet).__name__} packet")
        return None

    def _negotiate(self, offer: Negotiate) -> Negotiate:
        if offer.version < 6:
            raise ProtocolError(f"milter protocol version {offer.version} (6 needed)")
        missing = ACTIONS & ~offer.action_flags
        if missing:
            raise ProtocolError(f"the MTA does not allow {missing!r}")
        steps = WANTED_STEPS & offer.protocol_flags
        self.no_reply = NO_REPLY_STEPS & offer.protocol_flags
        macros = {Stage.END_HEADERS: END_MACROS, Stage.END_MESSAGE: END_MACROS} \
            if ActionFlags.SETSYMLIST & offer.action_flags else {}
        actions = ACTIONS | (ActionFlags.SETSYMLIST if macros else ActionFlags.NONE)
        return Negotiate(6, actions, steps | self.no_reply, macros)

    def _answer(self, no_reply: ProtocolFlags) -> None:
        if not no_reply & self.no_reply:
            self.send(Continue())

    def _collect(self, name: str, value: bytes) -> None:
        # A running total: summing every field again per field costs the square of their number.
        if self._taken(len(name) + len(value)):
            self.message.headers.append((name, value))

    def _collect_recipient(self, recipient: str) -> None:
        # Counted with the message: a peer sending recipients without end cannot grow the list.
        if self._taken(len(recipient)):
            self.message.recipients.append(recipient)

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
            message.recipients.clear()
            message.body.clear()
            return False
        return True

    def _end_of_headers(self) -> Step | None:
        """Answer a message that cannot hold a calendar now: the flow reads its header section
        alone (and logs and counts it as it would the whole message) and the MTA is told to
        accept it, sending nothing more of it. Any other message goes on to its body."""
        message = self.message
        head = b"" if message.too_large or self.flow.stopping else message.head()
        if not head or len(head) > EARLY_ANSWER_MAX or not holds_no_calendar(head):
            self.send(Continue())
            return None
        self.message = Pending()
        return self._accept_early(message, head)

    async def _accept_early(self, message: Pending, head: bytes) -> None:
        reply = await self._run_flow(message, head, Collected())
        if reply.ok:
            self.send(Accept())
        else:
            self._reply(reply)

    def _end_of_message(self) -> Step | None:
        message, self.message = self.message, Pending()
        if message.too_large:
            log.warning("message over %d bytes passed unchanged", MAX_MESSAGE)
            self.send(Continue())
            return None
        if self.flow.stopping:
            self._reply(SHUTTING_DOWN)
            return None
        return self._rewrite(message)

    async def _rewrite(self, message: Pending) -> None:
        original = message.content()
        outlet = Collected()
        reply = await self._run_flow(message, original, outlet)
        if reply.ok and outlet.content is not None and outlet.content != original:
            for change in changes(original, outlet.content):
                self.send(change)
                await self.drained()
        self._reply(reply)

    async def _run_flow(self, message: Pending, content: bytes, outlet: Collected) -> Reply:
        """The flow's reply to ``content``; what it would relay is left in ``outlet``."""
        transaction = self.flow.transaction(message.sender, outlet, self._upstream())
        try:
            return await transaction.finish(message.recipients, content, smtputf8=True)
        except Exception:
            log.exception("the flow failed; the MTA is asked to try again")
            return INTERNAL_ERROR

    def _upstream(self) -> Upstream:
        name, addr = self.macros.get("{client_name}", ""), self.macros.get("{client_addr}", "")
        client = f"{name or 'unknown'}[{addr}]" if addr else name
        return Upstream(queue_id=self.macros.get("i", ""), client=client)

    def _reply(self, reply: Reply) -> None:
        if reply.ok:
            self.send(Continue())
            return
        # The MTA takes "4xx"/"5xx" with an enhanced status code and our text.
        code = 451 if reply.temporary else (reply.code if reply.code >= 500 else 550)
        text = reply.text.replace("%", "%%").replace("\r", " ").replace("\n", " ")
        self.send(ReplyCode(f"{code} {text}".encode("utf-8", "replace") + b"\0"))
