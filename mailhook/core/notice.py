"""The organizer notice and the "action required" notice: short mails of mailhook's own.

The organizer's own copy of an invitation never passes through the relay, so the organizer is
mailed the link: a text and an HTML part (multipart/alternative) in the configured language,
with the topic, the time in the event's own zone, the link (a button in HTML), who was invited
in TrueConf and who joins by the link, and for a series which occurrence the conference is set
for. Neither notice has a calendar part, so no client takes it for an invitation.

Whatever a notice takes from the invitation (topic, names, the organizer's address) is
attacker-controlled. Each value is decoded as a reader would (encoded words, RFC 2047), put on
one line with its control characters removed and bounded; only then is it encoded into header
fields and bodies (core/compose.py) and HTML-escaped in the HTML part. So it can never end a
header, add one or start a part.

When a notice goes out is ``notice.when``: ``notice_kind`` names what a REQUEST did and
``should_send`` says whether that kind is sent.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email.errors import HeaderParseError
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailhook.core import compose
from mailhook.core.blocks import is_safe_url
from mailhook.core.envelope import PLAIN_ADDRESS
from mailhook.core.model import ConferenceSpec
from mailhook.core.notice_texts import ACTION, REASONS, REFUSED, TEXT

# What may not stand in a line of the notice: C0 and C1 controls (CR, LF, NUL...), DEL, the
# Unicode line and paragraph separators, and lone surrogates (undecodable bytes).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
HEADER_TEXT_LIMIT = 200  # characters of one value from the invitation in a header
NAME_LIMIT = 100  # characters of one attendee's name (or a zone's name) in the notice
ADDRESS_LIMIT = 254  # octets of an address in a path (RFC 5321 section 4.5.3.1.3, less <>)
# local-part@domain with a dot-atom local part and a host name (RFC 5322 section 3.4.1).
_PLAIN_ADDRESS = re.compile(PLAIN_ADDRESS)
# Encoded words inside encoded words: this many layers are read, a deeper nest is broken.
_DECODE_ROUNDS = 4

NoticeKind = Literal["created", "updated", "action_required"]
NoticeWhen = Literal["created", "always", "never"]


@dataclass(frozen=True, slots=True)
class NoticeFacts:
    """What the notice tells the organizer."""

    organizer: str
    topic: str
    start: int  # UTC epoch seconds; for a series, the start of the occurrence the conference has
    duration: int  # seconds
    utc_offset_minutes: int  # the offset the time is shown in when ``zone`` is not given
    url: str
    in_accounts: tuple[str, ...]  # names or addresses of attendees invited in TrueConf
    by_link: tuple[str, ...]  # attendees without a TrueConf account
    updated: bool = False
    # The event's own zone: a tzinfo (a ZoneInfo, or one built from the VTIMEZONE) or an IANA
    # name. Without it the time is shown at ``utc_offset_minutes``, in UTC when that is 0.
    zone: tzinfo | str | None = None
    recurring: bool = False  # the event is a series: the notice says the conference moves on
    hosted_by: str = ""  # the TrueConf account owning the conference when the organizer has none


def should_send(when: NoticeWhen, kind: NoticeKind) -> bool:
    """Whether a notice of ``kind`` goes out under ``notice.when``.

    ``kind`` is "created" (a conference was made for the invitation), "updated" (an update
    changed the conference's time, topic or participants) or "action_required" (the invitation
    went out without the conference it asked for). "created" sends the first and the last,
    "always" all three, "never" none; ``notice.enabled = false`` is "never".
    """
    if kind not in ("created", "updated", "action_required"):
        raise ValueError(f"unknown notice kind {kind!r}")
    if when == "never":
        return False
    if when == "created":
        return kind != "updated"
    if when == "always":
        return True
    raise ValueError(f"unknown notice.when {when!r}")


def notice_kind(previous: ConferenceSpec | None, spec: ConferenceSpec,
                before: tuple[str, ...], after: tuple[str, ...]) -> NoticeKind | None:
    """The notice a REQUEST that leaves its event with a conference calls for.

    "created" when there was no conference (``previous`` is None); "updated" when the
    conference's start, duration or topic changed, or its participants (``before`` and
    ``after``: attendees' addresses, in TrueConf or by the link); None when nothing of that
    changed (a retry, a copy, a re-sent invitation).
    """
    if previous is None:
        return "created"
    before_spec = (previous.start, previous.duration, previous.topic)
    if before_spec != (spec.start, spec.duration, spec.topic) or set(before) != set(after):
        return "updated"
    return None


def build_notice(facts: NoticeFacts, sender: str, language: str, now: datetime,
                 message_id: str | None = None) -> bytes:
    """The organizer notice as message bytes, CRLF line endings.

    ``message_id`` (with its angle brackets) replaces the one made up here, for tests.
    """
    text = TEXT.get(language, TEXT["en"])
    topic = header_text(facts.topic)
    subject = text["updated_subject" if facts.updated else "subject"].format(topic=topic)
    when = _when(facts)
    return compose.alternative(
        _headers(subject, sender, facts.organizer, now, message_id),
        [compose.text_part("text/plain", _text_body(facts, topic, when, text)),
         compose.text_part("text/html", _html_body(facts, topic, subject, when, text, language))],
    )


def header_text(value: str, limit: int = HEADER_TEXT_LIMIT) -> str:
    """Text from an invitation made fit for a header: on one line, at most ``limit`` characters.

    Readers decode encoded words (RFC 2047) in a header, and may write the CR and LF they hide
    as they are; so they are read here first, as the email library would, until none is left,
    and what they held is put on one line too.
    """
    text = one_line(value)
    for _ in range(_DECODE_ROUNDS):
        decoded = one_line(_as_the_library_reads(text))
        if decoded == text:
            break
        text = decoded
    # Any "=?" left is text, not an encoded word; it is broken so that no reader decodes it.
    return _bounded(_defused(text), limit)


def one_line(value: str) -> str:
    """The text with every control character a space, and runs of white space one space."""
    return " ".join(_CONTROLS.sub(" ", value).split())


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _as_the_library_reads(text: str) -> str:
    if "=?" not in text:  # no encoded word: the library reads the text as it is
        return text
    try:
        return str(SMTP.header_factory("subject", text))
    except (HeaderParseError, ValueError, IndexError):
        return text


def _defused(text: str) -> str:
    """The text with every "=?" broken, so nothing in it reads as an encoded word."""
    return text.replace("=?", "= ?")


def _headers(subject: str, sender: str, organizer: str, now: datetime,
             message_id: str | None) -> list[str]:
    """A notice's header fields, each encoded and folded."""
    return [
        compose.field("Subject", subject),
        compose.address_field("From", one_line(sender)),
        f"To: {_recipient(organizer)}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: {message_id or make_msgid(domain=_domain(sender))}",
        "Auto-Submitted: auto-generated",
    ]


