"""The run-time loop guard: mailhook's trace field on relayed mail, a message that went round
through mailhook too often refused with 5.4.6, and a next hop that is mailhook itself."""

from __future__ import annotations

import logging

import pytest

from mailhook.frontends.smtp import MailhookSMTP
from tests.integration.conftest import send
from tests.support.daemon import invitations
from tests.support.invites import plain_mail
from tests.support.process import free_port
from tests.support.trace import untraced


async def test_relayed_mail_carries_one_trace_field_on_top(daemon, sink):
    """Relayed mail gets one Received field naming mailhook's host name, on one line of at
    most 78 octets; below it the message is as it came."""
    raw = plain_mail()
    assert (await send(daemon, raw))[0] == 250
    [delivered] = invitations(sink)
    first_line = delivered.content.split(b"\r\n", 1)[0]
    assert first_line.startswith(b"Received: by mailhook.test (mailhook); ")
    assert len(first_line) <= 78
    assert untraced(delivered.content) == raw


async def test_mail_going_round_through_the_mta_is_refused_after_max_own_hops(
        start_daemon, sink, caplog):
    """Mail the MTA hands back to mailhook after relaying (a looping re-injection service)
    passes smtp.max_own_hops times, then is refused with 554 5.4.6 and a log line."""
    caplog.set_level(logging.INFO, logger="mailhook")
    daemon = await start_daemon(smtp={"max_own_hops": 3})
    message, replies = plain_mail(), []
    for _ in range(10):  # the MTA queues what the next hop got and hands it in again
        code, text = await send(daemon, message)
        replies.append((code, text))
        if code != 250:
            break
        message = sink.messages[-1].content
    assert [code for code, _ in replies] == [250, 250, 250, 554]
    assert replies[-1][1].startswith("5.4.6 Routing loop detected")
    assert len(sink.messages) == 3
    assert message.count(b"(mailhook)") == 3
    assert any("routing loop" in r.getMessage() and "3 times" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


async def test_other_hosts_trace_fields_do_not_count(daemon, sink):
    """Received fields of another mailhook, or of the MTA on the same host, are not loops."""
    foreign = (b"Received: by other.test (mailhook); Mon, 1 Jan 2024 10:00:00 +0000\r\n" * 5
               + b"Received: from a by mailhook.test (Postfix) with ESMTP id 1;\r\n"
                 b"\tMon, 1 Jan 2024 10:00:00 +0000\r\n" * 5)
    raw = foreign + plain_mail()
    assert (await send(daemon, raw))[0] == 250
    assert untraced(invitations(sink)[0].content) == raw


async def test_relay_to_own_listener_answers_451_without_looping(
        start_daemon, caplog, monkeypatch):
    """relay.port set to mailhook's own listener: the client gets 451 4.4.6 at once, the
    mail stays in the MTA's queue, one connection is made to mailhook and an error is logged."""
    caplog.set_level(logging.INFO, logger="mailhook")
    connections = []
    original = MailhookSMTP.connection_made

    def counted(self, transport):
        connections.append(transport)
        original(self, transport)

    monkeypatch.setattr(MailhookSMTP, "connection_made", counted)
    port = free_port()
    daemon = await start_daemon(smtp={"listen_port": port},
                                relay={"host": "127.0.0.1", "port": port})
    code, text = await send(daemon, plain_mail())
    assert (code, text.split()[0]) == (451, "4.4.6")
    assert len(connections) == 2  # the client's and mailhook's own next-hop attempt
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("is mailhook itself" in line for line in errors)


@pytest.mark.parametrize("hops", [1, 2])
async def test_mail_under_the_limit_goes_on(start_daemon, sink, hops):
    """Mail that passed this mailhook fewer than smtp.max_own_hops times is relayed."""
    daemon = await start_daemon(smtp={"max_own_hops": 3})
    message = plain_mail()
    for _ in range(hops):
        assert (await send(daemon, message))[0] == 250
        message = sink.messages[-1].content
    assert (await send(daemon, message))[0] == 250
