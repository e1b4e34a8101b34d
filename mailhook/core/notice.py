"""The organizer notice: a short mail with the link, since the organizer's own copy of the
invitation never passes through the relay.

It has no calendar part, so no client takes it for an invitation. Whatever it takes from the
invitation (topic, names, the organizer's address) is attacker-controlled: it is put on one line
before the email library writes it, so it can never end a header or start a part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.errors import HeaderParseError
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

# What may not stand in a line of the notice: C0 and C1 controls (CR, LF, NUL...), DEL, the
# Unicode line and paragraph separators, and lone surrogates (undecodable bytes).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
HEADER_TEXT_LIMIT = 200  # characters of one value from the invitation in a header
NAME_LIMIT = 100  # characters of one attendee's name in the notice
# local-part@domain with a dot-atom local part and a host name (RFC 5322 section 3.4.1).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# Encoded words inside encoded words: this many layers are read, a deeper nest is broken.
_DECODE_ROUNDS = 4

_TEXT = {
    "en": {
        "subject": "TrueConf conference: {topic}",
        "updated_subject": "TrueConf conference moved: {topic}",
        "intro": "Your invitation now carries a TrueConf video conference.",
        "updated_intro": "The TrueConf video conference of your event has a new time.",
        "topic": "Topic",
        "time": "Time",
        "link": "Link",
        "accounts": "In their TrueConf accounts",
        "by_link": "Joining by the link",
        "nobody": "nobody",
        "footer": "This message was sent automatically; there is no need to reply.",
    },
    "ru": {
        "subject": "Конференция TrueConf: {topic}",
        "updated_subject": "Конференция TrueConf перенесена: {topic}",
        "intro": "В ваше приглашение добавлена видеоконференция TrueConf.",
        "updated_intro": "Видеоконференция TrueConf вашего события перенесена на новое время.",
        "topic": "Тема",
        "time": "Время",
        "link": "Ссылка",
        "accounts": "В учётных записях TrueConf",
        "by_link": "Подключатся по ссылке",
        "nobody": "никто",
        "footer": "Это письмо отправлено автоматически, отвечать на него не нужно.",
    },
}


@dataclass(frozen=True, slots=True)
class NoticeFacts:
    """What the notice tells the organizer."""

    organizer: str
    topic: str
    start: int  # UTC epoch seconds
    duration: int  # seconds
    utc_offset_minutes: int
    url: str
    in_accounts: tuple[str, ...]  # names or addresses of attendees invited in TrueConf
    by_link: tuple[str, ...]  # attendees without a TrueConf account
    updated: bool = False


def build_notice(facts: NoticeFacts, sender: str, language: str, now: datetime) -> bytes:
    """The notice as message bytes, CRLF line endings."""
    text = _TEXT.get(language, _TEXT["en"])
    topic = header_text(facts.topic)
    subject_key = "updated_subject" if facts.updated else "subject"
    message = _headers(text[subject_key].format(topic=topic), sender, facts.organizer, now)
    message.set_content(_body(facts, topic, text), charset="utf-8")
    return message.as_bytes()


def header_text(value: str, limit: int = HEADER_TEXT_LIMIT) -> str:
    """Text from an invitation made fit for a header: on one line, at most ``limit`` characters.

    The email library reads encoded words (RFC 2047) in any text it is given for a header, and
    writes the CR and LF they may hide as they are; so they are read here first, as the
    library would, until none is left, and what they held is put on one line too.
    """
    text = one_line(value)
    for _ in range(_DECODE_ROUNDS):
        decoded = one_line(_as_the_library_reads(text))
        if decoded == text:
            break
        text = decoded
    # Any "=?" left is text, not an encoded word; it is broken, because when the library folds
    # a long header it can write such text so that readers decode it after all.
    return _bounded(_defused(text), limit)


def one_line(value: str) -> str:
    """The text with every control character a space, and runs of white space one space."""
    return " ".join(_CONTROLS.sub(" ", value).split())


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _as_the_library_reads(text: str) -> str:
    try:
        return str(SMTP.header_factory("subject", text))
    except (HeaderParseError, ValueError, IndexError):
        return text


def _defused(text: str) -> str:
    """The text with every "=?" broken, so nothing in it reads as an encoded word."""
    return text.replace("=?", "= ?")


def _headers(subject: str, sender: str, organizer: str, now: datetime) -> EmailMessage:
    """A notice's header fields; each checked as the email library will write it."""
    message = EmailMessage(policy=SMTP)
    _put(message, "Subject", subject)
    _put(message, "From", one_line(sender))
    _put(message, "To", _recipient(organizer))
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=_domain(sender))
    message["Auto-Submitted"] = "auto-generated"
    return message


