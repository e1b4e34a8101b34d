"""Notices, keyed locks, dot-stuffing, reply mapping and the account directory."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
import sys
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from mailhook.core.notice import NoticeFacts, build_action_notice, build_notice, header_text
from mailhook.core.replies import client_reply
from mailhook.errors import TrueConfUnavailable
from mailhook.frontends.limits import is_trusted, trusted_networks
from mailhook.frontends.smtp import Handler
from mailhook.locks import KeyedLocks
from mailhook.relay import Reply, dot_stuff
from mailhook.trueconf.directory import LocalPartDirectory, UserListDirectory

FACTS = NoticeFacts(
    organizer="alice@example.com",
    topic="Quarterly planning",
    start=1900000000,
    duration=1800,
    utc_offset_minutes=180,
    url="https://video.example.com/c/42",
    in_accounts=("Bob Baker",),
    by_link=("carol@example.org",),
)
NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("language", ["en", "ru"])
def test_notice_is_text_and_html_with_the_facts(language):
    """The notice has the topic, local time, link and both attendee lists, and no calendar."""
    raw = build_notice(FACTS, "noreply@example.com", language, NOW)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"] == "alice@example.com"
    assert message["Auto-Submitted"] == "auto-generated"
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/alternative", "text/plain", "text/html"]
    for body in (message.get_body(("plain",)).get_content(),
                 message.get_body(("html",)).get_content()):
        assert "https://video.example.com/c/42" in body
        assert "Bob Baker" in body and "carol@example.org" in body
        assert "2030-03-17 20:46" in body and "UTC+03:00" in body  # 1900000000 at UTC+3
        if language == "ru":
            assert "Тема" in body or "Время" in body
    assert b"\r\n" in raw and b"\n\n" not in raw.replace(b"\r\n", b"")


def nested_encoded_word(text: str, depth: int) -> str:
    """``text`` wrapped in ``depth`` layers of base64 encoded words."""
    for _ in range(depth):
        text = "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="
    return text


@pytest.mark.parametrize("depth", [1, 3, 8])
def test_header_text_reads_nested_encoded_words_to_the_end(depth):
    """However deeply a line break is wrapped in encoded words, no header of a notice holds it."""
    topic = nested_encoded_word("Q3\r\nBcc: victim@example.net", depth)
    text = header_text(topic)
    assert "\r" not in text and "\n" not in text
    organizer = nested_encoded_word("a\r\nBcc: x", 2) + "@example.com"
    facts = replace(FACTS, topic=topic, organizer=organizer)
    for raw in (build_notice(facts, "noreply@example.com", "en", NOW),
                build_action_notice(facts.organizer, topic, 0, "noreply@example.com", "en", NOW)):
        message = email.message_from_bytes(raw, policy=email.policy.default)
        own = {"Auto-Submitted", "Content-Type", "Date", "From", "MIME-Version", "Message-ID",
               "Subject", "To"}
        if not message.is_multipart():  # the action notice is one text/plain part
            own.add("Content-Transfer-Encoding")
        assert sorted(message.keys()) == sorted(own)
        for name in ("Subject", "To"):
            assert not any(ch in str(message[name]) for ch in "\r\n\x00"), (name, message[name])


def test_header_text_is_bounded_on_one_line():
    """Header text from an invitation is one line of at most the given number of characters."""
    assert header_text("a\u2028b\x85c\td\x00e  f") == "a b c d e f"
    assert len(header_text("x" * 5000, 200)) == 200 and header_text("x" * 5000).endswith("\u2026")
    assert header_text("Quarterly planning") == "Quarterly planning"


async def test_keyed_locks_serialise_one_key_only():
    """Holders of one key run one at a time; other keys run alongside; locks are dropped."""
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key):
            order.append(f"{name}+")
            await asyncio.sleep(0.01)
            order.append(f"{name}-")

    await asyncio.gather(hold("a", "1"), hold("a", "2"), hold("b", "3"))
    assert order.index("1-") < order.index("2+")
    assert order.index("3+") < order.index("1-")
    assert len(locks) == 0


def test_dot_stuffing_is_exact():
    """Leading dots are doubled (also after a bare LF, which becomes CRLF), and the terminator
    is added."""
    assert dot_stuff(b".a\r\n..b\r\nc.\r\n") == b"..a\r\n...b\r\nc.\r\n.\r\n"
    assert dot_stuff(b"x\n.y\r\n") == b"x\r\n..y\r\n.\r\n"
    assert dot_stuff(b"no end") == b"no end\r\n.\r\n"


def test_next_hop_replies_map_for_the_client():
    """A next-hop 4xx becomes 451; 2xx and 5xx pass as they are."""
    assert client_reply(Reply(421, "4.3.2 busy")) == Reply(451, "4.3.2 busy")
    assert client_reply(Reply(550, "5.1.1 no")) == Reply(550, "5.1.1 no")
    assert client_reply(Reply(250, "ok")).ok


async def test_unhandled_exception_is_temporary():
    """aiosmtpd's permanent 500 for an unhandled exception is replaced by 451."""
    handler = Handler(None)  # type: ignore[arg-type]
    assert (await handler.handle_exception(RuntimeError("boom"))).startswith("451 ")


