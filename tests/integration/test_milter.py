"""The milter front end on a real daemon: Postfix's side of the protocol played by a test
client (tests/support/milter_client.py)."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest
from kilter.protocol.messages import (
    ChangeHeader,
    Continue,
    EnvelopeFrom,
    ProtocolFlags,
    ReplaceBody,
    ReplyCode,
)

from mailhook.config import Settings, milter_socket
from mailhook.frontends.milter import MAX_PACKET
from tests.integration.conftest import send
from tests.support import reliability
from tests.support.invites import Event, plain_mail, thunderbird
from tests.support.milter_client import MilterClient

MILTER = {"listen": "inet:127.0.0.1:0"}


async def milter_of(start_daemon, **sections):
    """A daemon with the milter on a free port; the port."""
    daemon = await start_daemon(milter=MILTER, **sections)
    return daemon, int(milter_socket(daemon.milter.address)[2])


def only_continue(answer) -> bool:
    """The milter answered with a plain continue and changed nothing."""
    return [type(packet) for packet in answer.packets] == [Continue]


def replaced_body(answer) -> bytes:
    return b"".join(bytes(packet.content) for packet in answer.of(ReplaceBody))


async def test_invitation_gets_the_link_in_the_replaced_body(start_daemon, standin, caplog):
    """An invitation through the milter comes back with the join link in its new body, and the
    log line carries Postfix's queue id and client from the macros."""
    caplog.set_level(logging.INFO, logger="mailhook")
    _, port = await milter_of(start_daemon)
    client = await MilterClient.connect("127.0.0.1", port)
    answer = await client.message("alice@example.com", ["bob@example.com"],
                                  thunderbird(Event()),
                                  {"i": "4Xq1Jt2ZzQz9sWQ", "{client_addr}": "192.0.2.7",
                                   "{client_name}": "mua.example.com"})
    await client.close()
    assert isinstance(answer.final, Continue)
    assert b"/c/4000000001" in replaced_body(answer)
    assert standin.conferences
    line = next(r.getMessage() for r in caplog.records if "decision=" in r.getMessage())
    assert "queue_id=4Xq1Jt2ZzQz9sWQ" in line and "client=mua.example.com[192.0.2.7]" in line


async def test_ordinary_mail_is_answered_without_changes(start_daemon, sink):
    """Ordinary mail gets a plain continue: no body or header change, nothing relayed."""
    _, port = await milter_of(start_daemon)
    client = await MilterClient.connect("127.0.0.1", port)
    answer = await client.message("alice@example.com", ["bob@example.com"], plain_mail())
    await client.close()
    assert only_continue(answer)
    assert not sink.messages


async def test_only_changed_mime_headers_are_changed(start_daemon):
    """The milter changes no header the rewrite left alone (a Thunderbird invitation keeps
    its top-level Content-Type)."""
    _, port = await milter_of(start_daemon)
    client = await MilterClient.connect("127.0.0.1", port)
    answer = await client.message("alice@example.com", ["bob@example.com"],
                                  thunderbird(Event()))
    await client.close()
    assert answer.of(ReplaceBody)
    assert all(packet.name.lower() in ("content-type", "content-transfer-encoding")
               for packet in answer.of(ChangeHeader))


async def test_trueconf_down_is_a_temporary_failure(start_daemon, standin):
    """With TrueConf down the MTA gets a 451 4.x.x reply code, so it keeps the message."""
    _, port = await milter_of(start_daemon)
    standin.fail_next(1000, 503)
    reliability.fault("TrueConf down behind the milter")
    client = await MilterClient.connect("127.0.0.1", port)
    answer = await client.message("alice@example.com", ["bob@example.com"],
                                  thunderbird(Event()))
    await client.close()
    assert isinstance(answer.final, ReplyCode)
    assert bytes(answer.final.content).startswith(b"451 4.")
    assert not answer.of(ReplaceBody)
    reliability.survived(lost=0, duplicates=False)  # the MTA keeps it; nothing was made


async def test_milter_only_daemon_serves_without_smtp(start_daemon):
    """With [smtp] enabled = false the daemon serves the milter alone."""
    daemon, port = await milter_of(start_daemon, smtp={"enabled": False})
    assert not daemon.smtp._servers
    client = await MilterClient.connect("127.0.0.1", port)
    answer = await client.message("alice@example.com", ["bob@example.com"], plain_mail())
    await client.close()
    assert only_continue(answer)


async def test_both_front_ends_in_one_daemon(start_daemon, sink):
    """SMTP and the milter run side by side on one flow."""
    daemon, port = await milter_of(start_daemon)
    client = await MilterClient.connect("127.0.0.1", port)
    answer = await client.message("alice@example.com", ["bob@example.com"], plain_mail())
    await client.close()
    code, _ = await send(daemon, plain_mail())
    assert only_continue(answer) and code == 250 and len(sink.messages) == 1


HOSTILE = {
    "garbage": b"\xff\xfe this is not a milter packet \r\n" * 4,
    "truncated packet": struct.pack("!L", 40) + b"Mfoo",
    "oversized packet": struct.pack("!L", MAX_PACKET + 1) + b"B" + b"x" * 1000,
    "zero-length packet": struct.pack("!L", 0),
    "malformed header packet": struct.pack("!L", 4) + b"Lab\0",
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_bad_packets_leave_other_connections_served(start_daemon, name):
    """A client sending bad packets is dropped; a connection opened before it still gets its
    invitation rewritten."""
    reliability.hostile(f"milter: {name}")
    _, port = await milter_of(start_daemon)
    good = await MilterClient.connect("127.0.0.1", port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HOSTILE[name])
    await writer.drain()
    if name == "truncated packet":
        writer.close()
    else:
        assert await asyncio.wait_for(reader.read(), 30) == b""  # the milter hung up
    answer = await good.message("alice@example.com", ["bob@example.com"], thunderbird(Event()))
    await good.close()
    assert b"/c/4000000001" in replaced_body(answer)


async def test_disconnect_mid_message_leaves_the_daemon_serving(start_daemon, standin):
    """An MTA that goes away in the middle of a message's body costs nothing: the next
    connection's invitation is handled."""
    reliability.hostile("milter: disconnect mid-message")
    daemon, port = await milter_of(start_daemon)
    gone = await MilterClient.connect("127.0.0.1", port)
    raw = thunderbird(Event())
    await gone.step(EnvelopeFrom(b"<alice@example.com>"), ProtocolFlags.NR_SENDER)
    gone.writer.write(raw[:100])
    gone.writer.close()
    client = await MilterClient.connect("127.0.0.1", port)
    answer = await client.message("alice@example.com", ["bob@example.com"], raw)
    await client.close()
    assert b"/c/4000000001" in replaced_body(answer)
    assert daemon.app.flow.in_flight == 0


def test_listen_notation_is_checked():
    """check-config refuses a milter socket not in Postfix's notation."""
    base = {"trueconf": {"server_url": "https://tc.example.com", "client_id": "x"},
            "policy": {"local_domains": ["example.com"]}}
    for good in ("", "inet:127.0.0.1:8891", "inet:[::1]:8891", "unix:/run/mailhook/milter.sock"):
        Settings(**base, milter={"listen": good})
    for bad in ("127.0.0.1:8891", "inet:8891", "unix:relative.sock", "inet:host:port"):
        with pytest.raises(ValueError, match="milter listen"):
            Settings(**base, milter={"listen": bad})
