"""Byte-level MIME scanning and invitation extraction.

The scanner records where every part's headers and body sit in the original bytes, so the
rewrite can splice new bodies in without re-serialising anything else.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from mailhook.core.calendar import TOO_LARGE, CalendarError, parse_calendar
from mailhook.core.model import CalendarObject, CalendarPart, ParsedMessage

MAX_DEPTH = 50
MAX_PARTS = 1000
MAX_CALENDAR_BYTES = 16 * 1024 * 1024
# RFC 5322's limit for a header line. The email package finds encoded words with a pattern that
# looks for the word's end from every "=?" on a line, in time that grows with the square of the
# line: a field with a longer line is used as it stands, undecoded.
MAX_HEADER_LINE = 998
# The email package reads a field's parameters in time that grows with the field's length times
# its number of ";" (it copies the rest of the field at each one, and counts quotes from the
# start): a field over this budget is read as having no parameters. Real fields use a few
# thousandths of it.
MAX_PARAMETER_WORK = 1_000_000

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
# An encoded file name (RFC 2047 or RFC 2231) can hide ".ics" from the byte search, so an
# octet-stream part with an encoded name also needs the full parse.
_HEADER_END = re.compile(rb"\n\r?\n")
# What may follow "--boundary" on a delimiter line: "--" when it is the closing one, then
# transport padding up to the line end.
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?=\r?\n|\Z)")
_LF = ord("\n")
_LINES = re.compile(r"[^\n]*\n|[^\n]+")  # lines, each with its line end
_FIELD_START = re.compile(r"[\041-\071\073-\176]+:")  # a field name, as the email parser sees it
_BOM = b"\xef\xbb\xbf"
# Microsoft's labels name the older standard but mean its own superset; decoding with the
# standard codec would fail on (and so leave undecoded) characters the superset adds.
_SUPERSETS = {"ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "gb2312": "gbk"}


class BodyDecodeError(ValueError):
    """A part body could not be decoded with its Content-Transfer-Encoding."""


@dataclass(frozen=True, eq=False, slots=True)
class MimePart:
    """One node of the MIME tree, with byte spans into the original message."""

    path: tuple[int, ...]
    header_start: int
    header_end: int  # end of the last header line, before the blank separator line
    body_start: int
    body_end: int
    headers: Message = field(repr=False)
    content_type: str
    cte: str  # lower-case Content-Transfer-Encoding, "" when absent
    eol: bytes  # b"\r\n" or b"\n": the part's own line-ending style
    children: tuple[MimePart, ...] = ()
    # Header values already read, by key: the email package parses a header again for each
    # lookup, and the parse and the rewrite ask for the same few values several times.
    _memo: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)

    @property
    def is_multipart(self) -> bool:
        """Whether the part was split into children."""
        return bool(self.children)

    def param(self, name: str) -> str | None:
        """A Content-Type parameter, unquoted, or None (the first one of a repeated name)."""
        memo = self._memo
        if _PARAMS_READ not in memo:
            cheap = _cheap_params(self.headers, "content-type")
            params = (self.headers.get_params(header="content-type") if cheap else None) or []
            for key, value in params:
                memo.setdefault("param:" + key.lower(), _param_text(value))
            memo[_PARAMS_READ] = None
        return memo.get("param:" + name.lower())

    @property
    def disposition(self) -> str:
        """The lower-case Content-Disposition type, "" when absent."""
        value = self.headers.get("content-disposition", "")
        return str(value).split(";", 1)[0].strip().lower()

    @property
    def filename(self) -> str:
        """The decoded file name from Content-Disposition filename or Content-Type name."""
        if "filename" not in self._memo:
            cheap = _cheap_params(self.headers, "content-disposition", "content-type")
            name = (self.headers.get_filename() if cheap else None) or self.param("name") or ""
            self._memo["filename"] = _decode_words(str(name)).strip()
        return self._memo["filename"] or ""

    def walk(self) -> Iterator[MimePart]:
        """This part and every descendant, in document order."""
        yield self
        for child in self.children:
            yield from child.walk()


_PARAMS_READ = "params read"  # the memo key telling that the Content-Type params are in it


def _param_text(value: str | tuple[str | None, str | None, str]) -> str:
    if isinstance(value, str):
        return value
    return str(value[2])  # an RFC 2231 (charset, language, value) triple


@dataclass(frozen=True, slots=True)
class ScannedMessage:
    """The root of a scanned message and whether scanning had to stop early."""

    root: MimePart
    truncated: bool = False
    raw: bytes = field(default=b"", compare=False, repr=False)  # the bytes that were scanned


def may_contain_calendar(raw: bytes) -> bool:
    """Cheaply tell whether a message might carry a calendar object (no MIME parse).

    Plain substring tests on lower-cased windows of the message: a case-insensitive regex
    alternation is many times slower on multi-megabyte attachments, and lower-casing the whole
    message at once would copy it; every outgoing message pays this.
    """
    octet_stream = encoded_name = False
    for start in range(0, max(len(raw), 1), _WINDOW):
        window = raw[start:start + _WINDOW + _OVERLAP].lower()
        if any(marker in window for marker in _FAST_PATH_MARKERS):
            return True
        octet_stream = octet_stream or b"application/octet-stream" in window
        encoded_name = encoded_name or b"=?" in window or b"*=" in window
    return octet_stream and encoded_name


_WINDOW = 1024 * 1024
_OVERLAP = 32  # longer than any marker, so none is missed where two windows meet


class _Scanner:
    """Builds the MimePart tree; counts parts so hostile input stays bounded."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.parts = 0
        self.truncated = False

    def scan(self) -> ScannedMessage:
        start = len(_BOM) if self.raw.startswith(_BOM) else 0
        root = self.part((), start, len(self.raw), 0, "text/plain")
        return ScannedMessage(root, self.truncated, self.raw)

    def part(
        self, path: tuple[int, ...], start: int, end: int, depth: int, default: str
    ) -> MimePart:
        self.parts += 1
        header_end, body_start = _split_header(self.raw, start, end)
        headers = _parse_headers(self.raw[start:header_end], default)
        content_type = headers.get_content_type()
        children: tuple[MimePart, ...] = ()
        if content_type.startswith("multipart/") and depth < MAX_DEPTH:
            children = self.children(path, headers, body_start, end, depth, content_type)
        elif content_type.startswith("multipart/"):
            self.truncated = True
        return MimePart(
            path=path,
            header_start=start,
            header_end=header_end,
            body_start=body_start,
            body_end=end,
            headers=headers,
            content_type=content_type,
            cte=str(headers.get("content-transfer-encoding", "")).strip().lower(),
            eol=_eol_of(self.raw, start, end),
            children=children,
        )

    def children(
        self, path: tuple[int, ...], headers: Message, start: int, end: int, depth: int, ctype: str
    ) -> tuple[MimePart, ...]:
        boundary = _boundary_bytes(headers)
        if not boundary:
            return ()
        default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        parts = []
        for index, (child_start, child_end) in enumerate(
            _child_spans(self.raw, boundary, start, end)
        ):
            if self.parts >= MAX_PARTS:
                self.truncated = True
                break
            parts.append(self.part((*path, index), child_start, child_end, depth + 1, default))
        return tuple(parts)


