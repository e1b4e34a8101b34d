"""Invitation extraction: which parts of a message hold a calendar object or the readable
body, their bodies decoded, and the one parse of a message (``parse_message``).

The MIME tree itself (byte positions of every part) is ``mailhook.core.mimetree``'s.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterator
from email.message import Message
from email.utils import getaddresses
from typing import TypedDict

from mailhook.core.calendar import TOO_LARGE, CalendarError, parse_calendar
from mailhook.core.envelope import PLAIN_ADDRESS
from mailhook.core.mimetree import (
    BOM,
    MimePart,
    ScannedMessage,
    decode_words,
    parse_headers,
    scan_message,
    split_header,
)
from mailhook.core.model import CalendarObject, CalendarPart, ParsedMessage

__all__ = ["MimePart", "ScannedMessage", "parse_message", "scan_message"]

MAX_CALENDAR_BYTES = 16 * 1024 * 1024
CALENDAR_TYPES = frozenset({"text/calendar", "application/ics"})
NAMED_CALENDAR_TYPES = frozenset(
    {"application/octet-stream", "text/plain", "text/x-vcalendar", "application/x-ics"}
)
SKIP_TYPES = {
    "multipart/signed": "signed",
    "multipart/encrypted": "encrypted",
    "application/pkcs7-mime": "encrypted",
    "application/x-pkcs7-mime": "encrypted",
    "multipart/report": "report",
    "application/ms-tnef": "tnef",
    "application/vnd.ms-tnef": "tnef",
}
READABLE_TYPES = frozenset({"text/plain", "text/html"})
IDENTITY_CTES = frozenset({"", "7bit", "8bit", "binary"})

_FAST_PATH_MARKERS = (b"text/calendar", b"application/ics", b"text/x-vcalendar", b".ics",
                      b"begin:vcalendar")
# Each marker holds "cal" or "ics": one search for each key decides most messages. A long
# marker is slow to search for in text made of its own letters (a body of "xxx…" against
# "text/calendar": the search can then only step one octet at a time), a short key is not.
_MARKERS_BY_KEY = tuple(
    (key, tuple(marker for marker in _FAST_PATH_MARKERS if key in marker)) for key in (b"cal", b"ics")
)
# An encoded file name (RFC 2047 or RFC 2231) can hide ".ics" from the byte search, so an
# octet-stream part with an encoded name also needs the full parse.
# Microsoft's labels name the older standard but mean its own superset; decoding with the
# standard codec would fail on (and so leave undecoded) characters the superset adds.
_SUPERSETS = {"ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "gb2312": "gbk"}


class BodyDecodeError(ValueError):
    """A part body could not be decoded with its Content-Transfer-Encoding."""


def may_contain_calendar(raw: bytes) -> bool:
    """Cheaply tell whether a message might carry a calendar object (no MIME parse).

    Plain substring tests on lower-cased windows of the message: a case-insensitive regex
    alternation is many times slower on multi-megabyte attachments, and lower-casing the whole
    message at once would copy it; every outgoing message pays this.
    """
    octet_stream = False
    for start in range(0, max(len(raw), 1), _WINDOW):
        window = raw[start:start + _WINDOW + _OVERLAP].lower()
        if any(key in window and any(marker in window for marker in markers)
               for key, markers in _MARKERS_BY_KEY):
            return True
        octet_stream = octet_stream or b"application/octet-stream" in window
    # The encoded-name marks have no letters, so they are looked for in the message as it is,
    # and only in the rare message with an octet-stream part: every other one is spared the
    # two searches (each as costly as a marker's).
    return octet_stream and (b"=?" in raw or b"*=" in raw)


_WINDOW = 1024 * 1024
_OVERLAP = 32  # longer than any marker, so none is missed where two windows meet


# --- bodies -----------------------------------------------------------------------------------


# The bytes a base64 body may hold besides its alphabet and padding (line ends, mostly):
# dropped before decoding, by one translate rather than a regular expression's substitution.
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_ALPHABET)))


def decode_body(raw: bytes, part: MimePart) -> bytes:
    """The part's body with its Content-Transfer-Encoding removed."""
    body = raw[part.body_start : part.body_end]
    if part.cte in IDENTITY_CTES:
        return body
    if part.cte == "base64":
        try:
            return base64.b64decode(body.translate(None, _NOT_BASE64), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BodyDecodeError("broken base64") from exc
    if part.cte == "quoted-printable":
        return binascii.a2b_qp(body)
    raise BodyDecodeError(f"unknown transfer encoding {part.cte!r}")


def valid_charset(name: str | None) -> str | None:
    """The Python codec name for a MIME charset, or None when unknown."""
    if not name:
        return None
    name = name.strip().strip('"').strip()
    name = _SUPERSETS.get(name.lower(), name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def decode_text(data: bytes, declared: str | None) -> tuple[str, str]:
    """Decode text leniently; return (text, codec used). A UTF-8 BOM is dropped."""
    data = data.removeprefix(BOM)
    candidates = [valid_charset(declared), "utf-8", "cp1252"]
    for codec in candidates:
        if codec is None:
            continue
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"


# --- invitations ------------------------------------------------------------------------------


def is_calendar_candidate(raw: bytes, part: MimePart) -> bool:
    """Whether a leaf part holds (or claims to hold) an iCalendar object."""
    if part.content_type in CALENDAR_TYPES:
        return True
    if part.content_type not in NAMED_CALENDAR_TYPES or part.is_multipart:
        return False
    if not part.filename.lower().endswith(".ics"):
        return False
    if part.body_end - part.body_start > MAX_CALENDAR_BYTES * 2:
        return False
    try:
        data = decode_body(raw, part)
    except BodyDecodeError:
        return False
    return data.lstrip(BOM + b" \t\r\n")[:15].upper() == b"BEGIN:VCALENDAR"


def holds_no_calendar(head: bytes) -> bool:
    """Whether a message with this header section holds no calendar whatever its body says.

    That is a single-part message of no calendar type (nor a type ``parse_message`` skips for
    what it is, like S/MIME), and for the types a calendar file may be sent as, without an
    ``.ics`` file name. ``parse_message`` finds "no calendar" in such a message from its whole
    bytes too, so a front end that sees the header section first (the milter) may answer it
    there and never take its body.
    """
    try:
        root = scan_message(head).root
    except Exception:  # noqa: BLE001 - an unreadable header section takes the whole path
        return False
    kind = root.content_type
    if root.is_multipart or kind.startswith(("multipart/", "message/")):
        return False
    if kind in CALENDAR_TYPES or kind in SKIP_TYPES:
        return False
    return not (kind in NAMED_CALENDAR_TYPES and root.filename.lower().endswith(".ics"))


def calendar_leaves(raw: bytes, root: MimePart) -> list[MimePart]:
    """Candidate calendar parts in document order, never looking inside message/rfc822."""
    return [part for part in _visible_leaves(root) if is_calendar_candidate(raw, part)]


def _visible_leaves(part: MimePart) -> Iterator[MimePart]:
    if part.children:
        for child in part.children:
            yield from _visible_leaves(child)
    elif not part.content_type.startswith(("message/", "multipart/")):
        yield part


def readable_leaves(raw: bytes, root: MimePart) -> list[MimePart]:
    """text/plain and text/html parts that form the message's readable body."""
    found: list[MimePart] = []
    _collect_readable(raw, root, found)
    return found


def _collect_readable(raw: bytes, part: MimePart, found: list[MimePart]) -> None:
    if part.children:
        children = part.children[:1] if part.content_type == "multipart/related" else part.children
        seen: set[str] = set()
        for child in children:
            # Apple Mail splits one HTML body around an attachment: one block per body is enough.
            if part.content_type == "multipart/mixed" and child.content_type in seen:
                continue
            if child.content_type in READABLE_TYPES and not child.children:
                seen.add(child.content_type)
            _collect_readable(raw, child, found)
        return
    if part.content_type not in READABLE_TYPES or part.disposition == "attachment":
        return
    if part.filename or is_calendar_candidate(raw, part):
        return
    found.append(part)


def read_calendar(raw: bytes, part: MimePart) -> tuple[str, str]:
    """Decode a calendar part to text; return (text, codec). Raises ValueError when broken."""
    if part.body_end - part.body_start > MAX_CALENDAR_BYTES * 2:
        raise CalendarError(TOO_LARGE)
    data = decode_body(raw, part)
    if len(data) > MAX_CALENDAR_BYTES:
        raise CalendarError(TOO_LARGE)
    return decode_text(data, part.param("charset"))


def parse_message(raw: bytes) -> ParsedMessage:
    """Read the invitation in a message; never raises (problems become a skip_reason)."""
    try:
        return _parse_message(raw)
    except Exception:  # noqa: BLE001 - bad input must never crash the daemon
        return ParsedMessage(raw=raw, skip_reason="unparsable message", **_identity_if_readable(raw))


class _Identity(TypedDict, total=False):
    """The header fields that name a message in the log line."""

    message_id: str
    subject: str
    from_address: str
    received: str


def _identity_if_readable(raw: bytes) -> _Identity:
    """The top header block's identity for the log line, when even that can be read."""
    try:
        return _top_identity(raw)
    except Exception:  # noqa: BLE001 - the message goes on unnamed
        return {}


def _parse_message(raw: bytes) -> ParsedMessage:
    if not may_contain_calendar(raw):
        return ParsedMessage(raw=raw, skip_reason="no calendar", **_top_identity(raw))
    scanned = scan_message(raw)
    root = scanned.root
    identity = _identity(root.headers)
    reason = _skip_reason(root) or ("too many parts" if scanned.truncated else "")
    if reason:
        return ParsedMessage(raw=raw, skip_reason=reason, **identity)
    leaves = calendar_leaves(raw, root)
    if not leaves:
        return ParsedMessage(raw=raw, skip_reason="no calendar", **identity)
    parts = tuple(_calendar_part(leaf) for leaf in leaves)
    try:
        texts = [read_calendar(raw, leaf)[0] for leaf in leaves]
        # Google and Thunderbird send the same object twice: read each distinct text once.
        read = {text: parse_calendar(text, keep_lines=text == texts[0]) for text in dict.fromkeys(texts)}
        objects = [read[text] for text in texts]
    except (CalendarError, BodyDecodeError) as exc:
        reason = "calendar too large" if str(exc) == TOO_LARGE else "unparsable calendar"
        return ParsedMessage(raw=raw, calendar_parts=parts, skip_reason=reason, **identity)
    calendar = objects[0]
    reason = _calendar_reason(objects)
    return ParsedMessage(
        raw=raw,
        calendar=calendar,
        calendar_parts=parts,
        skip_reason=reason,
        scanned=scanned,
        **identity,
    )


def _skip_reason(root: MimePart) -> str:
    for part in root.walk():
        if part.content_type in SKIP_TYPES:
            return SKIP_TYPES[part.content_type]
    return ""


def _calendar_reason(objects: list[CalendarObject]) -> str:
    first = objects[0]
    if not any(event.uid for event in first.events):
        return "no event"
    for other in objects[1:]:
        if (other.method, _identities(other)) != (first.method, _identities(first)):
            return "calendar copies differ"
    return ""


def _identities(calendar: CalendarObject) -> tuple[tuple[str, str | None], ...]:
    """What makes two copies the same invitation: the (UID, RECURRENCE-ID) of each VEVENT.

    Copies that agree on these but differ elsewhere (a sender's slip) are each rewritten on
    their own, so neither loses what it said.
    """
    return tuple((event.uid, event.recurrence_id) for event in calendar.events)


def _calendar_part(part: MimePart) -> CalendarPart:
    return CalendarPart(
        path=part.path, content_type=part.content_type, header_method=part.param("method")
    )


def _identity(headers: Message) -> _Identity:
    return {
        "message_id": str(headers.get("message-id", "")).strip(),
        "subject": decode_words(str(headers.get("subject", ""))).strip(),
        "from_address": _from_address(headers),
        "received": str(headers.get("received", "")),
    }


def _top_identity(raw: bytes) -> _Identity:
    """Message-ID, Subject and From read from the top header block alone (the cheap path)."""
    start = len(BOM) if raw.startswith(BOM) else 0
    header_end, _body = split_header(raw, start, len(raw))
    return _identity(parse_headers(raw[start:header_end], "text/plain"))


# The From field in the shape nearly every client writes: a display name of plain words (or
# one quoted string without escapes) and the address in angle brackets, or the address alone.
# For it getaddresses gives the address as written, at ten times the cost; anything else
# (comments, groups, several addresses, escapes) still goes to getaddresses. No quantifier
# nests in another, so the match stays linear in the field's length.
_PLAIN_FROM = re.compile(
    rf'(?:[A-Za-z0-9!#$%&\'*+/=?^_`{{|}}~. \t-]*|[ \t]*"[^"\\\r\n]*"[ \t]*)'
    rf"<({PLAIN_ADDRESS})>[ \t]*"
    rf"|[ \t]*({PLAIN_ADDRESS})[ \t]*"
)


def _from_address(headers: Message) -> str:
    value = decode_words(str(headers.get("from", "")))
    plain = _PLAIN_FROM.fullmatch(value)
    if plain is not None:
        return (plain.group(1) or plain.group(2)).lower()
    addresses = [address for _name, address in getaddresses([value]) if "@" in address]
    return addresses[0].lower() if addresses else ""
