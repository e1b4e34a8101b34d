"""A milter peer that floods mailhook with packets and never reads the answers, against a real
`mailhook serve`: it is read no further once its answers back up, so neither the daemon's
memory nor the other MTA connections pay for it."""

from __future__ import annotations

import socket
import struct
import time

from kilter.protocol.messages import Negotiate

from mailhook.frontends.milter_packets import encode
from tests.support import reliability
from tests.support.milter_client import POSTFIX_ACTIONS, POSTFIX_STEPS
from tests.support.process import free_port, rss_mb, serving

FLOOD = 60 * 1024 * 1024  # the most the peer tries to send


def negotiation() -> bytes:
    return encode(Negotiate(6, POSTFIX_ACTIONS, POSTFIX_STEPS))


def flood(port: int) -> tuple[socket.socket, int]:
    """Send negotiations for up to 10 s without reading a byte; the socket and what went."""
    peer = socket.create_connection(("127.0.0.1", port))
    peer.setblocking(False)
    chunk = negotiation() * 4096
    sent, stalled_since = 0, None
    deadline = time.monotonic() + 10
    while sent < FLOOD and time.monotonic() < deadline:
        try:
            sent += peer.send(chunk)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 2:
                break  # mailhook reads no more: the flood is held in the kernel's buffers
            time.sleep(0.01)
    return peer, sent


def test_a_peer_that_never_reads_is_read_no_further(tmp_path):
    """Negotiation packets sent without reading an answer fill the peer's share of buffers
    and then mailhook stops reading from it: the daemon grows by a few MB at most instead of
    queueing an answer for every packet, and another connection still gets its negotiation
    answered."""
    reliability.hostile("milter: a flood of packets from a peer that never reads")
    port = free_port()
    env = {"MAILHOOK_MILTER__LISTEN": f"inet:127.0.0.1:{port}",
           "MAILHOOK_SMTP__ENABLED": "false", "MAILHOOK_METRICS__ENABLED": "false"}
    with serving(tmp_path, env, ready_port=port) as daemon:
        before = rss_mb(daemon.process.pid)
        peer, sent = flood(port)
        grown = rss_mb(daemon.process.pid) - before
        with socket.create_connection(("127.0.0.1", port), timeout=30) as other:
            other.sendall(negotiation())
            size = struct.unpack("!L", other.recv(4, socket.MSG_WAITALL))[0]
            answer = other.recv(size, socket.MSG_WAITALL)
        peer.close()
    assert answer[:1] == b"O"  # the other MTA's negotiation was answered
    # Before mailhook stopped reading from such a peer it queued every answer: 16 MB and
    # growing after 10 s of this flood.
    assert grown < 8, f"the daemon grew by {grown:.1f} MB after taking {sent} bytes"
