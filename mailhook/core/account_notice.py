"""The notice for an organizer without a TrueConf account (and no trueconf.fallback_owner):
no conference was made for the invitation, why, and what to do. One text/plain part in the
configured language, sent once per event; its header fields are made as the other notices'
(``mailhook.core.notice``), so nothing taken from the invitation can end a header.
"""

from __future__ import annotations

from datetime import datetime

from mailhook.core import compose
from mailhook.core.notice import _headers, header_text

_NO_ACCOUNT = {
    "en": {
        "subject": "No TrueConf conference for {topic}",
        "body": (
            "Your invitation \u201c{topic}\u201d was sent to its attendees WITHOUT a TrueConf "
            "video conference link.\n\n"
            "Why: your address {organizer} has no TrueConf account, and a conference is made "
            "only in its organizer's TrueConf account.\n\n"
            "What to do: ask your administrator for a TrueConf account (or for the meetings "
            "of organizers without one to be hosted by a service account), then send an "
            "update of the meeting; or create the conference in TrueConf yourself and send "
            "its link to the attendees.\n\n"
            "You get this message once for this meeting.\n"
        ),
    },
    "ru": {
        "subject": "Нет конференции TrueConf для {topic}",
        "body": (
            "Ваше приглашение \u00ab{topic}\u00bb отправлено участникам БЕЗ ссылки на "
            "видеоконференцию TrueConf.\n\n"
            "Причина: у вашего адреса {organizer} нет учётной записи TrueConf, а конференция "
            "создаётся только в учётной записи её организатора.\n\n"
            "Что сделать: попросите администратора завести вам учётную запись TrueConf (или "
            "поручить встречи организаторов без неё служебной учётной записи), затем "
            "отправьте обновление встречи; или создайте конференцию в TrueConf сами и "
            "отправьте ссылку участникам.\n\n"
            "Это письмо приходит один раз для этой встречи.\n"
        ),
    },
}


def build_no_account_notice(organizer: str, topic: str, sender: str, language: str,
                            now: datetime, message_id: str | None = None) -> bytes:
    """The notice that no conference was made because the organizer has no TrueConf account."""
    text = _NO_ACCOUNT.get(language, _NO_ACCOUNT["en"])
    topic = header_text(topic)
    fields = _headers(text["subject"].format(topic=topic), sender, organizer, now, message_id)
    body = text["body"].format(topic=topic, organizer=header_text(organizer))
    return compose.message(fields, compose.text_part("text/plain", body))
