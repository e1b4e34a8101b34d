"""The organizer's own copy of an event (as a CalDAV server keeps it): the conference link
written in the way the invitation got it, or taken out again, and what an edit changed.

Like ``rewrite``, the edits work line by line: every line that is not one of the link's
properties stays as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from icalendar import Calendar

from mailhook.core import blocks
from mailhook.core.contentline import (
    ContentLine,
    escape_text,
    split_content_line,
    unescape_text,
    unfold,
)
from mailhook.core.model import LinkInsertion
from mailhook.core.rewrite import fold_line, rewrite_calendar_text

# The properties the link is written into; an edit of the organizer's event touches no other.
LINK_PROPERTIES = frozenset({"CONFERENCE", "LOCATION", "DESCRIPTION", "X-ALT-DESC",
                             "STYLED-DESCRIPTION"})
_LABEL = re.compile(r';LABEL="?trueconf"?(?=[;:]|$)', re.IGNORECASE)


def with_link(text: str, insertion: LinkInsertion) -> str:
    """The event with the link: CONFERENCE, LOCATION and the DESCRIPTION block, as in mail."""
    return rewrite_calendar_text(text, insertion)


def without_link(text: str) -> str:
    """The event with the TrueConf CONFERENCE, the link in LOCATION and the blocks taken out.

    The link is the one the event's own CONFERENCE property names (mailhook always writes
    one), so nothing needs to be known about the conference that was deleted.
    """
    lines = [line for line in unfold(text) if line.logical.strip()]
    links = _conference_links(lines)
    out: list[str] = []
    within: list[str] = []  # the components the line is in, innermost last
    for line in lines:
        name, params, value = split_content_line(line.logical)
        name = name.upper()
        if name in LINK_PROPERTIES and within[-1:] == ["VEVENT"]:  # not a VALARM's
            out.extend(_unlinked(line, name, params, value, links))
            continue
        out.extend(line.physical)
        if name == "BEGIN":
            within.append(value.strip().upper())
        elif name == "END" and within:
            within.pop()
    return "\r\n".join(out) + "\r\n"


def _conference_links(lines: list[ContentLine]) -> set[str]:
    links = set()
    for line in lines:
        name, params, value = split_content_line(line.logical)
        if name.upper() == "CONFERENCE" and _LABEL.search(params):
            links.add(value.strip())
    return links


def _unlinked(line: ContentLine, name: str, params: str, value: str,
              links: set[str]) -> list[str]:
    text = unescape_text(value)
    if name == "CONFERENCE":
        return [] if value.strip() in links else list(line.physical)
    if name == "LOCATION":
        new = text
        for link in links:
            new = new.replace(link, "")
        new = " ".join(new.split())
        if not new and new != text:
            return []
    elif name == "DESCRIPTION":
        new = blocks.remove_plain_block(text)
    else:
        new = blocks.remove_html_block(text)
    if new == text:
        return list(line.physical)
    return fold_line(f"{name}{params}:{escape_text(new)}")


@dataclass(frozen=True, slots=True)
class Changes:
    """What an edit of the organizer's event changed."""

    link: bool  # one of the link's properties
    other: bool  # anything else: such an edit is never written


def changes(before: str, after: str) -> Changes:
    """Compare two versions of a calendar object, property by property."""
    old, new = _components(before), _components(after)
    if len(old) != len(new):
        return Changes(link=True, other=True)
    link = other = False
    for (old_name, old_props, old_rest), (new_name, new_props, new_rest) in zip(old, new):
        other |= old_name != new_name or old_rest != new_rest
        for prop in set(old_props) | set(new_props):
            if old_props.get(prop) != new_props.get(prop):
                if old_name == "VEVENT" and prop in LINK_PROPERTIES:
                    link = True
                else:
                    other = True
    return Changes(link=link, other=other)


def _components(text: str) -> list[tuple[str, dict[str, list[bytes]], list[bytes]]]:
    """Each top-level component: its name, its own properties (as written) and its
    subcomponents (alarms) whole."""
    calendar = Calendar.from_ical(text)
    found: list[tuple[str, dict[str, list[bytes]], list[bytes]]] = [
        ("VCALENDAR", _properties(calendar), [])]
    for component in calendar.subcomponents:
        rest = [sub.to_ical() for sub in component.subcomponents]
        found.append((str(component.name), _properties(component), rest))
    return found


def _properties(component: object) -> dict[str, list[bytes]]:
    """Each property as one content line (value and parameters), by name."""
    props: dict[str, list[bytes]] = {}
    for name, value in component.property_items(recursive=False):  # type: ignore[attr-defined]
        if name not in ("BEGIN", "END"):
            props.setdefault(name, []).append(component.content_line(name, value).encode())  # type: ignore[attr-defined]
    return props