def test_trusted_networks():
    """Only clients in smtp.trusted_networks are served; IPv4-mapped IPv6 counts as IPv4."""
    nets = trusted_networks(("127.0.0.0/8", "10.1.0.0/16"))
    assert is_trusted(("127.0.0.1", 1), nets)
    assert is_trusted(("::ffff:10.1.2.3", 1, 0, 0), nets)
    assert not is_trusted(("192.0.2.1", 1), nets)


async def test_local_part_directory():
    """Local-domain addresses map to their local part; others have no account."""
    directory = LocalPartDirectory(("example.com",))
    found = await directory.lookup(["Bob@Example.com", "x@example.org"])
    assert {k: v.id for k, v in found.items()} == {"bob@example.com": "bob"}


class FakeUsers:
    """A user source that counts calls and can fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def list_users(self):
        self.calls += 1
        if self.fail:
            raise TrueConfUnavailable("down")
        return [SimpleNamespace(id="dave", email="Dave@Example.com", display_name="Dave")]


async def test_user_list_directory_caches_and_tolerates_outage():
    """The user list is matched case-insensitively, cached for the TTL, kept when a refresh fails."""
    now = [0.0]
    source = FakeUsers()
    directory = UserListDirectory(source, ttl=60, clock=lambda: now[0])
    assert (await directory.lookup(["dave@example.COM"]))["dave@example.com"].id == "dave"
    await directory.lookup(["x@example.com"])
    assert source.calls == 1
    now[0] = 61
    source.fail = True
    assert "dave@example.com" in await directory.lookup(["dave@example.com"])
    assert source.calls == 2
    empty = UserListDirectory(FakeUsers(), ttl=60)
    empty._source.fail = True  # type: ignore[attr-defined]
    with pytest.raises(TrueConfUnavailable):
        await empty.lookup(["a@example.com"])


def test_multi_line_reply_is_sent_as_continuation_lines():
    """A multi-line next-hop reply is passed on as proper SMTP continuation lines."""
    reply = Reply(450, "4.2.0 Greylisted\nsee http://example/grey")
    assert str(reply) == "450-4.2.0 Greylisted\r\n450 see http://example/grey"
    assert str(Reply(250, "ok")) == "250 ok"


def test_journal_priority_prefixes_every_line_of_a_record():
    """For the journal each line of a record, a traceback's included, starts with its syslog
    priority; the plain format has none."""
    from mailhook import logfmt

    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.getLogger("mailhook").makeRecord(
            "mailhook", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    journal = logfmt.Formatter(priorities=True).format(record).split("\n")
    assert len(journal) > 3 and all(line.startswith("<3>") for line in journal)
    assert journal[0] == "<3>ERROR mailhook: failed"
    assert not logfmt.Formatter().format(record).startswith("<")
    levels = (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)
    assert [logfmt.syslog_priority(level) for level in levels] == [2, 3, 4, 6, 7]
