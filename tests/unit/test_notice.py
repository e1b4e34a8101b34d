"""The organizer notice's content (time in the event's zone, series, host, HTML part), when it is
sent (``notice.when``), and how its header fields are written."""

from __future__ import annotations

import email
import email.headerregistry
import email.policy
import html
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhook.config import load_settings
from mailhook.core import compose
from mailhook.core.model import ConferenceSpec
from mailhook.core.notice import (
    NoticeFacts,
    build_action_notice,
    build_notice,
    header_text,
    notice_kind,
    one_line,
    should_send,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
URL = "https://video.example.com/c/42"
FACTS = NoticeFacts(
    organizer="alice@example.com",
    topic="Quarterly planning",
    start=1900000000,  # 2030-03-17 17:46 UTC
    duration=1800,
    utc_offset_minutes=0,
    url=URL,
    in_accounts=("Bob Baker",),
    by_link=("zoe@example.net",),
)


def read(raw: bytes) -> email.message.EmailMessage:
    """The notice as the stdlib parser reads it."""
    return email.message_from_bytes(raw, policy=email.policy.default)


def text_of(facts: NoticeFacts, language: str = "en") -> str:
    """The notice's text part."""
    return read(build_notice(facts, "noreply@example.com", language, NOW)).get_body(
        ("plain",)).get_content()


def html_of(facts: NoticeFacts, language: str = "en") -> str:
    """The notice's HTML part."""
    return read(build_notice(facts, "noreply@example.com", language, NOW)).get_body(
        ("html",)).get_content()


def time_line(facts: NoticeFacts) -> str:
    """The notice's "Time:" line."""
    [line] = [line for line in text_of(facts).splitlines() if line.startswith("Time: ")]
    return line


# --- when a notice goes out -------------------------------------------------------------------

@pytest.mark.parametrize(("when", "sent"), [
    ("created", {"created", "action_required"}),
    ("always", {"created", "updated", "action_required"}),
    ("never", set()),
])
def test_should_send_follows_notice_when(when, sent):
    """"created" sends on a new conference (and "action required"), "always" on updates too,
    "never" nothing."""
    kinds = ("created", "updated", "action_required")
    assert {kind for kind in kinds if should_send(when, kind)} == sent


def test_should_send_refuses_unknown_values():
    """A misspelt kind or setting is a programming error, not a silent "no"."""
    with pytest.raises(ValueError, match="kind"):
        should_send("created", "moved")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="notice.when"):
        should_send("sometimes", "created")  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("", "created"),
    ('when = "always"\n', "always"),
    ('when = "never"\n', "never"),
    ('enabled = false\nwhen = "always"\n', "never"),
])
def test_notice_when_setting_and_enabled(tmp_path, text, expected):
    """notice.when defaults to "created"; notice.enabled = false means "never" whatever it says."""
    path = tmp_path / "mailhook.toml"
    path.write_text('[trueconf]\nserver_url = "https://tc.example.com"\nclient_id = "x"\n'
                    'client_secret = "y"\n[policy]\nlocal_domains = ["example.com"]\n'
                    f"[notice]\n{text}")
    assert load_settings(Path(path)).notice.sent_when == expected


# --- the time, in the event's own zone --------------------------------------------------------

def test_time_is_in_the_event_zone_by_name():
    """An IANA zone name shows the local time with the zone's name and offset."""
    assert time_line(replace(FACTS, zone="Europe/Moscow")) == (
        "Time: 2030-03-17 20:46\u201321:16 (Europe/Moscow, UTC+03:00)")


def test_time_is_in_the_event_zone_given_as_tzinfo():
    """A tzinfo (as the calendar reader builds one) works the same; DST is the zone's own."""
    from zoneinfo import ZoneInfo

    july = replace(FACTS, start=1909000000, zone=ZoneInfo("America/New_York"))  # 2030-06-29
    assert time_line(july) == "Time: 2030-06-29 17:46\u201318:16 (America/New_York, UTC-04:00)"


def test_time_without_a_zone_is_utc_labelled_as_such():
    """Without a zone (or with an unknown one) and no offset, the time is in UTC and says so."""
    assert time_line(FACTS) == "Time: 2030-03-17 17:46\u201318:16 (UTC)"
    assert time_line(replace(FACTS, zone="Mars/Olympus_Mons")) == time_line(FACTS)
    assert time_line(replace(FACTS, utc_offset_minutes=-150)) == (
        "Time: 2030-03-17 15:16\u201315:46 (UTC-02:30)")