def _recipient(organizer: str) -> str:
    """The notice's To: the organizer's address when it is a plain one.

    Anything else (quotes, comments, encoded words, 8-bit, over 254 octets) readers may take
    apart differently; such a notice names no one in To and still reaches the organizer, whom
    the envelope names.
    """
    if (len(organizer) <= ADDRESS_LIMIT and _PLAIN_ADDRESS.fullmatch(organizer)
            and "=?" not in organizer):
        return organizer
    return "undisclosed-recipients:;"


def _domain(sender: str) -> str:
    """The sender's domain for Message-IDs, when it is a plain host name."""
    domain = sender.rpartition("@")[2].strip().rstrip(">")
    return domain if re.fullmatch(r"[A-Za-z0-9.-]{1,253}", domain) else "localhost"


def _text_body(facts: NoticeFacts, topic: str, when: str, text: dict[str, str]) -> str:
    lines = [
        text["updated_intro"] if facts.updated else text["intro"],
        "",
        f"{text['topic']}: {topic}",
        f"{text['time']}: {when}",
        f"{text['link']}: {one_line(facts.url)}",
    ]
    lines += [line for line in (_recurring(facts, text), _host(facts, text)) if line]
    lines += [
        "",
        f"{text['accounts']}: {_names(facts.in_accounts) or text['nobody']}",
        f"{text['by_link']}: {_names(facts.by_link) or text['nobody']}",
        "",
        "-- ",
        text["footer"],
    ]
    return "\n".join(lines) + "\n"


