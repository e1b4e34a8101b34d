"""iCalendar content lines (RFC 5545 3.1): unfolding, splitting a line into name, parameters
and value, and TEXT escaping. Read leniently (CRLF, LF or CR line ends; space or TAB folding);
shared by the calendar reader and the rewrite.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

_LINE_BREAK = re.compile(r"\r\n|\n|\r")
_ESCAPED = re.compile(r"\\([\\;,nN:])")
_NEEDS_ESCAPE = re.compile(r"[\\;,\n]")


class ContentLine(NamedTuple):
    """One logical (unfolded) content line, the physical lines it came from, and its parts.

    The line is split once, here: the reader and the rewrite both walk every line of an
    object. A named tuple, not a frozen dataclass, because an object has hundreds of lines
    and a tuple is built at a fraction of the cost.
    """

    logical: str
    physical: tuple[str, ...]
    name: str  # upper-case ("" for a blank line)
    params: str  # ";PARAMS" as written, "" when none
    value: str  # as written (still TEXT-escaped)


_new_tuple = tuple.__new__


def unfold(text: str) -> list[ContentLine]:
    """Split text into logical content lines; accepts CRLF, LF, CR, space and TAB folding.

    Each line comes split into name, parameters and value (``split_content_line``).
    """
    return list(content_lines(text))


def content_lines(text: str) -> Iterator[ContentLine]:
    """``unfold``'s lines one at a time: a pass that keeps few of them never holds a large
    object's lines all at once."""
    physical = _LINE_BREAK.split(text)
    if physical and physical[-1] == "":
        physical.pop()
    group: list[str] = []
    for line in physical:
        if line[:1] in (" ", "\t") and group:
            group.append(line)
            continue
        if group:
            yield _content_line(group)
        group = [line]
    if group:
        yield _content_line(group)


def _content_line(group: list[str]) -> ContentLine:
    if len(group) == 1:
        logical = group[0]
        physical: tuple[str, ...] = (logical,)
    else:
        logical = group[0] + "".join(line[1:] for line in group[1:])
        physical = tuple(group)
    name, params, value = split_content_line(logical)
    # tuple.__new__ is what ContentLine(...) calls, minus the Python frame of its __new__.
    return _new_tuple(ContentLine, (logical, physical, name.upper(), params, value))


def split_content_line(line: str) -> tuple[str, str, str]:
    """Split "NAME;PARAMS:VALUE" into (name, ";PARAMS", value), honouring quoted parameters."""
    colon = line.find(":")
    if colon < 0:
        return line, "", ""
    if line.find('"', 0, colon) >= 0:
        return _split_quoted_line(line)  # a quoted parameter may hold the first ":" or ";"
    semicolon = line.find(";", 0, colon)
    name_end = colon if semicolon < 0 else semicolon
    return line[:name_end], line[name_end:colon], line[colon + 1 :]


def _split_quoted_line(line: str) -> tuple[str, str, str]:
    quoted = False
    name_end = -1
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char == ";" and name_end < 0:
            name_end = index
        elif char == ":":
            name_end = index if name_end < 0 else name_end
            return line[:name_end], line[name_end:index], line[index + 1 :]
    return line, "", ""


def unescape_text(value: str) -> str:
    """Undo iCalendar TEXT escaping (lenient: "\\N" and "\\:" accepted)."""
    if "\\" not in value:
        return value  # most values escape nothing

    def replace(match: re.Match[str]) -> str:
        char = match.group(1)
        return "\n" if char in "nN" else char

    return _ESCAPED.sub(replace, value)


def escape_text(value: str) -> str:
    """Escape a value as iCalendar TEXT (backslash, semicolon, comma, newline)."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return _NEEDS_ESCAPE.sub(lambda m: "\\n" if m.group(0) == "\n" else "\\" + m.group(0), value)