def test_time_names_a_custom_zone_by_its_name_and_crosses_midnight():
    """A zone that is not IANA (from a VTIMEZONE) is named by its abbreviation, cleaned; an
    end on the next day carries its date."""
    zone = timezone(timedelta(hours=5), "Ekb\r\nBcc: x")
    late = replace(FACTS, zone=zone, duration=6 * 3600)
    assert time_line(late) == "Time: 2030-03-17 22:46\u20132030-03-18 04:46 (Ekb Bcc: x, UTC+05:00)"


# --- a series, an organizer without an account ------------------------------------------------

@pytest.mark.parametrize("language", ["en", "ru"])
def test_series_notice_names_the_occurrence_and_says_it_moves_on(language):
    """For a recurring meeting the notice says which occurrence has the conference, and that the
    conference moves on to the next one by itself."""
    series = replace(FACTS, recurring=True, zone="Europe/Moscow")
    plain, page = text_of(series, language), html_of(series, language)
    moves = {"en": "moves on to the next one by itself", "ru": "сама перейдёт на следующую"}
    for body in (plain, page):
        assert "2030-03-17" in body and moves[language] in body
    assert moves[language] not in text_of(FACTS, language)


def test_notice_names_the_account_that_hosts_the_conference():
    """An organizer without a TrueConf account is told which account holds the conference."""
    hosted = replace(FACTS, hosted_by="meetings-bot\r\nBcc: x")
    for body in (text_of(hosted), html_of(hosted)):
        assert "belongs to the TrueConf account meetings-bot Bcc: x." in body
    assert "belongs to" not in text_of(FACTS)


def test_updated_notice_says_the_conference_changed():
    """An update's notice says so, in the subject and the first line."""
    message = read(build_notice(replace(FACTS, updated=True), "noreply@example.com", "en", NOW))
    assert message["Subject"] == "TrueConf conference updated: Quarterly planning"
    assert message.get_body(("plain",)).get_content().startswith(
        "The TrueConf video conference of your event has changed.")


# --- the HTML part ----------------------------------------------------------------------------

def test_html_part_has_a_button_to_the_link():
    """The HTML part's button is a table cell with a styled link, inline CSS only."""
    page = html_of(FACTS)
    assert re.search(r'<td align="center" bgcolor="#1a73e8"[^>]*><a href="https://video\.example'
                     r'\.com/c/42" target="_blank" style="display:inline-block;[^"]*">'
                     r"Join the conference</a></td>", page)
    assert "<style" not in page and "class=" not in page and "<script" not in page


def test_html_part_escapes_every_piece_of_invitation_text():
    """Topic and names are text in the HTML part, never markup."""
    hostile = replace(FACTS, topic='<b onclick="x()">Q3</b> & "plans"',
                      in_accounts=("<img src=x onerror=alert(1)>",), by_link=("a'b\"c<d>",),
                      hosted_by="<i>bot</i>")
    page = html_of(hostile)
    assert "&lt;b onclick=&quot;x()&quot;&gt;Q3&lt;/b&gt; &amp; &quot;plans&quot;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "a&#x27;b&quot;c&lt;d&gt;" in page and "&lt;i&gt;bot&lt;/i&gt;" in page
    assert not re.search(r"<(b |img|i>)", page)


@pytest.mark.parametrize("url", ["javascript:alert(1)", 'https://x.example/"><script>',
                                 "data:text/html,<b>x</b>"])
def test_html_part_links_only_a_safe_url(url):
    """A link that fails the safe-URL check is no button and no link, only escaped text."""
    page = html_of(replace(FACTS, url=url))
    assert "<a " not in page and "Join the conference" not in page
    assert "<script" not in page and "<b>x</b>" not in page
    assert f"Link: {html.escape(url)}" in page


# --- header fields ----------------------------------------------------------------------------

def test_long_topic_is_folded_to_short_lines():
    """A long topic is folded at spaces, or written as encoded words when one word is too long
    for a line; it reads back the same."""
    for topic in ("word " * 60, "x" * 190, "Встреча " * 30):
        raw = build_notice(replace(FACTS, topic=topic), "noreply@example.com", "en", NOW)
        head = raw.partition(b"\r\n\r\n")[0]
        assert max(len(line) for line in head.split(b"\r\n")) <= 78
        assert read(raw)["Subject"] == "TrueConf conference: " + header_text(topic)