def _recurring(facts: NoticeFacts, text: dict[str, str]) -> str:
    """For a series: which occurrence the conference is set for, and that it moves on."""
    if not facts.recurring:
        return ""
    return text["recurring"].format(day=f"{_local_times(facts)[0]:%Y-%m-%d}")


def _host(facts: NoticeFacts, text: dict[str, str]) -> str:
    """For an organizer without a TrueConf account: whose account holds the conference."""
    account = _bounded(one_line(facts.hosted_by), NAME_LIMIT)
    return text["hosted_by"].format(account=account) if account else ""


def _names(names: tuple[str, ...]) -> str:
    """Attendees' names (from their CN) on the notice's one line, each bounded."""
    return ", ".join(_bounded(one_line(name), NAME_LIMIT) for name in names)


def _when(facts: NoticeFacts) -> str:
    """The conference's time in the event's zone, named, e.g.
    "2030-03-17 20:46–21:16 (Europe/Moscow, UTC+03:00)"; in UTC when no zone is known."""
    start, end, name = _local_times(facts)
    until = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M}"
    offset = _offset_name(start)
    label = f"{name}, {offset}" if name and name != offset else offset
    return f"{start:%Y-%m-%d %H:%M}\u2013{until} ({label})"


def _local_times(facts: NoticeFacts) -> tuple[datetime, datetime, str]:
    """The conference's start and end in the zone it is shown in, and the zone's name."""
    zone, name = _zone(facts)
    try:
        return (datetime.fromtimestamp(facts.start, zone),
                datetime.fromtimestamp(facts.start + facts.duration, zone), name)
    except (ValueError, OverflowError, OSError, TypeError):  # a zone that cannot say its offset
        return (datetime.fromtimestamp(facts.start, UTC),
                datetime.fromtimestamp(facts.start + facts.duration, UTC), "")


def _zone(facts: NoticeFacts) -> tuple[tzinfo, str]:
    """The zone the time is shown in, and its name ("" when it has none worth showing)."""
    zone = facts.zone
    if isinstance(zone, str):
        zone = _named_zone(zone)
    if zone is None:
        return timezone(timedelta(minutes=facts.utc_offset_minutes)), ""
    if isinstance(zone, ZoneInfo):
        return zone, _bounded(one_line(zone.key), NAME_LIMIT)
    try:
        name = zone.tzname(datetime.fromtimestamp(facts.start, UTC)) or ""
    except (ValueError, OverflowError, TypeError):
        name = ""
    # Python's fixed offsets call themselves "UTC+03:00"; the offset is shown anyway.
    return zone, "" if name.startswith("UTC") else _bounded(one_line(name), NAME_LIMIT)


def _named_zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _offset_name(moment: datetime) -> str:
    """"UTC" or "UTC+03:00" for the moment's offset."""
    offset = moment.utcoffset() or timedelta(0)
    if not offset:
        return "UTC"
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


# The HTML part: tables and inline styles only, which Outlook (Word's renderer), Gmail and
# Apple Mail all draw alike; the button is a table cell with a link in it.
_FONT = "font-family:Arial,Helvetica,sans-serif;"
_BUTTON = (
    '<table role="presentation" cellpadding="0" cellspacing="0" border="0" '
    'style="margin:0 0 16px 0;">\n'
    '<tr><td align="center" bgcolor="#1a73e8" style="border-radius:4px;background-color:#1a73e8;">'
    '<a href="{href}" target="_blank" style="display:inline-block;padding:12px 24px;'
    + _FONT + 'font-size:16px;font-weight:bold;line-height:20px;color:#ffffff;'
    'text-decoration:none;border-radius:4px;border:1px solid #1a73e8;">{label}</a></td></tr>\n'
    "</table>"
)


