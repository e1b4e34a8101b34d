"""Writing the conference link into an invitation by editing lines and splicing bytes.

Nothing is re-serialised: calendar objects are edited line by line and the message is rebuilt
from its original bytes with only the changed parts' bodies (and a few of their headers) replaced.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from mailhook.core import blocks
from mailhook.core.contentline import (
    ContentLine,
    content_lines,
    escape_text,
    unescape_text,
)
from mailhook.core.encoding import Encoded, edit_header, encode_payload
from mailhook.core.mime import (
    BodyDecodeError,
    decode_body,
    read_calendar,
    readable_leaves,
    valid_charset,
)
from mailhook.core.mimetree import MimePart, find_part, scan_message
from mailhook.core.model import CalendarObject, LinkInsertion, ParsedMessage
from mailhook.errors import InvitationError

FOLD_OCTETS = 75
_PARAM = re.compile(r';([^=;:"]+)=("[^"]*"|[^;:"]*)')
# HTML renditions of DESCRIPTION: Outlook's and Zimbra's X-ALT-DESC, RFC 9073's STYLED-DESCRIPTION.
_HTML_DESCRIPTIONS = frozenset({"X-ALT-DESC", "STYLED-DESCRIPTION"})
_EDITED = frozenset({"CONFERENCE", "LOCATION", "DESCRIPTION", *_HTML_DESCRIPTIONS})  # the rest stay
_BARE_CR = re.compile(r"\r(?!\n)")
_DATA_HTML = re.compile(r"data:text/html(?P<meta>[^,]*),(?P<data>.*)", re.IGNORECASE | re.DOTALL)

# --- calendar text ----------------------------------------------------------------------------


def fold_line(logical: str) -> list[str]:
    """Fold one content line at 75 octets without splitting a UTF-8 sequence."""
    data = logical.encode("utf-8", "surrogatepass")
    pieces: list[bytes] = []
    start, limit = 0, FOLD_OCTETS
    while len(data) - start > limit:
        cut = start + limit
        while data[cut] & 0xC0 == 0x80:  # a continuation byte: cut before its sequence
            cut -= 1
        pieces.append(data[start:cut])
        start, limit = cut, FOLD_OCTETS - 1  # a continuation line starts with a space
    pieces.append(data[start:])
    lines = [piece.decode("utf-8", "surrogatepass") for piece in pieces]
    return lines[:1] + [" " + line for line in lines[1:]]


def _params(params: str) -> dict[str, str]:
    return {key.strip().upper(): value.strip('"') for key, value in _PARAM.findall(params)}


def _is_html_text(params: str) -> bool:
    found = _params(params)
    return found.get("FMTTYPE", "").lower() == "text/html" and found.get("VALUE", "TEXT") == "TEXT"


def _altrep_with_block(params: str, insertion: LinkInsertion) -> str:
    """Parameters whose ALTREP data:text/html description (Thunderbird's) carries the block.

    Any other ALTREP (cid:, http:) or an undecodable one is left as it is.
    """
    for match in _PARAM.finditer(params):
        if match.group(1).strip().upper() != "ALTREP":
            continue
        uri = _DATA_HTML.fullmatch(match.group(2).strip('"'))
        if uri is None:
            return params
        new_uri = _data_uri_with_block(uri, insertion)
        if new_uri is None:
            return params
        return params[: match.start(2)] + f'"{new_uri}"' + params[match.end(2) :]
    return params


def _data_uri_with_block(uri: re.Match[str], insertion: LinkInsertion) -> str | None:
    meta = uri.group("meta")
    is_base64 = bool(re.search(r";\s*base64\s*$", meta, re.IGNORECASE))
    charset_match = re.search(r"charset=([^;]+)", meta, re.IGNORECASE)
    codec = valid_charset(charset_match.group(1)) if charset_match else "utf-8"
    if codec is None:
        return None
    try:
        data = unquote_to_bytes(uri.group("data"))
        markup = (base64.b64decode(data, validate=True) if is_base64 else data).decode(codec)
    except (binascii.Error, ValueError):
        return None
    new = blocks.insert_html_block(markup, insertion.url, insertion.language)
    if new == markup:
        return None
    payload = new.encode(codec, "xmlcharrefreplace")
    encoded = base64.b64encode(payload).decode("ascii") if is_base64 else quote(payload, "!*'()")
    return f"data:text/html{meta},{encoded}"


def conference_line(url: str) -> str:
    """The RFC 7986 CONFERENCE property for the link."""
    return f"CONFERENCE;VALUE=URI;FEATURE=AUDIO,VIDEO;LABEL=TrueConf:{url}"


def _keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    words = sorted({word for word in keywords if word}, key=len, reverse=True)
    if not words:
        return None
    return re.compile("@?(?:" + "|".join(re.escape(word) for word in words) + ")", re.IGNORECASE)


@dataclass
class _EventEditor:
    """Edits the properties that sit directly in one VEVENT (never inside its VALARMs), line by
    line into ``out`` from ``start``; ``came`` keeps its lines as they came (an unterminated
    event is written so), so that no event is held as content lines whole."""

    insertion: LinkInsertion
    out: list[str]
    start: int
    came: list[str] = field(default_factory=list)
    depth: int = 0
    insert_at: int | None = None
    seen_location: bool = False
    seen_description: bool = False

    def feed(self, line: ContentLine) -> None:
        out, name, first = self.out, line.name, not self.came
        self.came.extend(line.physical)
        opens, closes = name == "BEGIN" and not first, name == "END"
        self.depth += opens - closes
        if self.insert_at is None and ((opens and self.depth == 1) or (closes and self.depth < 0)):
            self.insert_at = len(out)  # the additions go before a VALARM, else before END
        if self.depth == 0 and not first and name in _EDITED:
            out.extend(self.property(line, name, line.params, line.value))
        else:
            out.extend(line.physical)

    def finish(self) -> None:
        at = len(self.out) if self.insert_at is None else self.insert_at
        self.out[at:at] = self.additions()

    def property(self, line: ContentLine, name: str, params: str, value: str) -> list[str]:
        url = self.insertion.url
        if name == "CONFERENCE":
            label = _params(params).get("LABEL", "")
            return (
                [] if label.lower() == "trueconf" or value.strip() == url else list(line.physical)
            )
        new_params = params
        if name == "LOCATION" and not self.seen_location:
            self.seen_location = True
            new = self.location(unescape_text(value))
        elif name == "DESCRIPTION" and not self.seen_description:
            self.seen_description = True
            new = blocks.insert_plain_block(unescape_text(value), url, self.insertion.language)
            new_params = _altrep_with_block(params, self.insertion)
        elif name in _HTML_DESCRIPTIONS and _is_html_text(params):
            new = blocks.insert_html_block(unescape_text(value), url, self.insertion.language)
        else:
            return list(line.physical)
        if new is None:
            new = unescape_text(value)
        if new == unescape_text(value) and new_params == params:
            return list(line.physical)
        return fold_line(f"{name}{new_params}:{escape_text(new)}")

    def location(self, current: str) -> str | None:
        url = self.insertion.url
        if url in current:
            return None
        if not current.strip():
            return url
        pattern = _keyword_pattern(self.insertion.keywords)
        return pattern.sub(lambda _m: url, current) if pattern else None

    def additions(self) -> list[str]:
        url = self.insertion.url
        added: list[str] = []
        if not self.seen_location:
            added += fold_line(f"LOCATION:{escape_text(url)}")
        if not self.seen_description:
            block = blocks.plain_block(url, self.insertion.language)
            added += fold_line(f"DESCRIPTION:{escape_text(block)}")
        return added + fold_line(conference_line(url))


def rewrite_calendar_text(
    text: str, insertion: LinkInsertion, lines: Sequence[ContentLine] = ()
) -> str:
    """Write the conference link into every VEVENT; every other line stays as it was.

    ``lines``: ``unfold(text)`` when the caller has it already. The object is written with
    CRLF line ends and without blank lines.
    """
    if not blocks.is_safe_url(insertion.url):
        raise InvitationError("the conference URL is not a safe http(s) URL")
    out: list[str] = []
    event: _EventEditor | None = None
    depth = 0
    cleaned = _without_bare_cr(text)
    for line in lines if lines and cleaned is text else content_lines(cleaned):
        if not line.logical.strip():
            continue  # blank lines are no content lines (a part's trailing newline, mostly)
        name = line.name
        if event is None and name == "BEGIN" and line.value.strip().upper() == "VEVENT":
            event, depth = _EventEditor(insertion, out, len(out)), 0
        if event is None:
            out.extend(line.physical)
            continue
        event.feed(line)
        depth += (name == "BEGIN") - (name == "END")
        if depth == 0:
            event.finish()
            event = None
    if event is not None:
        out[event.start :] = event.came  # unterminated: as it came
    return "\r\n".join(out) + "\r\n"


def _without_bare_cr(text: str) -> str:
    """The object with each CR that ends no line written as the TEXT escape for a line break.

    Content lines end in CRLF (RFC 5545 3.1), so a lone CR inside a line is part of the value
    (``SUMMARY:Q3<CR>X-INJECTED:1`` is one property); writing it raw would let a reader that
    takes CR as a line end see a property that was never there. An object whose lines all
    end in a bare CR (old Mac software) has no other line end, and keeps them as line ends.
    """
    if "\n" not in text or text.count("\r") == text.count("\r\n"):
        return text
    return _BARE_CR.sub(r"\\n", text)


# --- message bytes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Edit:
    """A replacement for part of the original bytes."""

    start: int
    end: int
    data: bytes


def rewrite_message(parsed: ParsedMessage, insertion: LinkInsertion) -> bytes:
    """Splice the link into every calendar copy and the readable bodies of the original bytes."""
    if parsed.skip_reason or parsed.calendar is None:
        raise InvitationError(
            f"not an invitation to rewrite: {parsed.skip_reason or 'no calendar'}"
        )
    if not blocks.is_safe_url(insertion.url):
        raise InvitationError("the conference URL is not a safe http(s) URL")
    try:
        return _rewrite_message(parsed, insertion)
    except InvitationError:
        raise
    except Exception as exc:
        raise InvitationError(f"rewrite failed: {exc}") from exc


def _rewrite_message(parsed: ParsedMessage, insertion: LinkInsertion) -> bytes:
    assert parsed.calendar is not None
    raw = parsed.raw
    root = _scanned_root(parsed)
    rewritten: dict[str, str] = {}
    changed: dict[tuple[int, ...], tuple[MimePart, Encoded]] = {}
    for calendar_part in parsed.calendar_parts:
        part = find_part(root, calendar_part.path)
        if part is None or part.children:
            raise InvitationError("calendar part not found where parse_message saw it")
        text, codec = _rewritten_copy(raw, part, insertion, rewritten, parsed.calendar)
        changed[part.path] = (part, _encode_calendar(raw, part, text, codec))
    for part in readable_leaves(raw, root):
        if part.path not in changed:
            encoded = _encode_readable(raw, part, insertion)
            if encoded is not None:
                changed[part.path] = (part, encoded)
    return _splice(raw, _edits(raw, root, changed))


def _scanned_root(parsed: ParsedMessage) -> MimePart:
    """The MIME tree of the message: parse_message's own scan when it is of these bytes."""
    scanned = parsed.scanned
    if scanned is None or scanned.raw is not parsed.raw:
        scanned = scan_message(parsed.raw)
    return scanned.root


def _rewritten_copy(
    raw: bytes, part: MimePart, insertion: LinkInsertion, done: dict[str, str], read: CalendarObject
) -> tuple[str, str]:
    """One calendar copy with the link, and the codec its text was read with; equal copies
    give equal text (``done`` caches by text). A copy of the text the reader read (``read``)
    is not split into lines a second time."""
    try:
        text, codec = read_calendar(raw, part)
    except ValueError as exc:
        raise InvitationError("calendar part cannot be decoded") from exc
    if text not in done:
        lines = read.lines if text == read.text else ()
        done[text] = rewrite_calendar_text(text, insertion, lines)
    return done[text], codec


def _edits(
    raw: bytes, root: MimePart, changed: dict[tuple[int, ...], tuple[MimePart, Encoded]]
) -> list[_Edit]:
    edits: list[_Edit] = []
    ancestors = {path[:depth] for path in changed for depth in range(len(path))}
    for part in root.walk():
        if part.path in changed:
            encoded = changed[part.path][1]
            header = edit_header(raw, part, encoded)
            edits.append(_Edit(part.header_start, part.header_end, header))
            edits.append(_Edit(part.body_start, part.body_end, encoded.body))
        elif part.path in ancestors and "content-length" in part.headers:
            header = edit_header(raw, part, Encoded(b""))
            edits.append(_Edit(part.header_start, part.header_end, header))
    return edits


def _splice(raw: bytes, edits: list[_Edit]) -> bytes:
    pieces: list[bytes] = []
    position = 0
    for edit in sorted(edits, key=lambda item: (item.start, item.end)):
        if edit.start < position:
            raise InvitationError("overlapping edits")
        pieces += [raw[position : edit.start], edit.data]
        position = edit.end
    pieces.append(raw[position:])
    return b"".join(pieces)


# --- bodies -----------------------------------------------------------------------------------


def _encode_calendar(raw: bytes, part: MimePart, text: str, codec: str) -> Encoded:
    """The calendar text as the part's new body; ``codec`` is the one it was read with."""
    declared = valid_charset(part.param("charset"))
    charset = None
    if declared and codec != declared:
        codec, charset = "utf-8", "utf-8"  # the label was wrong; make it true
    try:
        payload = text.encode(codec)
    except UnicodeEncodeError:
        payload, charset = text.encode("utf-8"), "utf-8"
    return encode_payload(raw, part, payload, charset)


# A text body larger than this keeps no block (the calendar still gets the link): decoding,
# scanning and encoding it are single steps that hold the interpreter for as long as they take.
MAX_READABLE_BYTES = 8 * 1024 * 1024


def _encode_readable(raw: bytes, part: MimePart, insertion: LinkInsertion) -> Encoded | None:
    if part.body_end - part.body_start > MAX_READABLE_BYTES:
        return None
    label = part.param("charset")
    codec = valid_charset(label) if label else "utf-8"
    if codec is None:
        return None  # an unknown charset: leave the body alone rather than guess
    try:
        data = decode_body(raw, part)
    except BodyDecodeError:
        return None
    text = data.decode(codec, "surrogateescape")
    is_html = part.content_type == "text/html"
    if is_html:
        new = blocks.insert_html_block(text, insertion.url, insertion.language)
        new = _charrefs_in_block(new, codec)
    else:
        new = blocks.insert_plain_block(text, insertion.url, insertion.language)
    if new == text:
        return None
    # Without a label the body is us-ascii by default: non-ASCII needs a declared charset.
    charset = None if label or new.isascii() else "utf-8"
    try:
        return encode_payload(raw, part, new.encode(codec, "surrogateescape"), charset)
    except UnicodeEncodeError:
        return encode_payload(raw, part, new.encode("utf-8", "surrogateescape"), "utf-8")


def _charrefs_in_block(markup: str, codec: str) -> str:
    """Write block characters the body's charset lacks as HTML character references."""
    start = markup.find(blocks.HTML_START)
    end = markup.find(blocks.HTML_END, start)
    if start < 0 or end < 0:
        return markup
    block = markup[start:end].encode(codec, "xmlcharrefreplace").decode(codec)
    return markup[:start] + block + markup[end:]
