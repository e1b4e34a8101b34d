"""Internationalized addresses (SMTPUTF8, RFC 6531) through the real daemon, to next hops that
do and do not announce SMTPUTF8."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailhook.testing.sink import Sink
from tests.support import reliability
from tests.support.daemon import invitations
from tests.support.invites import plain_mail
from tests.support.rawsmtp import RawClient
from tests.support.trace import untraced

SENDER = "пользователь@пример.рф"
RECIPIENT = "получатель@пример.рф"
UTF8_MESSAGE = (f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: Привет\r\n"
                "Message-ID: <utf8-1@xn--e1afmkfd.xn--p1ai>\r\n\r\nТекст письма.\r\n").encode()


@pytest.fixture
def ascii_sink() -> Iterator[Sink]:
    """A next hop that does not announce SMTPUTF8."""
    with Sink(smtputf8=False) as server:
        yield server


async def to_ascii_hop(start_daemon, ascii_sink: Sink):
    return await start_daemon(relay={"host": ascii_sink.host, "port": ascii_sink.port})


async def test_utf8_addresses_reach_a_next_hop_that_announces_smtputf8(daemon, sink):
    """MAIL FROM with SMTPUTF8 and UTF-8 addresses is relayed with the addresses intact."""
    reliability.hostile("UTF-8 envelope addresses with SMTPUTF8")
    client = await RawClient.connect(daemon.port)
    assert (await client.command(f"MAIL FROM:<{SENDER}> SMTPUTF8")).startswith("250")
    assert (await client.command(f"RCPT TO:<{RECIPIENT}>")).startswith("250")
    assert (await client.command("RCPT TO:<bob@example.com>")).startswith("250")
    reply = await client.message(UTF8_MESSAGE)
    await client.close()
    assert reply.startswith("250"), reply
    [delivered] = invitations(sink)
    assert delivered.mail_from == SENDER
    assert delivered.rcpt_tos == (RECIPIENT, "bob@example.com")
    assert "SMTPUTF8" in delivered.mail_options
    assert untraced(delivered.content) == UTF8_MESSAGE


async def test_utf8_sender_to_a_next_hop_without_smtputf8_is_refused_with_5_6_7(
    start_daemon, ascii_sink
):
    """The next hop cannot take a UTF-8 sender: a permanent 553 5.6.7, not a retry loop."""
    reliability.hostile("UTF-8 sender to a next hop without SMTPUTF8")
    daemon = await to_ascii_hop(start_daemon, ascii_sink)
    client = await RawClient.connect(daemon.port)
    assert (await client.command(f"MAIL FROM:<{SENDER}> SMTPUTF8")).startswith("250")
    reply = await client.command("RCPT TO:<bob@example.com>")
    assert reply.startswith("553 5.6.7") and "SMTPUTF8" in reply, reply
    assert (await client.command("RSET")).startswith("250")
    assert (await client.command("MAIL FROM:<alice@example.com>")).startswith("250")
    assert (await client.command("RCPT TO:<bob@example.com>")).startswith("250")
    assert (await client.message(plain_mail())).startswith("250")
    await client.close()
    assert [m.mail_from for m in ascii_sink.messages] == ["alice@example.com"]


async def test_utf8_recipient_to_a_next_hop_without_smtputf8_is_refused_alone(
    start_daemon, ascii_sink
):
    """Only the UTF-8 recipient is refused (553 5.6.7); the ASCII one still gets the message."""
    reliability.hostile("UTF-8 recipient to a next hop without SMTPUTF8")
    daemon = await to_ascii_hop(start_daemon, ascii_sink)
    client = await RawClient.connect(daemon.port)
    assert (await client.command("MAIL FROM:<alice@example.com> SMTPUTF8")).startswith("250")
    reply = await client.command(f"RCPT TO:<{RECIPIENT}>")
    assert reply.startswith("553 5.6.7"), reply
    assert (await client.command("RCPT TO:<bob@example.com>")).startswith("250")
    assert (await client.message(plain_mail())).startswith("250")
    await client.close()
    [delivered] = ascii_sink.messages
    assert delivered.rcpt_tos == ("bob@example.com",)
    assert "SMTPUTF8" not in delivered.mail_options


async def test_ascii_mail_with_smtputf8_goes_to_a_next_hop_without_it(start_daemon, ascii_sink):
    """All-ASCII envelope and header with the SMTPUTF8 parameter: delivered without it."""
    daemon = await to_ascii_hop(start_daemon, ascii_sink)
    client = await RawClient.connect(daemon.port)
    assert (await client.command("MAIL FROM:<alice@example.com> SMTPUTF8")).startswith("250")
    assert (await client.command("RCPT TO:<bob@example.com>")).startswith("250")
    reply = await client.message(plain_mail("Привет, 8-bit body.\r\n"))
    await client.close()
    assert reply.startswith("250"), reply
    [delivered] = ascii_sink.messages
    assert delivered.mail_options == ()
    assert untraced(delivered.content) == plain_mail("Привет, 8-bit body.\r\n")


async def test_utf8_header_with_smtputf8_to_a_next_hop_without_it_is_refused_with_5_6_9(
    start_daemon, ascii_sink
):
    """A UTF-8 header section cannot go to a next hop without SMTPUTF8: 550 5.6.9 at DATA."""
    reliability.hostile("UTF-8 header to a next hop without SMTPUTF8")
    daemon = await to_ascii_hop(start_daemon, ascii_sink)
    client = await RawClient.connect(daemon.port)
    assert (await client.command("MAIL FROM:<alice@example.com> SMTPUTF8")).startswith("250")
    assert (await client.command("RCPT TO:<bob@example.com>")).startswith("250")
    reply = await client.message(plain_mail().replace(b"Subject: lunch", "Subject: обед".encode()))
    assert reply.startswith("550 5.6.9"), reply
    assert (await client.command("NOOP")).startswith("250")
    await client.close()
    assert ascii_sink.messages == []


@pytest.mark.parametrize("command", [f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RECIPIENT}>"])
async def test_utf8_address_without_the_smtputf8_parameter_is_refused(daemon, sink, command):
    """A UTF-8 address in a transaction begun without SMTPUTF8 is refused 553 5.6.7."""
    reliability.hostile("UTF-8 address without SMTPUTF8")
    client = await RawClient.connect(daemon.port)
    if command.startswith("RCPT"):
        assert (await client.command("MAIL FROM:<alice@example.com>")).startswith("250")
    reply = await client.command(command)
    assert reply.startswith("553 5.6.7"), reply
    assert (await client.command("RSET")).startswith("250")
    await client.close()
    assert sink.messages == []


async def test_address_that_is_not_utf8_is_refused_as_bad_syntax(daemon, sink):
    """Bytes that are not UTF-8 in an address get 553 5.1.7, never a crash or a 451."""
    reliability.hostile("8-bit address that is not UTF-8")
    client = await RawClient.connect(daemon.port)
    reply = await client.command(b"MAIL FROM:<\xff\xfeuser@example.com> SMTPUTF8")
    assert reply.startswith("553 5.1.7"), reply
    assert (await client.command("MAIL FROM:<alice@example.com> SMTPUTF8")).startswith("250")
    reply = await client.command(b"RCPT TO:<b\xc3(@example.com>")
    assert reply.startswith("553 5.1.3"), reply
    await client.close()
    assert sink.messages == []
