"""TLS towards the next hop: the greeting with STARTTLS as ``relay.tls`` asks, the context it
uses, and the error for a next hop that must offer STARTTLS and does not. (The listener's side is the front
end's: ``mailhook.frontends.smtp.tls_options``.)"""

from __future__ import annotations

import functools
import ssl

import aiosmtplib

from mailhook.config import RelaySettings


class TlsRefused(aiosmtplib.SMTPException):
    """relay.tls is "required" and the next hop does not offer STARTTLS."""


@functools.cache  # one context for the settings in use (a CA file is read once)
def next_hop_context(settings: RelaySettings) -> ssl.SSLContext | None:
    """The context STARTTLS to the next hop uses: verifying when TLS is required, merely
    encrypting when it is opportunistic (as Postfix's "may" level does: a check that fails
    would only fall back to no TLS at all)."""
    if settings.tls == "none":
        return None
    context = ssl.create_default_context(cafile=settings.ca_file or None)
    if settings.tls == "opportunistic":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def greet(client: aiosmtplib.SMTP, settings: RelaySettings) -> aiosmtplib.SMTPResponse:
    """EHLO, then STARTTLS and EHLO again as relay.tls asks; the last EHLO reply. A session
    that fails here is closed (it is never pooled)."""
    try:
        return await _greet(client, settings, next_hop_context(settings))
    except BaseException:
        client.close()
        raise


async def _greet(client: aiosmtplib.SMTP, settings: RelaySettings,
                 context: ssl.SSLContext | None) -> aiosmtplib.SMTPResponse:
    response = await client.ehlo()
    offered = client.supports_extension("starttls")
    if context is None or not (offered or settings.tls == "required"):
        return response
    if not offered:
        raise TlsRefused(f"the next hop {settings.host}:{settings.port} does not offer "
                         'STARTTLS (relay.tls = "required")')
    await client.starttls(tls_context=context, server_hostname=settings.tls_name or settings.host)
    return await client.ehlo()
