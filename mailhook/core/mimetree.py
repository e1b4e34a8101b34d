"""The MIME tree of a message as byte positions: where every part's headers and body sit in
the original bytes, so that the rewrite can splice new bodies in without re-serialising
anything else. Bounded on hostile input: depth, part count and header work are capped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import unquote

MAX_DEPTH = 50
MAX_PARTS = 1000
# RFC 5322's limit for a header line. The email package finds encoded words with a pattern that
# looks for the word's end from every "=?" on a line, in time that grows with the square of the
# line: a field with a longer line is used as it stands, undecoded.
MAX_HEADER_LINE = 998
# The email package reads a field's parameters in time that grows with the field's length times
# its number of ";" (it copies the rest of the field at each one, and counts quotes from the
# start): a field over this budget is read as having no parameters. Real fields use a few
# thousandths of it.
MAX_PARAMETER_WORK = 1_000_000

_HEADER_END = re.compile(rb"\n\r?\n")
# What may follow "--boundary" on a delimiter line: "--" when it is the closing one, then
# transport padding up to the line end.
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?=\r?\n|\Z)")
_LF = ord("\n")
_LINES = re.compile(r"[^\n]*\n|[^\n]+")  # lines, each with its line end
_FIELD_START = re.compile(r"[\041-\071\073-\176]+:")  # a field name, as the email parser sees it
BOM = b"\xef\xbb\xbf"


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
            params = _plain_params(self.headers, "content-type")
            if params is None:  # not in the plain shape: the email package reads it
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
            name = _plain_filename(self.headers)
            if name is None:  # a field not in the plain shape: the email package reads it
                cheap = _cheap_params(self.headers, "content-disposition", "content-type")
                name = (self.headers.get_filename() if cheap else None) or self.param("name") or ""
            self._memo["filename"] = decode_words(str(name)).strip()
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



class _Scanner:
    """Builds the MimePart tree; counts parts so hostile input stays bounded."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.parts = 0
        self.truncated = False

    def scan(self) -> ScannedMessage:
        start = len(BOM) if self.raw.startswith(BOM) else 0
        root = self.part((), start, len(self.raw), 0, "text/plain")
        return ScannedMessage(root, self.truncated, self.raw)

    def part(
        self, path: tuple[int, ...], start: int, end: int, depth: int, default: str
    ) -> MimePart:
        self.parts += 1
        header_end, body_start = split_header(self.raw, start, end)
        headers = parse_headers(self.raw[start:header_end], default)
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


def split_header(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """Return (header_end, body_start) for a part spanning raw[start:end]."""
    if raw.startswith(b"\r\n", start, end):
        return start, start + 2
    if raw.startswith(b"\n", start, end):
        return start, start + 1
    match = _HEADER_END.search(raw, start, end)
    if match is None:
        return end, end
    return match.start() + 1, match.end()


def parse_headers(block: bytes, default: str) -> Message:
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


# A parameter list in the shape nearly every producer writes: "type/subtype", then
# "; name=value" pairs whose names have no "*" (no RFC 2231) and whose values are a token or a
# quoted string without backslashes, all printable ASCII and folding white space. For such a
# field the email package's reading (split at ";" outside quotes, names lower-cased, values
# stripped and unquoted) is what these patterns give, at a fraction of its cost; any other
# shape is still read by the email package.
_WS = "[ \t\r\n]*"
_MEDIA_TYPE = r'[^\x00-\x20\x7f;"=\\]+'
_PARAM_NAME = r'[^\x00-\x20\x7f;"=\\*]+'
_PARAM_VALUE = r'"[^\x00-\x08\x0a-\x1f\x7f"\\]*"|[^\x00-\x20\x7f;"\\<>]*'
_PLAIN_PARAM = re.compile(f";{_WS}({_PARAM_NAME}){_WS}={_WS}({_PARAM_VALUE}){_WS}")
_PLAIN_PARAMS = re.compile(f"{_WS}({_MEDIA_TYPE}){_WS}((?:{_PLAIN_PARAM.pattern})*)")


def _plain_params(headers: Message, name: str) -> list[tuple[str, str]] | None:
    """A field's parameters as ``Message.get_params`` gives them, when the field is plain.

    [] when the field is absent, None when it is not in the plain shape.
    """
    value = headers.get(name)
    if value is None:
        return []
    text = str(value)
    if text.count(";") * len(text) > MAX_PARAMETER_WORK:
        return None  # the email package's reading, and its budget, decide (no parameters)
    match = _PLAIN_PARAMS.fullmatch(text) if text.isascii() else None
    if match is None:
        return None
    params = [(match.group(1), "")]
    for key, found in _PLAIN_PARAM.findall(match.group(2)):
        params.append((key.lower(), found[1:-1] if found[:1] == '"' else found))
    return params


def _first_param(params: list[tuple[str, str]], name: str) -> str | None:
    """The first parameter of that name, as ``Message.get_param`` finds it."""
    for key, value in params:
        if key.lower() == name:
            return value
    return None


def _plain_filename(headers: Message) -> str | None:
    """The file name ``MimePart.filename`` reads through the email package, for plain fields.

    None when Content-Disposition or Content-Type is not in the plain shape.
    """
    disposition = _plain_params(headers, "content-disposition")
    content_type = _plain_params(headers, "content-type")
    if disposition is None or content_type is None:
        return None
    found = _first_param(disposition, "filename")
    if found is None:
        found = _first_param(content_type, "name")
    name = unquote(found).strip() if found is not None else ""  # as get_filename
    return name or _first_param(content_type, "name") or ""


def _boundary_bytes(headers: Message) -> bytes:
    params = _plain_params(headers, "content-type")
    if params is not None:
        found = _first_param(params, "boundary")
        boundary = unquote(found).rstrip() if found is not None else None  # as get_boundary
    else:
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


def decode_words(value: str) -> str:
    if "=?" not in value or max(map(len, value.splitlines())) > MAX_HEADER_LINE:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, ValueError, UnicodeError):
        return value



def find_part(root: MimePart, path: tuple[int, ...]) -> MimePart | None:
    """The part at a child-index path, or None."""
    part = root
    for index in path:
        if index >= len(part.children):
            return None
        part = part.children[index]
    return part
