"""The milter front end on a real daemon: Postfix's side of the protocol played by a test
client (tests/support/milter_client.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
import stat
import struct

import pytest
from kilter.protocol.messages import (
    Accept,
    ChangeHeader,
    Continue,
    EnvelopeFrom,
    Negotiate,
    ProtocolFlags,
    ReplaceBody,
    ReplyCode,
)

from mailhook.config import Settings, milter_socket
from mailhook.frontends import milter_pump
from mailhook.frontends.milter_packets import MAX_PACKET
from tests.integration.conftest import send
from tests.support import reliability
from tests.support.clock import Clock
from tests.support.daemon import wait_notices
from tests.support.invites import Event, plain_mail, thunderbird
from tests.support.milter_client import (
    POSTFIX_ACTIONS,
    POSTFIX_STEPS,
    MilterClient,
    macro_packet,
)

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


def accepted_early(answer) -> bool:
    """The milter accepted the message at the end of its header section, changing nothing."""
    return answer.at_end_of_headers and [type(packet) for packet in answer.packets] == [Accept]


def summary(caplog) -> str:
    """The one summary line logged for the message, up to the reply (whose text is the next
    hop's own through SMTP) and its time."""
    lines = [r.getMessage() for r in caplog.records if "decision=" in r.getMessage()]
    assert len(lines) == 1, lines
    return lines[0].partition(" reply=")[0]


async def test_ordinary_mail_is_accepted_at_the_end_of_its_headers(start_daemon, sink, caplog):
    """A single-part message with no calendar type is accepted when its header section ends,
    so the MTA never sends its body; nothing is changed or relayed, and it gets the same log
    line and metrics as through the SMTP front end."""
    caplog.set_level(logging.INFO, logger="mailhook")
    daemon, port = await milter_of(start_daemon)
    client = await MilterClient.connect("127.0.0.1", port)
    answer = await client.message("alice@example.com", ["bob@example.com"], plain_mail(),
                                  {"i": "4Xq1Jt2ZzQz9sWQ"})
    await client.close()
    assert accepted_early(answer)
    assert not sink.messages
    via_milter = summary(caplog)
    assert "queue_id=4Xq1Jt2ZzQz9sWQ" in via_milter and 'reason="no calendar"' in via_milter
    assert "message_id=<plain-1@example.com>" in via_milter
    caplog.clear()
    await send(daemon, plain_mail())
    assert summary(caplog).replace("queue_id=-", "queue_id=4Xq1Jt2ZzQz9sWQ") == via_milter
    assert daemon.app.flow.counts["relayed"] == 2  # counted as the flow counts every message


@pytest.mark.parametrize("content_type", [
    "multipart/alternative; boundary=b1",
    "text/plain; name=invite.ics",
    "text/calendar; method=REQUEST",
    "application/pkcs7-mime; smime-type=enveloped-data",
    "message/rfc822",
])
async def test_mail_that_may_hold_a_calendar_is_read_to_its_end(start_daemon, content_type):
    """A message whose header section allows a calendar in its body (multipart, a calendar
    type, a text part named .ics) or that the flow skips for what it is (S/MIME) is answered
    only after its body."""
    _, port = await milter_of(start_daemon)
    client = await MilterClient.connect("127.0.0.1", port)
    raw = plain_mail().replace(b"text/plain; charset=utf-8", content_type.encode())
    answer = await client.message("alice@example.com", ["bob@example.com"], raw)
    await client.close()
    assert not answer.at_end_of_headers
    assert only_continue(answer)


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
    assert accepted_early(answer)


async def test_both_front_ends_in_one_daemon(start_daemon, sink):
    """SMTP and the milter run side by side on one flow."""
    daemon, port = await milter_of(start_daemon)
    client = await MilterClient.connect("127.0.0.1", port)
    answer = await client.message("alice@example.com", ["bob@example.com"], plain_mail())
    await client.close()
    code, _ = await send(daemon, plain_mail())
    assert accepted_early(answer) and code == 250 and len(sink.messages) == 1


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


async def test_a_huge_header_section_is_read_to_the_end_of_the_message(start_daemon):
    """Ordinary mail with a header section too large to read on the event loop is not
    answered at its end but with its body (where the flow reads large messages off the
    loop); it is still passed unchanged."""
    _, port = await milter_of(start_daemon)
    client = await MilterClient.connect("127.0.0.1", port)
    fields = b"".join(b"X-Filler-%d: %s\r\n" % (index, b"x" * 900) for index in range(400))
    answer = await client.message("alice@example.com", ["bob@example.com"],
                                  fields + plain_mail())
    await client.close()
    assert not answer.at_end_of_headers and only_continue(answer)


async def test_utf8_macros_and_header_names_keep_the_connection(start_daemon, standin):
    """Macro values the MTA passes on from an SMTPUTF8 client (a UTF-8 sender, stray bytes)
    and a header field whose name is not ASCII neither drop the connection nor stop the
    message: ordinary mail is accepted and an invitation still gets its link."""
    _, port = await milter_of(start_daemon)
    client = await MilterClient.connect("127.0.0.1", port)
    await client.send_raw(macro_packet("M", {b"{mail_addr}": "jörg@example.com".encode(),
                                             b"{auth_authen}": b"j\xf6rg\xff"}))
    raw = plain_mail().replace(b"Subject:", "X-Prüfung: 1\r\nSubject:".encode())
    answer = await client.message("jörg@example.com", ["bob@example.com"], raw)
    assert accepted_early(answer)
    answer = await client.message("alice@example.com", ["bob@example.com"],
                                  thunderbird(Event()))
    await client.close()
    assert b"/c/4000000001" in replaced_body(answer)


async def test_a_silent_connection_is_dropped(start_daemon, monkeypatch):
    """An MTA connection that stays silent longer than the idle limit is closed by the
    milter, so silent peers cannot pile up."""
    monkeypatch.setattr(milter_pump, "IDLE_TIMEOUT", 0.3)
    monkeypatch.setattr(milter_pump, "IDLE_CHECK", 0.1)
    _, port = await milter_of(start_daemon)
    client = await MilterClient.connect("127.0.0.1", port)
    assert await asyncio.wait_for(client.reader.read(), 30) == b""


async def test_a_file_where_the_unix_socket_goes_is_left_alone(start_daemon, tmp_path):
    """A milter socket path that names a file other than a socket stops the start with an
    error naming it, and the file is not removed (a mistyped listen deletes nothing)."""
    in_the_way = tmp_path / "main.cf"
    in_the_way.write_text("myhostname = mail.example.com\n")
    with pytest.raises(OSError, match="is not a socket"):
        await start_daemon(milter={"listen": f"unix:{in_the_way}"})
    assert in_the_way.read_text() == "myhostname = mail.example.com\n"


async def test_unix_socket_replaces_a_stale_one(start_daemon, tmp_path):
    """A unix milter socket left by an earlier run is replaced, made with the configured mode,
    and serves the milter protocol."""
    path = tmp_path / "milter.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    await start_daemon(milter={"listen": f"unix:{path}", "socket_mode": "0660"})
    assert stat.S_ISSOCK(path.lstat().st_mode) and stat.S_IMODE(path.lstat().st_mode) == 0o660
    client = MilterClient(*await asyncio.open_unix_connection(str(path)))
    await client.send(Negotiate(6, POSTFIX_ACTIONS, POSTFIX_STEPS))
    assert isinstance(await client.receive(), Negotiate)
    await client.close()


async def test_after_the_deadline_the_milter_accepts_unchanged_with_a_notice(start_daemon,
                                                                           standin, sink):
    """While TrueConf is down an invitation gets the milter's temporary failure until the
    retry deadline; after it the MTA is told to go on with the message unchanged, and the
    organizer notice goes out through the next hop."""
    clock = Clock()
    _, port = await milter_of(start_daemon, clock=clock, retry={"deadline": 600})
    standin.fail_next(1000, 503)
    reliability.fault("TrueConf down past the deadline behind the milter")
    raw = thunderbird(Event())
    client = await MilterClient.connect("127.0.0.1", port)
    first = await client.message("alice@example.com", ["bob@example.com"], raw)
    clock.advance(601)
    after = await client.message("alice@example.com", ["bob@example.com"], raw)
    await client.close()
    assert isinstance(first.final, ReplyCode) and bytes(first.final.content).startswith(b"451 ")
    assert only_continue(after)  # no body or header change: the invitation goes on as it was
    [notice] = await wait_notices(sink, 1)
    assert notice.rcpt_tos == ("alice@example.com",) and b"Action required" in notice.content
    reliability.survived(lost=0, duplicates=False)
