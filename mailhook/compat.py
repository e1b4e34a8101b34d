"""The few private members of aiosmtplib that mailhook needs, used here and nowhere else.

aiosmtplib has no public way to wait while the connection's send buffer is full (so that a large
message is written in pieces instead of copied whole into the transport), nor to see reply bytes
that the next hop sent without being asked (the sign of a session that is out of step, which
must never be reused). tests/unit/test_compat.py fails when an installed aiosmtplib changes any
member used here; pyproject.toml keeps aiosmtplib below its next major version.
"""

from __future__ import annotations

import weakref

import aiosmtplib
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