def scan_message(raw: bytes) -> ScannedMessage:
    """Scan raw message bytes into a tree of parts; never raises on odd structure."""
    return _Scanner(raw).scan()


def _split_header(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """Return (header_end, body_start) for a part spanning raw[start:end]."""
    if raw.startswith(b"\r\n", start, end):
        return start, start + 2
    if raw.startswith(b"\n", start, end):
        return start, start + 1
    match = _HEADER_END.search(raw, start, end)
    if match is None:
        return end, end
    return match.start() + 1, match.end()


def _parse_headers(block: bytes, default: str) -> Message:
    message = _plain_headers(block) or BytesHeaderParser(policy=compat32).parsebytes(block)
    message.set_default_type(default)
    return message


def _plain_headers(block: bytes) -> Message | None:
    """Read a header block of well-formed fields as the email package's parser does, or None.

    The parser's generic machinery costs most of a part's scan; a block it would read without
    a defect (every line a field or a continuation of one, CRLF or LF line ends) is read
    directly into the same Message. Anything else (bare CRs, a Unix From line, a line that is
    neither a field nor a continuation) is left to the parser.
    """
    text = block.decode("ascii", "surrogateescape")
    if text.count("\r") != text.count("\r\n"):
        return None
    message = Message(policy=compat32)
    field_lines: list[str] = []
    for line in _LINES.findall(text):
        if line[0] in " \t" and field_lines:
            field_lines.append(line)
            continue
        if not _FIELD_START.match(line):
            return None
        if field_lines:
            message.set_raw(*compat32.header_source_parse(field_lines))
        field_lines = [line]
    if field_lines:
        message.set_raw(*compat32.header_source_parse(field_lines))
    message.set_payload("")  # what the parser leaves after a block of headers alone
    return message


def _eol_of(raw: bytes, start: int, end: int) -> bytes:
    newline = raw.find(b"\n", start, end)
    if newline > start and raw[newline - 1 : newline] == b"\r":
        return b"\r\n"
    return b"\n" if newline >= 0 else b"\r\n"


def _cheap_params(headers: Message, *names: str) -> bool:
    """Whether the email package reads these fields' parameters within MAX_PARAMETER_WORK."""
    for name in names:
        value = str(headers.get(name, ""))
        if value.count(";") * len(value) > MAX_PARAMETER_WORK:
            return False
    return True


def _boundary_bytes(headers: Message) -> bytes:
    boundary = headers.get_boundary() if _cheap_params(headers, "content-type") else None
    if not boundary:
        return b""
    try:
        return boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return b""


def _child_spans(raw: bytes, boundary: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Split a multipart body into child spans; the line break before a delimiter belongs to it.

    A delimiter line is "--" and the boundary at the start of a line, then "--" when it closes
    the multipart, then only spaces or TABs up to a CRLF, an LF or the end of the body. The
    last part runs to the end of the body when the closing delimiter is missing.
    """
    delimiter = b"--" + boundary
    spans: list[tuple[int, int]] = []
    open_start: int | None = None
    searched = start  # the delimiter lines found so far end before this position
    at = raw.find(delimiter, start, end)
    while at >= 0:
        tail = _DELIMITER_TAIL.match(raw, at + len(delimiter), end)
        if tail is None or not (at == 0 or raw[at - 1] == _LF):
            at = raw.find(delimiter, at + 1, end)
            continue
        if open_start is not None:
            spans.append((open_start, _line_break_before(raw, at, searched)))
        if tail.group(1):
            return spans
        open_start = _after_line_end(raw, tail.end(), end)
        searched = tail.end()
        at = raw.find(delimiter, searched, end)
    if open_start is not None:
        spans.append((open_start, end))  # no closing delimiter: the last part runs to the end
    return spans


def _line_break_before(raw: bytes, at: int, searched: int) -> int:
    """Where the CRLF or LF ending the line before position ``at`` starts (``at`` if none).

    A line break at or after ``searched`` counts: none before it, which belongs to an
    earlier delimiter line or lies before the multipart body.
    """
    if at - 2 >= searched and raw.startswith(b"\r\n", at - 2):
        return at - 2
    if at - 1 >= searched and raw[at - 1] == _LF:
        return at - 1
    return at


def _after_line_end(raw: bytes, pos: int, end: int) -> int:
    if raw.startswith(b"\r\n", pos, end):
        return pos + 2
    if raw.startswith(b"\n", pos, end):
        return pos + 1
    return pos


def _decode_words(value: str) -> str:
    if "=?" not in value or max(map(len, value.splitlines())) > MAX_HEADER_LINE:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, ValueError, UnicodeError):
        return value


# --- bodies -----------------------------------------------------------------------------------


def decode_body(raw: bytes, part: MimePart) -> bytes:
    """The part's body with its Content-Transfer-Encoding removed."""
    body = raw[part.body_start : part.body_end]
    if part.cte in IDENTITY_CTES:
        return body
    if part.cte == "base64":
        try:
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body), validate=True)
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
    data = data.removeprefix(_BOM)
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
    return data.lstrip(_BOM + b" \t\r\n")[:15].upper() == b"BEGIN:VCALENDAR"


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


def find_part(root: MimePart, path: tuple[int, ...]) -> MimePart | None:
    """The part at a child-index path, or None."""
    part = root
    for index in path:
        if index >= len(part.children):
            return None
        part = part.children[index]
    return part


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


def _identity_if_readable(raw: bytes) -> dict[str, str]:
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
        read = {text: parse_calendar(text) for text in dict.fromkeys(texts)}
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


def _identity(headers: Message) -> dict[str, str]:
    return {
        "message_id": str(headers.get("message-id", "")).strip(),
        "subject": _decode_words(str(headers.get("subject", ""))).strip(),
        "from_address": _from_address(headers),
        "received": str(headers.get("received", "")),
    }


def _top_identity(raw: bytes) -> dict[str, str]:
    """Message-ID, Subject and From read from the top header block alone (the cheap path)."""
    start = len(_BOM) if raw.startswith(_BOM) else 0
    header_end, _body = _split_header(raw, start, len(raw))
    return _identity(_parse_headers(raw[start:header_end], "text/plain"))


def _from_address(headers: Message) -> str:
    value = _decode_words(str(headers.get("from", "")))
    addresses = [address for _name, address in getaddresses([value]) if "@" in address]
    return addresses[0].lower() if addresses else ""
