"""The SMTP front end: an aiosmtpd server that speaks SMTP to the MTA and hands each message
to the flow.

Recipients are offered to the next hop as the client names them, so each gets the next hop's
own answer; the message is answered 250 only after the next hop accepted it (the flow's
reply). XFORWARD (Postfix's extension) is accepted from the MTA, so the upstream queue id and
client appear in mailhook's log line and are passed on to the next hop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import Envelope, Session, syntax

from mailhook.compat import SMTPSession
from mailhook.config import SmtpSettings
from mailhook.core.envelope import PLAIN_ADDRESS
from mailhook.core.replies import (
    BAD_RECIPIENT,
    BAD_SENDER,
    INTERNAL_ERROR,
    SHUTTING_DOWN,
    TRANSACTION_LOST,
    UTF8_WITHOUT_SMTPUTF8,
    Reply,
)
from mailhook.flow import Flow, Transaction
from mailhook.frontends.limits import (
    ConnectionLimit,
    Network,
    connection_cap,
    is_trusted,
    quiet_accept_errors,
    trusted_networks,
)

log = logging.getLogger("mailhook.smtp")

TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
ACCESS_DENIED = "554 5.7.1 Access denied"
LINE_TOO_LONG = "500 5.5.2 Line too long"
# RFC 5321 4.5.3.1.4 allows 512 octets; the rest is room for extensions' parameters (XFORWARD,
# SIZE, SMTPUTF8, DSN), as Postfix's smtpd allows 2048.
COMMAND_LINE_LIMIT = 2048
XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
XFORWARD_MAX_VALUE = 255
# The common MAIL/RCPT argument: <dot-atom@domain>, then nothing or parameters. Anything else
# (quoted local parts, source routes, literals, comments) takes aiosmtpd's full parser.
# Parameters or padding, never both: padding after ".*" would be retried at every position.
_PLAIN_PATH = re.compile(rf"[ \t]*<({PLAIN_ADDRESS})>(?:[ \t]+([^ \t(].*)|[ \t]*)")


class MailhookSMTP(SMTPSession):
    """aiosmtpd's SMTP with bounded command lines, long message lines read in pieces, a cap
    on connections, refusal of untrusted clients and XFORWARD."""

    # The stream's limit: it bounds command lines; message lines are read in pieces of at
    # least this size (see compat.SMTPSession), so long ones (real MTAs send them) still pass.
    line_length_limit = COMMAND_LINE_LIMIT
    command_size_limit = COMMAND_LINE_LIMIT

    def __init__(self, handler: Handler, trusted: tuple[Network, ...],
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

    async def refuse_long_line(self) -> None:
        await self.push(LINE_TOO_LONG)

    def plain_path(self, arg: str) -> tuple[str, str] | None:
        # aiosmtpd's parser builds a class on every call; a plain <user@domain> needs none of it.
        match = _PLAIN_PATH.fullmatch(arg)
        if match is None or (self.local_part_limit and
                             len(match.group(1).rpartition("@")[0]) > self.local_part_limit):
            return None
        return match.group(1), match.group(2) or ""

    def transaction_ended(self) -> None:
        # XFORWARD attributes describe one transaction: they end with DATA, RSET or a new EHLO.
        self.xforward = {}

    @syntax("XFORWARD attribute=value ...")
    async def smtp_XFORWARD(self, arg: str) -> None:
        """Postfix's XFORWARD: remember the upstream client and queue id for this transaction."""
        if await self.check_helo_needed("EHLO"):
            return
        if self.envelope is not None and self.envelope.mail_from is not None:
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
        if not self.starting_tls():
            self._admitted = self._limit is None or self._limit.admit()
        elif self.session is not None:
            # After STARTTLS aiosmtpd starts the session afresh (RFC 3207 4.2), so does mailhook.
            self._mailhook_handler.forget(self.session)
        super().connection_made(transport)

    async def admit(self) -> bool:
        if not self._admitted:
            await self._turn_away(TOO_MANY_CONNECTIONS)
            return False
        peer = self.session.peer if self.session else None
        if not is_trusted(peer, self._trusted):
            log.warning("refused connection from %s: not in smtp.trusted_networks", peer)
            await self._turn_away(ACCESS_DENIED)
            return False
        return True

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