def _put(message: EmailMessage, name: str, value: str) -> None:
    """Set a header; should the email library read a line break into it (or refuse what it
    reads), set it again with its encoded words broken."""
    try:
        message[name] = value
        if not _CONTROLS.search(str(message[name])):
            return
    except (HeaderParseError, ValueError, IndexError):
        pass
    del message[name]
    message[name] = _defused(one_line(value))


def _recipient(organizer: str) -> str:
    """The notice's To: the organizer's address when it is a plain one.

    Anything else (quotes, comments, encoded words, 8-bit) the email library may read and
    write back in a shape other readers take apart differently; such a notice names no one in
    To and still reaches the organizer, whom the envelope names.
    """
    if _PLAIN_ADDRESS.fullmatch(organizer) and "=?" not in organizer:
        return organizer
    return "undisclosed-recipients:;"


def _domain(sender: str) -> str | None:
    """The sender's domain for Message-IDs, when it is a plain host name."""
    domain = sender.rpartition("@")[2].strip()
    return domain if re.fullmatch(r"[A-Za-z0-9.-]+", domain) else None


def _body(facts: NoticeFacts, topic: str, text: dict[str, str]) -> str:
    lines = [
        text["updated_intro"] if facts.updated else text["intro"],
        "",
        f"{text['topic']}: {topic}",
        f"{text['time']}: {_when(facts)}",
        f"{text['link']}: {one_line(facts.url)}",
        "",
        f"{text['accounts']}: {_names(facts.in_accounts) or text['nobody']}",
        f"{text['by_link']}: {_names(facts.by_link) or text['nobody']}",
        "",
        "-- ",
        text["footer"],
    ]
    return "\n".join(lines) + "\n"


def _names(names: tuple[str, ...]) -> str:
    """Attendees' names (from their CN) on the notice's one line, each bounded."""
    return ", ".join(_bounded(one_line(name), NAME_LIMIT) for name in names)


def _when(facts: NoticeFacts) -> str:
    zone = timezone(timedelta(minutes=facts.utc_offset_minutes))
    start = datetime.fromtimestamp(facts.start, zone)
    end = start + timedelta(seconds=facts.duration)
    offset = start.strftime("%z")
    return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M} (UTC{offset[:3]}:{offset[3:]})"


_ACTION = {
    "en": {
        "subject": "Action required: no TrueConf conference for {topic}",
        "body": (
            "Your invitation \u201c{topic}\u201d was sent to its attendees WITHOUT a TrueConf "
            "video conference link.\n\n"
            "Why: {reason} (since {since} UTC).\n\n"
            "What to do: once TrueConf Server is back, send an update of the meeting (change "
            "anything, or just send it again) and the link will be added; or create the "
            "conference in TrueConf yourself and send its link to the attendees.\n"
        ),
    },
    "ru": {
        "subject": "Требуется действие: нет конференции TrueConf для {topic}",
        "body": (
            "Ваше приглашение \u00ab{topic}\u00bb отправлено участникам БЕЗ ссылки на "
            "видеоконференцию TrueConf.\n\n"
            "Причина: {reason} (с {since} UTC).\n\n"
            "Что сделать: когда TrueConf Server снова будет доступен, отправьте обновление "
            "встречи (измените что-нибудь или просто отправьте её повторно), и ссылка будет "
            "добавлена; или создайте конференцию в TrueConf сами и отправьте ссылку участникам.\n"
        ),
    },
}
_REASONS = {
    "en": "TrueConf Server did not answer",
    "ru": "TrueConf Server не отвечал",
}
_REFUSED = {
    "en": "TrueConf Server refused the request: ",
    "ru": "TrueConf Server отклонил запрос: ",
}


def build_action_notice(
    organizer: str,
    topic: str,
    since: float,
    sender: str,
    language: str,
    now: datetime,
    refusal: str = "",
) -> bytes:
    """The "action required" notice for an invitation that went out without its conference.

    ``refusal`` is TrueConf's own reason when it refused the request; without one, TrueConf
    did not answer.
    """
    text = _ACTION.get(language, _ACTION["en"])
    topic = header_text(topic)
    message = _headers(text["subject"].format(topic=topic), sender, organizer, now)
    stamp = datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%d %H:%M")
    refusal = _bounded(one_line(refusal), HEADER_TEXT_LIMIT)
    reason = _REFUSED.get(language, _REFUSED["en"]) + refusal if refusal else _REASONS.get(
        language, _REASONS["en"])
    message.set_content(text["body"].format(topic=topic, reason=reason, since=stamp), charset="utf-8")
    return message.as_bytes()
