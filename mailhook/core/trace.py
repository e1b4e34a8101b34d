"""mailhook's trace header: the one Received field it puts on top of every message it relays,
and the count of those naming this instance that a message already carries (a routing loop).

A Received field is the standard trace field (RFC 5321 4.4): MTAs count Received fields for
their own hop limits, so a loop that runs through the MTA as well is stopped by both. It names
only this instance's host name, and "(mailhook)" so that the MTA's own Received fields for the
same host name are not counted as mailhook's.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache

MARK = "(mailhook)"
HEADER_LINE_OCTETS = 78  # RFC 5322 2.1.1: lines SHOULD be no longer than this
# Trace fields sit on top of the header section: looking further would only cost time on a
# large message whose header section never ends.
SCAN_OCTETS = 1024 * 1024


def trace_header(hostname: str, when: datetime) -> bytes:
    """The Received field for a message relayed now: one line when it fits in 78 octets,
    else folded before the date (the field stays one field)."""
    return _trace_field(hostname, when.replace(microsecond=0), when.tzinfo)


# The field names the second only, so messages relayed within one second share it: it is made
# once for them (formatting the date costs more than the rest of the field). The zone is part
# of the key because equal instants in two zones compare equal but are written differently.
@lru_cache(maxsize=8)
def _trace_field(hostname: str, when: datetime, _zone: object) -> bytes:
    head = f"Received: by {hostname} {MARK};"
    date = format_datetime(when)
    if len(head) + 1 + len(date) <= HEADER_LINE_OCTETS:
        return f"{head} {date}\r\n".encode("ascii", "replace")
    return f"{head}\r\n\t{date}\r\n".encode("ascii", "replace")


def own_hops(content: bytes, hostname: str) -> int:
    """How many of this instance's trace fields the message's header section carries."""
    return len(_own_field(hostname).findall(header_section(content)))


@lru_cache(maxsize=8)
def _own_field(hostname: str) -> re.Pattern[bytes]:
    """This instance's trace field, found at the start of a line (built once per name)."""
    return re.compile(
        rb"^Received:[ \t]*by[ \t]+" + re.escape(hostname.encode("ascii", "replace"))
        + rb"[ \t]+" + re.escape(MARK.encode()), re.IGNORECASE | re.MULTILINE)


def is_own_greeting(greeting: str, own_name: str) -> bool:
    """Whether a next hop's 220 greeting text is this mailhook's own ("<hostname> mailhook",
    as its SMTP front end greets): relaying there would loop."""
    return greeting.split()[:2] == [own_name, "mailhook"]


def header_section(content: bytes) -> bytes:
    """The message's header section (its first SCAN_OCTETS when no empty line ends it)."""
    limit = min(len(content), SCAN_OCTETS)
    end = content.find(b"\r\n\r\n", 0, limit)
    # An LF-only blank line can only end it earlier: look for one before the CRLF one alone.
    lf_end = content.find(b"\n\n", 0, limit if end < 0 else end)
    if lf_end >= 0:
        end = lf_end
    return content[:end if end >= 0 else limit]