def _html_body(facts: NoticeFacts, topic: str, subject: str, when: str,
               text: dict[str, str], language: str) -> str:
    """The HTML part; every piece of text in it is escaped, the link is one only when safe."""
    e = _escaped
    paragraph = '<p style="margin:0 0 16px 0;">{}</p>'
    lines = [
        "<!DOCTYPE html>",
        f'<html lang="{language}">',
        "<head>",
        '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(subject)}</title>",
        "</head>",
        '<body style="margin:0;padding:0;background-color:#f4f5f7;">',
        ('<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" '
         'style="background-color:#f4f5f7;">'),
        '<tr><td align="center" style="padding:24px 12px;">',
        ('<table role="presentation" width="600" cellpadding="0" cellspacing="0" border="0" '
         'style="width:100%;max-width:600px;background-color:#ffffff;border:1px solid #dde1e6;">'),
        f'<tr><td style="padding:24px;{_FONT}font-size:15px;line-height:22px;color:#1f2328;">',
        paragraph.format(e(text["updated_intro"] if facts.updated else text["intro"])),
        f'<h1 style="margin:0 0 8px 0;{_FONT}font-size:20px;line-height:28px;">{e(topic)}</h1>',
        paragraph.format(f"{e(text['time'])}: {e(when)}"),
        *_html_link(one_line(facts.url), text),
        *(paragraph.format(e(line))
          for line in (_recurring(facts, text), _host(facts, text)) if line),
        paragraph.format(f"<b>{e(text['accounts'])}:</b> "
                         f"{e(_names(facts.in_accounts) or text['nobody'])}<br>\n"
                         f"<b>{e(text['by_link'])}:</b> "
                         f"{e(_names(facts.by_link) or text['nobody'])}"),
        (f'<p style="margin:0;font-size:12px;line-height:18px;color:#57606a;">'
         f"{e(text['footer'])}</p>"),
        "</td></tr>",
        "</table>",
        "</td></tr>",
        "</table>",
        "</body>",
        "</html>",
    ]
    return "\n".join(lines) + "\n"


def _html_link(url: str, text: dict[str, str]) -> list[str]:
    """The button and the link under it; an unsafe link is shown as text only."""
    if not is_safe_url(url):
        return [f'<p style="margin:0 0 16px 0;">{_escaped(text["link"])}: {_escaped(url)}</p>']
    href = _escaped(url)
    return [
        _BUTTON.format(href=href, label=_escaped(text["join"])),
        (f'<p style="margin:0 0 16px 0;font-size:13px;line-height:18px;color:#57606a;">'
         f'{_escaped(text["link_hint"])}<br>\n'
         f'<a href="{href}" target="_blank" style="color:#1a73e8;word-break:break-all;">'
         f"{href}</a></p>"),
    ]


def _escaped(text: str) -> str:
    return html.escape(text, quote=True)


def build_action_notice(
    organizer: str,
    topic: str,
    since: float,
    sender: str,
    language: str,
    now: datetime,
    refusal: str = "",
    message_id: str | None = None,
) -> bytes:
    """The "action required" notice for an invitation that went out without its conference:
    one text/plain part.

    ``refusal`` is TrueConf's own reason when it refused the request; without one, TrueConf
    did not answer.
    """
    text = ACTION.get(language, ACTION["en"])
    topic = header_text(topic)
    fields = _headers(text["subject"].format(topic=topic), sender, organizer, now, message_id)
    stamp = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M")
    refusal = _bounded(one_line(refusal), HEADER_TEXT_LIMIT)
    reason = REFUSED.get(language, REFUSED["en"]) + refusal if refusal else REASONS.get(
        language, REASONS["en"])
    body = text["body"].format(topic=topic, reason=reason, since=stamp)
    return compose.message(fields, compose.text_part("text/plain", body))
