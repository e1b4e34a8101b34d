"""The listening side: an aiosmtpd server that passes each transaction through to the next hop.

Recipients are offered to the next hop as the client names them, so each gets the next hop's
own answer; the message is answered 250 only after the next hop accepted it.

XFORWARD (Postfix's extension) is accepted from the MTA, so the upstream queue id and client
appear in mailhook's log line and are passed on to the next hop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from mailhook import logfmt
from mailhook.core.decide import Action, Decision
from mailhook.faults import checkpoint
from mailhook.pipeline import Inbound, Outcome
from mailhook.relay import BAD_RECIPIENT, BAD_SENDER, NextHop, Reply, Transaction

log = logging.getLogger("mailhook.smtp")

INTERNAL_ERROR = "451 4.3.0 Temporary local problem, please try again later"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
LINE_TOO_LONG = "500 5.5.2 Line too long"
# RFC 5321 4.5.3.1.4 allows 512 octets; the rest is room for extensions' parameters (XFORWARD,
# SIZE, SMTPUTF8, DSN), as Postfix's smtpd allows 2048.
COMMAND_LINE_LIMIT = 2048
TOO_MUCH_DATA = "552 5.3.4 Message size exceeds fixed maximum message size"
# RFC 6531 3.5: a UTF-8 address in a transaction begun without the SMTPUTF8 parameter.
UTF8_WITHOUT_SMTPUTF8 = "553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter"
# RFC 6531 3.2 and 4 (X.6.9): a UTF-8 header section must not go to a server without SMTPUTF8.
UTF8_HEADER_NOT_RELAYABLE = ("550 5.6.9 Message has a UTF-8 header section and the next hop "
                             "does not support SMTPUTF8")
XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
XFORWARD_MAX_VALUE = 255
_XTEXT_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")
# "Received: by host (Postfix, from userid 0) id 4Xb2Jt1Q2Zz9sWQ; ..." (also Exim's "id 1r...-0004...")
_RECEIVED_ID = re.compile(r"\bid\s+([A-Za-z0-9][A-Za-z0-9.-]{4,63})(?=[\s;]|$)")
# The common MAIL/RCPT argument: <dot-atom@domain>, then nothing or parameters. Anything else
# (quoted local parts, source routes, literals, comments) takes aiosmtpd's full parser.
# Parameters or padding, never both: padding after ".*" would be retried at every position.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"[ \t]*<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+([^ \t(].*)|[ \t]*)"
)


@dataclass(frozen=True, slots=True)
class Upstream:
    """What the MTA told about a message with XFORWARD: its queue id and original client."""

    queue_id: str = ""
    client: str = ""

    @classmethod
    def from_xforward(cls, attributes: dict[str, str]) -> Upstream:
        """Read the (xtext-encoded) XFORWARD attributes of one transaction."""
        values = {name: xtext_decode(value) for name, value in attributes.items()}
        name, addr = values.get("NAME", ""), values.get("ADDR", "")
        client = f"{name or 'unknown'}[{addr}]" if addr else name
        return cls(queue_id=values.get("IDENT", ""), client=client)

    @classmethod
    def of(cls, attributes: dict[str, str], headers: Message) -> Upstream:
        """XFORWARD's queue id, else the one in the topmost Received header.

        Postfix forwards IDENT only when it knows one to pass on (not for local submissions
        through sendmail), but it always stamps its queue id into the Received header it adds.
        """
        upstream = cls.from_xforward(attributes)
        if upstream.queue_id:
            return upstream
        received = " ".join(str(headers.get("Received", "")).split())
        found = _RECEIVED_ID.search(received)
        return cls(found.group(1), upstream.client) if found else upstream


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext ("+2B" is "+"), with anything unprintable replaced."""
    decoded = _XTEXT_HEX.sub(lambda match: chr(int(match.group(1), 16)), value)
    return "".join(ch if " " < ch < "\x7f" else "?" for ch in decoded)


