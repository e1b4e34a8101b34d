"""The organizer notice: a short mail with the link, since the organizer's own copy of the
invitation never passes through the relay.

It has no calendar part, so no client takes it for an invitation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

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
    message = EmailMessage(policy=SMTP)
    subject_key = "updated_subject" if facts.updated else "subject"
    message["Subject"] = text[subject_key].format(topic=facts.topic)
    message["From"] = sender
    message["To"] = facts.organizer
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(_body(facts, text), charset="utf-8")
    return message.as_bytes()


def _body(facts: NoticeFacts, text: dict[str, str]) -> str:
    lines = [
        text["updated_intro"] if facts.updated else text["intro"],
        "",
        f"{text['topic']}: {facts.topic}",
        f"{text['time']}: {_when(facts)}",
        f"{text['link']}: {facts.url}",
        "",
        f"{text['accounts']}: {', '.join(facts.in_accounts) or text['nobody']}",
        f"{text['by_link']}: {', '.join(facts.by_link) or text['nobody']}",
        "",
        "-- ",
        text["footer"],
    ]
    return "\n".join(lines) + "\n"


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
    message = EmailMessage(policy=SMTP)
    message["Subject"] = text["subject"].format(topic=topic)
    message["From"] = sender
    message["To"] = organizer
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    stamp = datetime.fromtimestamp(since, timezone.utc).strftime("%Y-%m-%d %H:%M")
    reason = _REFUSED.get(language, _REFUSED["en"]) + refusal if refusal else _REASONS.get(
        language, _REASONS["en"])
    message.set_content(text["body"].format(topic=topic, reason=reason, since=stamp), charset="utf-8")
    return message.as_bytes()
