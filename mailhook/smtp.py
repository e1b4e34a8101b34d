"""The listening side: an aiosmtpd server that passes each transaction through to the next hop.

Recipients are offered to the next hop as the client names them, so each gets the next hop's
own answer; the message is answered 250 only after the next hop accepted it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailhook.core.decide import Action, Decision
from mailhook.pipeline import Inbound, Outcome
from mailhook.relay import NextHop, Reply, Transaction

log = logging.getLogger("mailhook.smtp")

INTERNAL_ERROR = "451 4.3.0 Temporary local problem, please try again later"


class MailhookSMTP(SMTP):
    """aiosmtpd's SMTP with long lines allowed and refusal of untrusted clients."""

    # Real MTAs pass on lines longer than RFC 5321's 1000 octets; refusing them would bounce mail.
    line_length_limit = 16 * 1024 * 1024

    def __init__(self, handler: Handler, trusted: tuple[Any, ...], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._trusted = trusted
        self._mailhook_handler = handler

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
        delivered: Callable[[Inbound, Outcome, Reply, float], Awaitable[None]],
    ) -> None:
        self._process = process
        self._next_hop = next_hop
        self._delivered = delivered
        self._transactions: dict[int, Transaction] = {}
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._abort(session)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        transaction = self._transactions.get(id(session))
        if transaction is None:
            begun = await self._next_hop.begin(envelope.mail_from or "", envelope.mail_options)
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
        try:
            inbound = Inbound(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                content=envelope.original_content or b"",
            )
            outcome = await self._outcome(inbound)
            if outcome.content is None:
                reply = Reply(int(outcome.reply[:3]), outcome.reply[4:])
            else:
                reply = client_reply(await transaction.data(outcome.content))
            await self._delivered(inbound, outcome, reply, started)
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

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


def client_reply(reply: Reply) -> Reply:
    """The reply mailhook gives its client for a next-hop reply: 4xx becomes 451, 5xx passes."""
    if reply.temporary and reply.code != 451:
        return Reply(451, reply.text)
    return reply