@pytest.mark.parametrize(("sender", "name", "address"), [
    ('"Video, Bot" <noreply@example.com>', "Video, Bot", "noreply@example.com"),
    ("Видеосвязь <noreply@example.com>", "Видеосвязь", "noreply@example.com"),
    ("B" * 60 + " <noreply@example.com>", "B" * 60, "noreply@example.com"),
    ("B" * 120 + " <noreply@example.com>", "B" * 120, "noreply@example.com"),
    ("noreply@пример.рф", "", "noreply@xn--e1afmkfd.xn--p1ai"),
])
def test_sender_from_the_config_is_quoted_or_encoded(sender, name, address):
    """The configured From is quoted or encoded as needed, folded to short lines, and an
    internationalized domain is written in its ASCII form."""
    raw = build_notice(FACTS, sender, "en", NOW)
    head = raw.partition(b"\r\n\r\n")[0]
    assert head.isascii() and max(len(line) for line in head.split(b"\r\n")) <= 78
    [mailbox] = read(raw)["From"].addresses
    # The stdlib reader keeps the space between encoded words of a phrase (RFC 2047 drops it).
    assert (mailbox.display_name.replace(" ", ""), mailbox.addr_spec) == (
        name.replace(" ", ""), address)


def test_overlong_organizer_address_is_not_written():
    """An organizer address longer than SMTP allows leaves To undisclosed."""
    organizer = "x" * 300 + "@example.com"
    message = read(build_action_notice(organizer, "Q3", 0, "noreply@example.com", "en", NOW))
    assert message["To"] == "undisclosed-recipients:;"


def test_fixed_message_id_for_reproducible_notices():
    """Given a Message-ID and a time, the same facts make the same bytes."""
    first, second = (build_notice(FACTS, "noreply@example.com", "ru", NOW, "<n1@example.com>")
                     for _ in range(2))
    assert first == second and read(first)["Message-ID"] == "<n1@example.com>"


def test_notice_is_written_without_the_header_registry(monkeypatch):
    """Ordinary notices are written without the email library's header registry (its cost was
    most of the notice's)."""
    def refuse(*args, **kwargs):
        raise AssertionError("header registry used")

    monkeypatch.setattr(email.headerregistry.HeaderRegistry, "__call__", refuse)
    for topic in ("Quarterly planning", "Планирование на квартал"):
        build_notice(replace(FACTS, topic=topic), "Bot <noreply@example.com>", "ru", NOW)
        build_action_notice("alice@example.com", topic, 0, "noreply@example.com", "en", NOW)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_text_without_encoded_words_reads_as_itself(text):
    """For text with no "=?", the library reads a header as the text itself, so header_text may
    skip asking it."""
    from email.policy import SMTP

    line = one_line(text).replace("=?", "")
    assert str(SMTP.header_factory("subject", line)) == line


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["Subject", "X-Long-Header-Name-For-Folding"]),
       text=st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_header_field_reads_back_exactly(name, text):
    """Any one-line value, written as a header field, reads back the same with lines of at most
    78 octets (a single ASCII word longer than a line is encoded)."""
    value = one_line(text)
    written = compose.field(name, value)
    assert all(len(line) <= 78 for line in written.split("\r\n"))
    assert written.isascii() and "\r\n\r\n" not in written
    assert read(f"{written}\r\n\r\n".encode())[name] == value


def test_notice_kind_names_what_a_request_did():
    """A new conference is "created"; a new time, duration, topic or participant "updated";
    a retry or copy that changes none of these calls for no notice."""
    spec = ConferenceSpec(topic="Q3", owner="alice", invitees=(), start=1900000000,
                          duration=1800, role_based=False, max_participants=10, tag="t")
    people = ("bob@example.com", "zoe@example.net")
    assert notice_kind(None, spec, (), people) == "created"
    assert notice_kind(spec, spec, people, tuple(reversed(people))) is None
    assert notice_kind(spec, replace(spec, description="new"), people, people) is None
    for changed in (replace(spec, start=1900003600), replace(spec, duration=3600),
                    replace(spec, topic="Q4")):
        assert notice_kind(spec, changed, people, people) == "updated"
    assert notice_kind(spec, spec, people, people[:1]) == "updated"
    assert notice_kind(spec, spec, people, (*people, "dave@example.com")) == "updated"
