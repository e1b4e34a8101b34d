"""Postponed work acts only on its own conference.

A deletion or update that waited for TrueConf names its conference by id. Meanwhile TrueConf
may have given that id to another meeting: a server restored from a backup or set up anew
counts ids from where it did before. Each conference mailhook makes carries the event's tag
(``core.decide.event_tag``), so before postponed work touches a conference it reads it back
and checks the tag; another meeting's conference is left alone and the work is dropped.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Protocol

from mailhook.core.decide import event_tag
from mailhook.core.model import Conference

log = logging.getLogger("mailhook.retry")


class Owner(Enum):
    """Whose the conference with the id is now."""

    EVENT = "event"  # it carries the event's tag: the work may go ahead
    OTHER = "other"  # another meeting has the id now: leave it alone, drop the work
    GONE = "gone"  # TrueConf has no conference with the id


class ConferenceReader(Protocol):
    async def get_conference(self, conference_id: str) -> Conference | None: ...


async def owner_of(trueconf: ConferenceReader, conference_id: str, organizer: str, uid: str,
                   work: str) -> Owner:
    """Whose the conference is now, before the postponed ``work`` ("deletion", "update") is
    done (another meeting's is logged: the work is dropped). TrueConf's errors are raised as
    they come (a TemporaryError: try again later)."""
    conference = await trueconf.get_conference(conference_id)
    if conference is None:
        return Owner.GONE
    if event_tag(organizer, uid) in conference.tags:
        return Owner.EVENT
    log_dropped(work, conference_id, organizer, uid)
    return Owner.OTHER


def log_dropped(work: str, conference_id: str, organizer: str, uid: str) -> None:
    """Say that postponed work was dropped because its conference id names another meeting."""
    log.warning("conference %s now belongs to another meeting on TrueConf (its id was given "
                "anew); the postponed %s for uid=%s organizer=%s is dropped and that "
                "conference is left alone", conference_id, work, uid, organizer)