class ThrottledWarning:
    """One warning line per interval for something that can happen in floods (a line per
    occurrence would bury the journal); the next line says how many were left out."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._left_out = 0

    def warn(self, message: str, *args: object) -> None:
        now = self._clock()
        if now < self._next:
            self._left_out += 1
            return
        if self._left_out:
            message += f" ({self._left_out} more since the last such line)"
        self._log.warning(message, *args)
        self._left_out = 0
        self._next = now + self._interval


class ConnectionLimit:
    """The open client connections of this process, at most ``maximum`` (smtp.max_connections,
    as lowered to what the open-files limit holds)."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.open = 0
        self._warning = ThrottledWarning(log)

    def admit(self) -> bool:
        """Count one more connection, or say it is over the limit (and warn, now and then)."""
        if self.open >= self.maximum:
            self._warning.warn("refusing connections with 421: %d open, smtp.max_connections "
                               "reached", self.open)
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1


class CommandReader:
    """The client's stream as aiosmtpd's command loop reads it.

    A command line longer than the stream's limit (COMMAND_LINE_LIMIT) is answered at once and
    its octets are dropped as they come, up to its line end; so a client holds at most about
    one socket read of memory however long its line is. aiosmtpd alone would buffer the line
    to its end before answering. Everything else is the stream's own (mailhook offers no
    STARTTLS, the one aiosmtpd path that reaches into the stream's internals).
    """

    def __init__(self, stream: asyncio.StreamReader, refuse: Callable[[], Awaitable[None]]) -> None:
        self.stream = stream
        self._refuse = refuse

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


