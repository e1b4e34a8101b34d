"""The words of mailhook's notices to the organizer, in each language it writes them in.

Placeholders in braces are filled in by core/notice.py after every value taken from the
invitation has been made safe.
"""

from __future__ import annotations

# The organizer notice: the link, the time, who joins how.
TEXT = {
    "en": {
        "subject": "TrueConf conference: {topic}",
        "updated_subject": "TrueConf conference updated: {topic}",
        "intro": "Your invitation now carries a TrueConf video conference.",
        "updated_intro": "The TrueConf video conference of your event has changed.",
        "topic": "Topic",
        "time": "Time",
        "link": "Link",
        "join": "Join the conference",
        "link_hint": "If the button does not work, open this link:",
        "recurring": "Recurring meeting: the conference is set for the occurrence of {day}. "
                     "When that occurrence is over, the conference moves on to the next one by "
                     "itself; the link stays the same.",
        "hosted_by": "Your address has no TrueConf account, so the conference belongs to the "
                     "TrueConf account {account}.",
        "accounts": "In their TrueConf accounts",
        "by_link": "Joining by the link",
        "nobody": "nobody",
        "footer": "This message was sent automatically; there is no need to reply.",
    },
    "ru": {
        "subject": "Конференция TrueConf: {topic}",
        "updated_subject": "Конференция TrueConf изменена: {topic}",
        "intro": "В ваше приглашение добавлена видеоконференция TrueConf.",
        "updated_intro": "Видеоконференция TrueConf вашего события изменена.",
        "topic": "Тема",
        "time": "Время",
        "link": "Ссылка",
        "join": "Подключиться к конференции",
        "link_hint": "Если кнопка не работает, откройте ссылку:",
        "recurring": "Повторяющаяся встреча: конференция назначена на встречу {day}. "
                     "Когда эта встреча закончится, конференция сама перейдёт на следующую; "
                     "ссылка останется прежней.",
        "hosted_by": "У вашего адреса нет учётной записи TrueConf, поэтому конференция "
                     "принадлежит учётной записи TrueConf {account}.",
        "accounts": "В учётных записях TrueConf",
        "by_link": "Подключатся по ссылке",
        "nobody": "никто",
        "footer": "Это письмо отправлено автоматически, отвечать на него не нужно.",
    },
}

# The "action required" notice: the invitation went out without its conference.
ACTION = {
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

REASONS = {
    "en": "TrueConf Server did not answer",
    "ru": "TrueConf Server не отвечал",
}

REFUSED = {
    "en": "TrueConf Server refused the request: ",
    "ru": "TrueConf Server отклонил запрос: ",
}
