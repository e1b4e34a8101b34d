"""The next hop: hands each message on over SMTP with aiosmtplib.

A transaction is opened when the client names its first recipient, so that every recipient
gets the next hop's own answer at RCPT time, and the message gets the next hop's answer to
DATA. Message bytes are sent as given, in the form SMTP requires: every line end a CRLF
(a bare LF or CR becomes one), no line longer than 998 octets, leading dots doubled, a trace
field on top; a next hop that greets as this mailhook is refused (relaying there would loop).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Callable

import aiosmtplib

from mailhook import compat
from mailhook.config import RelaySettings
from mailhook.core.envelope import PLAIN_ADDRESS
from mailhook.core.replies import (
    BAD_RECIPIENT,
    BAD_SENDER,
    NEXT_HOP_IS_MAILHOOK,
    NEXT_HOP_UNREACHABLE,
    UTF8_RECIPIENT_NOT_RELAYABLE,
    UTF8_SENDER_NOT_RELAYABLE,
    Reply,
)
from mailhook.core.trace import is_own_greeting
from mailhook.core.wire import MAX_LINE_OCTETS, data_pieces, dot_stuff, dot_stuffed, wire_form
from mailhook.tls import greet

# The wire form's helpers lived here first; they are still to be had from here.
__all__ = ["MAX_LINE_OCTETS", "NextHop", "Transaction", "dot_stuff", "dot_stuffed", "wire_form"]

log = logging.getLogger("mailhook.relay")

# ESMTP parameters are passed on only when the next hop announces the extension behind them;
# any other parameter is dropped rather than risk a 555 from the next hop.
_MAIL_PARAMETER_EXTENSIONS = {
    "BODY": "8bitmime",
    "SMTPUTF8": "smtputf8",
    "SIZE": "size",
    "RET": "dsn",
    "ENVID": "dsn",
}
_RCPT_PARAMETER_EXTENSIONS = {"NOTIFY": "dsn", "ORCPT": "dsn"}
IDLE_SECONDS = 60.0  # a pooled session older than this is closed, not reused
UNREACHABLE = NEXT_HOP_UNREACHABLE
# A plain address (or the null sender) is written as <address>, which is what aiosmtplib's
# quoting gives for it after running the email package's address parser (about 5 µs a
# command); any other address still goes through aiosmtplib's mail() and rcpt().
_PLAIN_PATH = re.compile(f"(?:{PLAIN_ADDRESS})?")


class NextHop:
    """Opens transactions on the configured next-hop SMTP server.

    Sessions are kept open between messages (up to ``relay.pool_size`` idle ones, each for at
    most IDLE_SECONDS), so that most messages skip the connect and EHLO round trips.
    """

    def __init__(self, settings: RelaySettings, *, own_name: str = "",
                 trace: Callable[[], bytes] | None = None) -> None:
        self._settings = settings
        # Looked up once: aiosmtplib would ask the resolver again for every connection.
        self._helo = settings.helo_name or socket.getfqdn()
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._own_name = own_name  # mailhook's name in its own greeting
        self.trace = trace or (lambda: b"")  # makes the trace field put on each message

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self._settings.host,
            port=self._settings.port,
            timeout=self._settings.timeout,
            local_hostname=self._helo,
            start_tls=False,
        )

    async def _session(self) -> tuple[aiosmtplib.SMTP, bool] | None:
        """An idle session from the pool, or a new one; and whether it was reused. None when
        the next hop is mailhook itself."""
        while self._idle:
            client, since = self._idle.pop()
            if _reusable(client) and time.monotonic() - since < IDLE_SECONDS:
                return client, True
            client.close()
        client = self._client()
        greeting = await client.connect()
        if self._own_name and is_own_greeting(greeting.message, self._own_name):
            client.close()
            return None
        compat.watch_replies(client)
        await greet(client, self._settings)
        return client, False

    def give_back(self, client: aiosmtplib.SMTP) -> None:
        """Keep a session that ended its transaction cleanly for the next message."""
        if _reusable(client) and len(self._idle) < self._settings.pool_size:
            self._idle.append((client, time.monotonic()))
        else:
            client.close()

    async def aclose(self) -> None:
        """Say goodbye on every idle session (at shutdown)."""
        idle, self._idle = self._idle, []
        for client, _ in idle:
            await _quit(client)

    async def begin(
        self, mail_from: str, mail_options: list[str], xforward: dict[str, str] | None = None
    ) -> Transaction | Reply:
        """Connect and send MAIL FROM; a Reply means the next hop did not accept it.

        ``xforward`` (attribute -> xtext value, as the client gave them) is passed on before
        MAIL FROM when the next hop announces XFORWARD, so its log names the original client.
        """
        for _attempt in (1, 2):
            try:
                session = await self._session()
            except (aiosmtplib.SMTPException, OSError) as exc:
                log.warning("next hop %s:%s unreachable: %s", self._settings.host,
                            self._settings.port, exc)
                return UNREACHABLE
            if session is None:  # else its RCPT would open one more, until no socket is left
                log.error("next hop %s:%s is mailhook itself: answering %s instead of looping",
                          self._settings.host, self._settings.port, NEXT_HOP_IS_MAILHOOK)
                return NEXT_HOP_IS_MAILHOOK
            client, reused = session
            begun = await self._mail(client, mail_from, mail_options, xforward)
            # A pooled session the next hop has meanwhile closed: once more on a new one.
            if begun is not UNREACHABLE or not reused:
                return begun
        return begun

    async def _mail(
        self,
        client: aiosmtplib.SMTP,
        mail_from: str,
        mail_options: list[str],
        xforward: dict[str, str] | None,
    ) -> Transaction | Reply:
        try:
            options = _supported(mail_options, _MAIL_PARAMETER_EXTENSIONS, client)
            smtputf8 = "SMTPUTF8" in (option.upper() for option in options)
            if not (smtputf8 or mail_from.isascii()):
                self.give_back(client)  # nothing was sent: the session is still clean
                return UTF8_SENDER_NOT_RELAYABLE
            await _send_xforward(client, xforward or {})
            await _mail_from(client, mail_from, options, smtputf8)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(client)
            return Reply(exc.code, exc.message)
        except ValueError:
            # aiosmtplib refuses addresses it cannot quote: the address itself is wrong.
            await self._reset(client)
            return BAD_SENDER
        except (aiosmtplib.SMTPException, OSError):
            client.close()
            return UNREACHABLE
        return Transaction(client, self, smtputf8)

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        """RSET a session whose transaction went nowhere, and keep it if that worked."""
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            client.close()
            return
        self.give_back(client)

    async def probe(self) -> Reply:
        """Connect, EHLO and QUIT: the next hop's EHLO reply, or why it could not be had."""
        client = self._client()
        try:
            await client.connect()
            response = await greet(client, self._settings)
            await client.quit()
        except aiosmtplib.SMTPResponseException as exc:
            return Reply(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Reply(UNREACHABLE.code, f"{UNREACHABLE.text}: {exc}")
        finally:
            client.close()
        return Reply(response.code, response.message.splitlines()[0] if response.message else "")

    async def send(self, mail_from: str, recipients: list[str], content: bytes) -> Reply:
        """Send one whole message (used for mailhook's own notices)."""
        transaction = await self.begin(mail_from, [])
        if isinstance(transaction, Reply):
            return transaction
        try:
            accepted = False
            for recipient in recipients:
                reply = await transaction.rcpt(recipient, [])
                accepted = accepted or reply.ok
            if not accepted:
                return reply
            return await transaction.data(content)
        finally:
            await transaction.close()


class Transaction:
    """One MAIL transaction on the next hop."""

    def __init__(self, client: aiosmtplib.SMTP, hop: NextHop, smtputf8: bool = False) -> None:
        self._client = client
        self._hop = hop
        self.smtputf8 = smtputf8  # MAIL went with SMTPUTF8: addresses may be UTF-8
        self._finished = False  # DATA got its final reply: the session is clean again

    async def rcpt(self, address: str, options: list[str]) -> Reply:
        """Send RCPT TO and return the next hop's reply."""
        if not (self.smtputf8 or address.isascii()):
            return UTF8_RECIPIENT_NOT_RELAYABLE
        try:
            options = _supported(options, _RCPT_PARAMETER_EXTENSIONS, self._client)
            response = await _rcpt_to(self._client, address, options, self.smtputf8)
        except aiosmtplib.SMTPResponseException as exc:
            return Reply(exc.code, exc.message)
        except ValueError:
            return BAD_RECIPIENT
        except (aiosmtplib.SMTPException, OSError):
            return UNREACHABLE
        return Reply(response.code, response.message)

    async def data(self, content: bytes) -> Reply:
        """Send the message (in SMTP's wire form, see dot_stuffed) and return the next hop's
        reply to the final dot, waited for up to ``relay.data_timeout`` seconds."""
        settings = self._hop._settings  # noqa: SLF001 - the hop's transaction, same module
        try:
            start = await self._client.execute_command(b"DATA")
            if start.code != 354:
                return Reply(start.code, start.message)
            protocol = self._client.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost before the message")
            for piece in data_pieces(self._hop.trace(), content):
                # aiosmtplib annotates bytes, but the transport takes any bytes-like piece
                protocol.write(piece)  # type: ignore[arg-type]
                # Wait while the socket is backed up, so a big message is never copied whole
                # into the transport's buffer; a next hop that stops reading is given up on.
                async with asyncio.timeout(settings.timeout):
                    await compat.drain(protocol)
            response = await protocol.read_response(timeout=settings.data_timeout)
        except aiosmtplib.SMTPResponseException as exc:
            return Reply(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self._client.close()
            return UNREACHABLE
        self._finished = True
        return Reply(response.code, response.message)

    async def close(self) -> None:
        """End the transaction: the session goes back to the pool (after RSET when the
        transaction was left half-way); a dead connection is just dropped."""
        if not self._client.is_connected:
            self._client.close()
        elif self._finished:
            self._hop.give_back(self._client)
        else:
            await self._hop._reset(self._client)  # noqa: SLF001 - as above


async def _mail_from(client: aiosmtplib.SMTP, sender: str, options: list[str],
                     smtputf8: bool) -> aiosmtplib.SMTPResponse:
    """MAIL FROM, as aiosmtplib's mail() sends and checks it (SMTPSenderRefused on anything
    but 250, ValueError for an address that cannot go on a command line)."""
    if not _PLAIN_PATH.fullmatch(sender):
        return await client.mail(sender, options=options, encoding="utf-8" if smtputf8 else "ascii")
    response = await client.execute_command(
        b"MAIL", b"FROM:<" + sender.encode("ascii") + b">", *_parameters(options))
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)
    return response


async def _rcpt_to(client: aiosmtplib.SMTP, recipient: str, options: list[str],
                   smtputf8: bool) -> aiosmtplib.SMTPResponse:
    """RCPT TO, as aiosmtplib's rcpt() sends and checks it (250 and 251 accept it)."""
    if not recipient or not _PLAIN_PATH.fullmatch(recipient):
        return await client.rcpt(recipient, options=options, encoding="utf-8" if smtputf8 else "ascii")
    response = await client.execute_command(
        b"RCPT", b"TO:<" + recipient.encode("ascii") + b">", *_parameters(options))
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
    return response


def _parameters(options: list[str]) -> list[bytes]:
    return [option.encode("ascii") for option in options]


def _reusable(client: aiosmtplib.SMTP) -> bool:
    """Whether a session may carry another message: still connected, and in step with the
    next hop (no reply arrived that no command asked for)."""
    if not client.is_connected:
        return False
    unread = compat.unread_reply_bytes(client)
    if unread:
        log.warning("next hop sent %d bytes of replies nobody asked for; closing that session",
                    unread)
    return not unread


async def _quit(client: aiosmtplib.SMTP) -> None:
    """End a session politely; a dead connection is just dropped."""
    try:
        if client.is_connected:
            await client.quit()
    except (aiosmtplib.SMTPException, OSError):
        pass
    finally:
        client.close()


async def _send_xforward(client: aiosmtplib.SMTP, xforward: dict[str, str]) -> None:
    """Send the XFORWARD attributes the next hop announces; a refusal is logged, not fatal."""
    if not xforward or not client.supports_extension("xforward"):
        return
    offered = set(client.esmtp_extensions.get("xforward", "").upper().split())
    attributes = [f"{name}={value}" for name, value in xforward.items() if name in offered]
    for command in _xforward_commands(attributes):
        response = await client.execute_command(b"XFORWARD", command.encode("ascii", "replace"))
        if response.code != 250:
            log.warning("next hop refused XFORWARD: %s %s", response.code, response.message)
            return


def _xforward_commands(attributes: list[str], limit: int = 400) -> list[str]:
    """Attributes grouped into commands that stay under the 512-octet command line limit."""
    commands: list[str] = []
    for attribute in attributes:
        if commands and len(commands[-1]) + 1 + len(attribute) <= limit:
            commands[-1] += " " + attribute
        else:
            commands.append(attribute)
    return commands


def _supported(options: list[str], extensions: dict[str, str], client: aiosmtplib.SMTP) -> list[str]:
    kept = []
    for option in options:
        keyword = option.partition("=")[0].upper()
        extension = extensions.get(keyword)
        if extension is not None and client.supports_extension(extension):
            kept.append(option)
        else:
            log.debug("not passing on %s: the next hop does not announce it", keyword)
    return kept