class MailhookSMTP(SMTP):
    """aiosmtpd's SMTP with bounded command lines, long message lines read in pieces, a cap
    on connections and refusal of untrusted clients."""

    # The stream's limit: it bounds command lines; message lines are read in pieces of at
    # least this size (see _read_message), so long ones (real MTAs send them) still pass.
    line_length_limit = COMMAND_LINE_LIMIT
    command_size_limit = COMMAND_LINE_LIMIT

    def __init__(self, handler: Handler, trusted: tuple[Any, ...],
                 limit: ConnectionLimit | None = None, **kwargs: Any) -> None:
        self.xforward: dict[str, str] = {}
        super().__init__(handler, **kwargs)
        # aiosmtpd keeps these limits in a dict shared by every session of the class, and
        # raises MAIL's by 36 at each EHLO; mailhook's one limit is the stream's, per session.
        self.command_size_limits = collections.defaultdict(lambda: COMMAND_LINE_LIMIT)
        self._trusted = trusted
        self._mailhook_handler = handler
        self._limit = limit
        self._admitted = False

    def _cb_client_connected(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        super()._cb_client_connected(reader, writer)
        self._message_stream = reader
        self._reader = CommandReader(reader, self._refuse_long_line)  # type: ignore[assignment]

    async def _refuse_long_line(self) -> None:
        await self.push(LINE_TOO_LONG)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd's parser builds a class on every call; a plain <user@domain> needs none of it.
        match = _PLAIN_PATH.fullmatch(arg)
        if match is None or (self.local_part_limit and
                             len(match.group(1).rpartition("@")[0]) > self.local_part_limit):
            return super()._getaddr(arg)
        return match.group(1), match.group(2) or ""

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """DATA as aiosmtpd answers it, with the message read into one buffer.

        aiosmtpd keeps every line as its own object until the end of the message, which costs
        about twice the message's size again on top of the message itself; mailhook appends
        each line to one buffer as it arrives.
        """
        if self._decode_data:  # type: ignore[attr-defined]
            await super().smtp_DATA(arg)  # not how mailhook runs, but aiosmtpd knows how
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
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

        smtp.max_message_size applies to the message as it will be relayed: the dots SMTP
        adds in transit are not counted. A line longer than the stream's limit comes in
        pieces; past the size limit nothing more is kept.
        """
        stream, limit = self._message_stream, self.data_size_limit
        buffer = bytearray()
        too_big = False
        line_start = True  # the next bytes begin a line
        while self.transport is not None:
            try:
                piece = await stream.readuntil(b"\r\n")
                line_end = True
            except asyncio.CancelledError:
                self._writer.close()  # the connection was reset during DATA
                raise
            except asyncio.LimitOverrunError as exc:
                piece = await stream.read(exc.consumed)  # the part of a long line there is
                line_end = False
            if line_start and piece == b".\r\n":
                if too_big:
                    return b"", TOO_MUCH_DATA
                content = bytes(buffer)
                del buffer[:]
                return content, ""
            text = memoryview(piece)[1:] if line_start and piece[:1] == b"." else piece
            if not too_big and limit and len(buffer) + len(text) > limit:
                too_big = True
                buffer = bytearray()  # keep reading to the end, but keep nothing
            if not too_big:
                buffer += text
            line_start = line_end
        return None, ""

    def _set_post_data_state(self) -> None:
        # XFORWARD attributes describe one transaction: they end with DATA, RSET or a new EHLO.
        super()._set_post_data_state()
        self.xforward = {}

    @syntax("XFORWARD attribute=value ...")
    async def smtp_XFORWARD(self, arg: str) -> None:
        """Postfix's XFORWARD: remember the upstream client and queue id for this transaction."""
        if await self.check_helo_needed("EHLO"):
            return
        if self.envelope.mail_from is not None:
            await self.push("503 5.5.1 Error: MAIL transaction in progress")
            return
        parsed = _xforward_attributes(arg)
        if isinstance(parsed, str):
            await self.push(parsed)
            return
        for name, value in parsed.items():
            if value.upper() == "[UNAVAILABLE]":
                self.xforward.pop(name, None)
            else:
                self.xforward[name] = value
        await self.push("250 2.0.0 Ok")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._admitted = self._limit is None or self._limit.admit()
        super().connection_made(transport)

    async def _handle_client(self) -> None:
        if not self._admitted:
            await self._turn_away(TOO_MANY_CONNECTIONS)
            return
        peer = self.session.peer if self.session else None
        if not _is_trusted(peer, self._trusted):
            log.warning("refused connection from %s: not in smtp.trusted_networks", peer)
            await self._turn_away("554 5.7.1 Access denied")
            return
        await super()._handle_client()

    async def _turn_away(self, reply: str) -> None:
        """Give a client that is not served its one reply and hang up."""
        with contextlib.suppress(ConnectionError):  # it may have gone already
            await self.push(reply)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted and self._limit is not None:
            self._limit.release()
        self._admitted = False
        if self.session is not None:
            self._mailhook_handler.forget(self.session)
        super().connection_lost(error)


_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Make asyncio's report of a failed accept() for want of files or memory one warning line
    a minute; returns the undo.

    asyncio logs a traceback for every attempt, and it makes many attempts a second while the
    shortage lasts (tens of thousands of tracebacks in a minute of overload). The clients wait
    in the listen queue meanwhile and are taken when files are free again.
    """
    previous = loop.get_exception_handler()
    warning = ThrottledWarning(log)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if "socket" in context and isinstance(error, OSError) and error.errno in _OUT_OF_RESOURCES:
            warning.warn("cannot accept connections: out of files or memory (%s); clients wait "
                         "until some are free (see smtp.max_connections and LimitNOFILE)",
                         error.strerror)
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
    return lambda: loop.set_exception_handler(previous)


def _xforward_attributes(arg: str) -> dict[str, str] | str:
    """The attributes of one XFORWARD command, or the 501 reply for a bad one."""
    if not arg.strip():
        return "501 5.5.4 Syntax: XFORWARD attribute=value ..."
    attributes: dict[str, str] = {}
    for item in arg.split():
        name, equals, value = item.partition("=")
        name = name.upper()
        if not equals or name not in XFORWARD_ATTRIBUTES:
            return f"501 5.5.4 Bad XFORWARD attribute: {item[:64]}"
        if len(value) > XFORWARD_MAX_VALUE:
            return f"501 5.5.4 XFORWARD {name} value too long"
        attributes[name] = value
    return attributes


def _is_trusted(peer: Any, trusted: tuple[Any, ...]) -> bool:
    if not trusted:
        return True
    if not isinstance(peer, tuple) or not peer:
        return True  # a Unix socket: the file permissions decide
    try:
        address = ipaddress.ip_address(peer[0].split("%")[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def trusted_networks(networks: tuple[str, ...]) -> tuple[Any, ...]:
    """Parse the configured networks once."""
    return tuple(ipaddress.ip_network(network, strict=False) for network in networks)


class Handler:
    """aiosmtpd hooks: MAIL, RCPT and DATA proxied to the next hop through the pipeline."""

    def __init__(
        self,
        process: Callable[[Inbound], Awaitable[Outcome]],
        next_hop: NextHop,
        delivered: Callable[[Inbound, Outcome, Reply, float, Upstream], Awaitable[None]],
    ) -> None:
        self._process = process
        self._next_hop = next_hop
        self._delivered = delivered
        self._transactions: dict[int, Transaction] = {}
        self.in_flight = 0
        self.on_change: Callable[[int], object] | None = None  # told the new in-flight count
        self.stopping = False  # set at shutdown: new transactions are refused with 421
        self.idle = asyncio.Event()
        self.idle.set()

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-XFORWARD " + " ".join(XFORWARD_ATTRIBUTES), responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._abort(session)
        if self.stopping:
            return "421 4.3.2 Shutting down, please try again later"
        refusal = address_refusal(address, envelope.smtp_utf8, str(BAD_SENDER))
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = address_refusal(address, envelope.smtp_utf8, str(BAD_RECIPIENT))
        if refusal:
            return refusal
        transaction = self._transactions.get(id(session))
        if transaction is None:
            started = time.monotonic()
            begun = await self._next_hop.begin(
                sender_of(envelope), envelope.mail_options, dict(getattr(server, "xforward", {}))
            )
            if isinstance(begun, Reply):
                refusal = client_reply(begun)
                await self._log_refused_at_rcpt(server, envelope, address, refusal, started)
                return str(refusal)
            transaction = self._transactions[id(session)] = begun
        reply = await transaction.rcpt(address, options)
        if reply.ok:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return str(client_reply(reply))

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._abort(session)
        return "250 2.0.0 Ok"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._abort(session)
        return "221 2.0.0 Bye"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        transaction = self._transactions.pop(id(session), None)
        if transaction is None:
            return "451 4.3.0 Next hop transaction lost, please try again"
        self._enter()
        started = time.monotonic()
        content = envelope.original_content or b""
        headers = header_section(content)
        upstream = Upstream.of(getattr(server, "xforward", {}), headers)
        try:
            inbound = Inbound(
                mail_from=sender_of(envelope),
                rcpt_tos=tuple(envelope.rcpt_tos),
                content=content,
            )
            with logfmt.message_context(queue_id=upstream.queue_id, client=upstream.client,
                                        message_id=_one_line(headers.get("Message-ID"))):
                outcome = (smtputf8_refusal(envelope, transaction, content)
                           or await self._outcome(inbound))
                if outcome.content is None:
                    reply = Reply(int(outcome.reply[:3]), outcome.reply[4:])
                else:
                    await checkpoint("before-relay")
                    reply = client_reply(await transaction.data(outcome.content))
                await self._delivered(inbound, outcome, reply, started, upstream)
            return str(reply)
        finally:
            await transaction.close()
            self._leave()

    async def _log_refused_at_rcpt(
        self, server: SMTP, envelope: Envelope, address: str, reply: Reply, started: float
    ) -> None:
        """The next hop cannot take the message (unreachable, or it refused the sender), so no
        DATA follows: the message gets its summary line now, once per transaction, with the
        queue id XFORWARD gave."""
        if getattr(envelope, "mailhook_refusal_logged", False):
            return
        envelope.mailhook_refusal_logged = True  # type: ignore[attr-defined]
        reason = "next hop unavailable" if reply.temporary else "next hop refused the sender"
        outcome = Outcome(Decision(Action.PASS, reason), reply=str(reply))
        inbound = Inbound(mail_from=sender_of(envelope), rcpt_tos=(address,), content=b"")
        upstream = Upstream.from_xforward(dict(getattr(server, "xforward", {})))
        await self._delivered(inbound, outcome, reply, started, upstream)

    async def _outcome(self, inbound: Inbound) -> Outcome:
        try:
            return await self._process(inbound)
        except Exception:
            # Whatever went wrong inside mailhook, the message itself goes on unchanged.
            log.exception("processing failed; forwarding the message unchanged")
            return Outcome(Decision(Action.PASS, "internal error"), content=inbound.content)

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer a permanent 500 here; mailhook's own trouble is never permanent.
        log.error("SMTP session error: %s: %s", type(error).__name__, error)
        return INTERNAL_ERROR

    def forget(self, session: Session) -> None:
        """Drop the next-hop transaction of a session whose client went away."""
        transaction = self._transactions.pop(id(session), None)
        if transaction is not None:
            asyncio.get_running_loop().create_task(transaction.close())

    async def _abort(self, session: Session) -> None:
        transaction = self._transactions.pop(id(session), None)
        if transaction is not None:
            await transaction.close()

    def _enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()
        if self.on_change is not None:
            self.on_change(self.in_flight)

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()
        if self.on_change is not None:
            self.on_change(self.in_flight)


def header_section(content: bytes) -> Message:
    """The message's headers, read cheaply without its body (for log lines)."""
    end = min((i for i in (content.find(b"\r\n\r\n"), content.find(b"\n\n")) if i >= 0),
              default=min(len(content), 65536))
    return BytesHeaderParser(policy=compat32).parsebytes(content[:end])


def address_refusal(address: str, smtputf8: bool, bad_syntax: str) -> str:
    """The refusal for an envelope address the transaction cannot carry, or "" when it can.

    aiosmtpd keeps bytes that are not UTF-8 as lone surrogates: that is a syntax error. A
    UTF-8 address needs the SMTPUTF8 parameter on MAIL (RFC 6531 3.5).
    """
    if address.isascii():
        return ""
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return bad_syntax
    return "" if smtputf8 else UTF8_WITHOUT_SMTPUTF8


def smtputf8_refusal(envelope: Envelope, transaction: Transaction, content: bytes) -> Outcome | None:
    """The refusal for an SMTPUTF8 message whose header section is not ASCII when the next hop
    does not take SMTPUTF8; None when the message can go (an all-ASCII header section goes
    without the parameter, which then asks for nothing)."""
    if not envelope.smtp_utf8 or transaction.smtputf8:
        return None
    end = content.find(b"\r\n\r\n")
    if (content if end < 0 else content[:end]).isascii():
        return None
    decision = Decision(Action.PASS, "UTF-8 header section, next hop without SMTPUTF8")
    return Outcome(decision, content=None, reply=UTF8_HEADER_NOT_RELAYABLE)


def _one_line(value: object) -> str:
    return " ".join(str(value).split()) if value else ""


def sender_of(envelope: Envelope) -> str:
    """The envelope sender; aiosmtpd keeps the null sender as "<>", which is the empty address."""
    address = envelope.mail_from or ""
    return "" if address == "<>" else address


def client_reply(reply: Reply) -> Reply:
    """The reply mailhook gives its client for a next-hop reply: 4xx becomes 451, 5xx passes."""
    if reply.temporary and reply.code != 451:
        return Reply(451, reply.text)
    return reply
