"""SMTP's wire form of a message: CRLF line ends, lines of at most 998 octets, leading dots
doubled, the lone dot at the end, in the pieces DATA sends to the next hop.
"""

from __future__ import annotations

from collections.abc import Iterator

CHUNK = 1024 * 1024
SMALL_MESSAGE = 64 * 1024  # sent as one piece: copying it costs less than two more sends
MAX_LINE_OCTETS = 998  # RFC 5321 4.5.3.1.6: 1000 octets with the CRLF


def dot_stuffed(content: bytes) -> Iterator[bytes | memoryview]:
    """The DATA payload in pieces of about CHUNK bytes: the message in its wire form (see
    wire_form), leading dots doubled, CRLF-terminated, ended by the lone dot.

    Ordinary mail is already in wire form and is sent without being copied whole.
    """
    content = wire_form(content)
    view = memoryview(content)
    if content.startswith(b"."):
        yield b"."
    start = 0
    while start < len(content):
        end = min(start + CHUNK, len(content))
        dot = content.find(b"\r\n.", start, end + 2)
        if dot != -1 and dot < end:
            yield view[start:dot + 3]
            yield b"."
            start = dot + 3
            continue
        yield view[start:end]
        start = end
    if content and not content.endswith(b"\r\n"):
        yield b"\r\n"
    yield b".\r\n"


def data_pieces(trace: bytes, content: bytes) -> Iterator[bytes | memoryview]:
    """What DATA sends: the trace field, then the dot-stuffed message.

    A message up to SMALL_MESSAGE octets goes as one piece, so as one send to the socket
    rather than three (each send on loopback also costs the receiver's share); a larger one
    goes piece by piece (the trace field on its own), so it is never copied whole.
    """
    if len(content) <= SMALL_MESSAGE:
        yield trace + dot_stuff(content)
        return
    yield trace
    yield from dot_stuffed(content)


def dot_stuff(content: bytes) -> bytes:
    """The whole DATA payload at once (see dot_stuffed)."""
    return b"".join(dot_stuffed(content))


def wire_form(content: bytes) -> bytes:
    """The message as SMTP may carry it: every line end a CRLF, every line at most 998 octets.

    A bare LF or CR becomes CRLF (as Postfix's ``smtpd_forbid_bare_newline = normalize`` does),
    so a next hop that reads a bare LF as a line end sees the same lines as one that does not,
    and every line gets dot-stuffed: "\\n.\\r\\n" can no longer end the data early and smuggle
    what follows in as SMTP commands. A longer line is folded the way Postfix's SMTP client
    folds it (``smtp_line_length_limit``): CRLF and a space inserted after 998 octets.
    """
    if _has_bare_line_end(content):
        content = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if _has_long_line(content):
        content = b"\r\n".join(_folded(line) for line in content.split(b"\r\n"))
    return content


def _has_bare_line_end(content: bytes) -> bool:
    # Every CR and every LF belongs to a CRLF exactly when the three counts agree; counting
    # is much cheaper than a regular expression over a large message.
    pairs = content.count(b"\r\n")
    return content.count(b"\r") != pairs or content.count(b"\n") != pairs


def _has_long_line(content: bytes) -> bool:
    """Whether a CRLF-delimited line is longer than MAX_LINE_OCTETS; it looks at one line end
    per 1000-octet window, so ordinary mail costs about a thousand searches per megabyte."""
    start, size = 0, len(content)
    while size - start > MAX_LINE_OCTETS:
        newline = content.rfind(b"\n", start, start + MAX_LINE_OCTETS + 2)
        if newline < 0:
            return True
        start = newline + 1
    return False


def _folded(line: bytes) -> bytes:
    """A line cut into pieces of at most MAX_LINE_OCTETS octets, each continuation starting
    with a space (a folded header field stays one field)."""
    if len(line) <= MAX_LINE_OCTETS:
        return line
    step = MAX_LINE_OCTETS - 1
    pieces = [line[:MAX_LINE_OCTETS]]
    pieces += [b" " + line[at:at + step] for at in range(MAX_LINE_OCTETS, len(line), step)]
    return b"\r\n".join(pieces)
