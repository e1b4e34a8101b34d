"""The next hop: hands each message on over SMTP with aiosmtplib.

A transaction is opened when the client names its first recipient, so that every recipient
gets the next hop's own answer at RCPT time, and the message gets the next hop's answer to
DATA. Message bytes are sent exactly as given: only SMTP dot-stuffing is applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiosmtplib

from mailhook.config import RelaySettings

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


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply."""

    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        """The reply as sent: a multi-line reply gets "code-" continuation lines."""
        lines = self.text.replace("\r\n", "\n").split("\n") or [""]
        head = "".join(f"{self.code}-{line}\r\n" for line in lines[:-1])
        return f"{head}{self.code} {lines[-1]}"


UNREACHABLE = Reply(451, "4.4.1 Next hop unavailable, try again later")
BAD_SENDER = Reply(553, "5.1.7 Bad sender address syntax")
BAD_RECIPIENT = Reply(553, "5.1.3 Bad recipient address syntax")


class NextHop:
    """Opens transactions on the configured next-hop SMTP server."""

    def __init__(self, settings: RelaySettings) -> None:
        self._settings = settings

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self._settings.host,
            port=self._settings.port,
            timeout=self._settings.timeout,
            local_hostname=self._settings.helo_name or None,
            start_tls=False,
        )

    async def begin(
        self, mail_from: str, mail_options: list[str], xforward: dict[str, str] | None = None
    ) -> Transaction | Reply:
        """Connect and send MAIL FROM; a Reply means the next hop did not accept it.

        ``xforward`` (attribute -> xtext value, as the client gave them) is passed on before
        MAIL FROM when the next hop announces XFORWARD, so its log names the original client.
        """
        client = self._client()
        try:
            await client.connect()
            await client.ehlo()
            await _send_xforward(client, xforward or {})
            options = _supported(mail_options, _MAIL_PARAMETER_EXTENSIONS, client)
            await client.mail(mail_from, options=options)
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            return Reply(exc.code, exc.message)
        except ValueError:
            # aiosmtplib refuses addresses it cannot quote: the address itself is wrong.
            client.close()
            return BAD_SENDER
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            log.warning("next hop %s:%s unreachable: %s", self._settings.host, self._settings.port, exc)
            return UNREACHABLE
        return Transaction(client)

    async def probe(self) -> Reply:
        """Connect, EHLO and QUIT: the next hop's EHLO reply, or why it could not be had."""
        client = self._client()
        try:
            await client.connect()
            response = await client.ehlo()
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

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self._client = client

    async def rcpt(self, address: str, options: list[str]) -> Reply:
        """Send RCPT TO and return the next hop's reply."""
        try:
            options = _supported(options, _RCPT_PARAMETER_EXTENSIONS, self._client)
            response = await self._client.rcpt(address, options=options)
        except aiosmtplib.SMTPResponseException as exc:
            return Reply(exc.code, exc.message)
        except ValueError:
            return BAD_RECIPIENT
        except (aiosmtplib.SMTPException, OSError):
            return UNREACHABLE
        return Reply(response.code, response.message)

    async def data(self, content: bytes) -> Reply:
        """Send the message exactly as given and return the next hop's reply."""
        try:
            start = await self._client.execute_command(b"DATA")
            if start.code != 354:
                return Reply(start.code, start.message)
            protocol = self._client.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost before the message")
            protocol.write(dot_stuff(content))
            response = await protocol.read_response(timeout=self._client.timeout)
        except aiosmtplib.SMTPResponseException as exc:
            return Reply(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError):
            self._client.close()
            return UNREACHABLE
        return Reply(response.code, response.message)

    async def close(self) -> None:
        """End the session politely; a dead connection is just dropped."""
        try:
            if self._client.is_connected:
                await self._client.quit()
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            self._client.close()


def dot_stuff(content: bytes) -> bytes:
    """The DATA payload: leading dots doubled, CRLF-terminated, ended by the lone dot."""
    payload = content.replace(b"\r\n.", b"\r\n..")
    if payload.startswith(b"."):
        payload = b"." + payload
    if payload and not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    return payload + b".\r\n"


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
