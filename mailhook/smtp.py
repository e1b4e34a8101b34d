"""The listening side: an aiosmtpd server that passes each transaction through to the next hop.

Recipients are offered to the next hop as the client names them, so each gets the next hop's
own answer; the message is answered 250 only after the next hop accepted it.

XFORWARD (Postfix's extension) is accepted from the MTA, so the upstream queue id and client
appear in mailhook's log line and are passed on to the next hop.
"""

from __future__ import annotations

import asyncio
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
from mailhook.relay import NextHop, Reply, Transaction

log = logging.getLogger("mailhook.smtp")

INTERNAL_ERROR = "451 4.3.0 Temporary local problem, please try again later"
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


class MailhookSMTP(SMTP):
    """aiosmtpd's SMTP with long lines allowed and refusal of untrusted clients."""

    # Real MTAs pass on lines longer than RFC 5321's 1000 octets; refusing them would bounce mail.
    line_length_limit = 16 * 1024 * 1024

    def __init__(self, handler: Handler, trusted: tuple[Any, ...], **kwargs: Any) -> None:
        self.xforward: dict[str, str] = {}
        super().__init__(handler, **kwargs)
        self._trusted = trusted
        self._mailhook_handler = handler

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
        ("" when it is fine); None when the connection ended first."""
        reader, limit = self._reader, self.data_size_limit
        buffer = bytearray()
        size = 0
        problem = ""
        line_start = True  # the next bytes begin a line
        while self.transport is not None:
            try:
                line = await reader.readuntil(b"\r\n")
            except asyncio.CancelledError:
                self._writer.close()  # the connection was reset during DATA
                raise
            except asyncio.LimitOverrunError as exc:
                # A line longer than line_length_limit: take what is there, refuse at the end.
                problem = problem or "500 Line too long (see RFC5321 4.5.3.1.6)"
                buffer = bytearray()
                await reader.read(exc.consumed)
                line_start = False
                continue
            if line_start and line == b".\r\n":
                if problem:
                    return b"", problem
                content = bytes(buffer)
                del buffer[:]
                return content, ""
            size += len(line)
            if limit and size > limit and not problem:
                problem = "552 Error: Too much mail data"
            if problem:
                buffer = bytearray()  # keep reading to the end, but keep nothing
            elif line_start and line[:1] == b".":
                buffer += memoryview(line)[1:]
            else:
                buffer += line
            line_start = True
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

    async def _handle_client(self) -> None:
        peer = self.session.peer if self.session else None
        if not _is_trusted(peer, self._trusted):
            log.warning("refused connection from %s: not in smtp.trusted_networks", peer)
            await self.push("554 5.7.1 Access denied")
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        if self.session is not None:
            self._mailhook_handler.forget(self.session)
        super().connection_lost(error)


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
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        transaction = self._transactions.get(id(session))
        if transaction is None:
            begun = await self._next_hop.begin(
                sender_of(envelope), envelope.mail_options, dict(getattr(server, "xforward", {}))
            )
            if isinstance(begun, Reply):
                return str(client_reply(begun))
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
                outcome = await self._outcome(inbound)
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