class Handler:
    """aiosmtpd hooks: MAIL, RCPT and DATA, each handed to the flow."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self._transactions: dict[int, Transaction] = {}

    async def handle_EHLO(self, server: SMTPSession, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-XFORWARD " + " ".join(XFORWARD_ATTRIBUTES), responses[-1]]

    async def handle_MAIL(self, server: SMTPSession, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        await self._abort(session)
        if self._flow.stopping:
            return str(SHUTTING_DOWN)
        refusal = address_refusal(address, envelope.smtp_utf8, BAD_SENDER)
        if refusal is not None:
            return str(refusal)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTPSession, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        refusal = address_refusal(address, envelope.smtp_utf8, BAD_RECIPIENT)
        if refusal is not None:
            return str(refusal)
        transaction = self._transactions.get(id(session))
        if transaction is None:
            started = time.monotonic()
            forward = getattr(server, "xforward", {})
            begun = await self._flow.begin(sender_of(envelope), envelope.mail_options, forward)
            if isinstance(begun, Reply):
                if not getattr(envelope, "mailhook_refusal_logged", False):
                    envelope.mailhook_refusal_logged = True  # type: ignore[attr-defined]
                    self._flow.refused_before_data(sender_of(envelope), address, begun,
                                                   forward, started)
                return str(begun)
            transaction = self._transactions[id(session)] = begun
        reply = await transaction.rcpt(address, options)
        if reply.ok:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return str(reply)

    async def handle_RSET(self, server: SMTPSession, session: Session, envelope: Envelope) -> str:
        await self._abort(session)
        return "250 2.0.0 Ok"

    async def handle_QUIT(self, server: SMTPSession, session: Session, envelope: Envelope) -> str:
        await self._abort(session)
        return "221 2.0.0 Bye"

    async def handle_DATA(self, server: SMTPSession, session: Session, envelope: Envelope) -> str:
        transaction = self._transactions.pop(id(session), None)
        if transaction is None:
            return str(TRANSACTION_LOST)
        content = envelope.original_content or b""
        reply = await transaction.finish(envelope.rcpt_tos, content, envelope.smtp_utf8)
        return str(reply)

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer a permanent 500 here; mailhook's own trouble is never permanent.
        log.error("SMTP session error: %s: %s", type(error).__name__, error)
        return str(INTERNAL_ERROR)

    def forget(self, session: Session) -> None:
        """Drop the next-hop transaction of a session whose client went away."""
        transaction = self._transactions.pop(id(session), None)
        if transaction is not None:
            asyncio.get_running_loop().create_task(transaction.close())

    async def _abort(self, session: Session) -> None:
        transaction = self._transactions.pop(id(session), None)
        if transaction is not None:
            await transaction.close()


def tls_options(smtp: SmtpSettings) -> dict[str, Any]:
    """aiosmtpd's STARTTLS arguments from smtp.tls_*: none when no certificate is set."""
    if not smtp.tls_cert_file:
        return {}
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(smtp.tls_cert_file, smtp.tls_key_file or None)
    return {"tls_context": context, "require_starttls": smtp.require_tls}


class SmtpServer:
    """The SMTP listener: started on the configured address, or on sockets bound before the
    worker processes started; closed at shutdown (messages in flight finish in the flow)."""

    def __init__(self, flow: Flow, smtp: SmtpSettings, pool_size: int, primary: bool = True) -> None:
        self._flow = flow
        self._smtp = smtp
        self._pool_size = pool_size
        self._primary = primary  # only the first worker process warns about lowered limits
        self._servers: list[asyncio.Server] = []
        self._undo_quiet_accept: Callable[[], None] = lambda: None
        self.handler = Handler(flow)

    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        """Listen (raises OSError when the address cannot be had)."""
        smtp = self._smtp
        trusted = trusted_networks(smtp.trusted_networks)
        hostname = smtp.hostname or socket.getfqdn()
        connections = ConnectionLimit(
            connection_cap(smtp.max_connections, self._pool_size, warn=self._primary))
        limits = call_limits(smtp.command_call_limit)

        tls = tls_options(smtp)

        def session() -> MailhookSMTP:
            return MailhookSMTP(self.handler, trusted, connections, hostname=hostname,
                                data_size_limit=smtp.max_message_size, timeout=smtp.timeout,
                                enable_SMTPUTF8=True, ident="mailhook", command_call_limit=limits,
                                **tls)

        loop = asyncio.get_running_loop()
        self._undo_quiet_accept = quiet_accept_errors(loop)
        if not sockets:
            self._servers.append(await loop.create_server(
                session, host=smtp.listen_host, port=smtp.listen_port, reuse_address=True))
            return
        # One server per address (e.g. "localhost": 127.0.0.1 and ::1).
        for sock in sockets:
            self._servers.append(await loop.create_server(session, sock=sock))

    @property
    def port(self) -> int:
        """The port actually bound (useful when listen_port is 0)."""
        return int(self._servers[0].sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting connections."""
        for server in self._servers:
            server.close()
        self._undo_quiet_accept()


def call_limits(limit: int) -> dict[str, int]:
    """Per-session command limits: chatter is limited, mail transactions are not."""
    chatter = ("NOOP", "VRFY", "EXPN", "HELP", "HELO", "EHLO")
    return {"*": 10**9, **dict.fromkeys(chatter, limit)}


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


def address_refusal(address: str, smtputf8: bool, bad_syntax: Reply) -> Reply | None:
    """The refusal for an envelope address the transaction cannot carry, or None when it can.

    aiosmtpd keeps bytes that are not UTF-8 as lone surrogates: that is a syntax error. A
    UTF-8 address needs the SMTPUTF8 parameter on MAIL (RFC 6531 3.5).
    """
    if address.isascii():
        return None
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return bad_syntax
    return None if smtputf8 else UTF8_WITHOUT_SMTPUTF8


def sender_of(envelope: Envelope) -> str:
    """The envelope sender; aiosmtpd keeps the null sender as "<>", which is the empty address."""
    address = envelope.mail_from or ""
    return "" if address == "<>" else address
