"""Writing mailhook's own small mails (the notices) as bytes: header fields and MIME parts.

The values given here are already clean: on one line, with no control characters, bounded (see
core/notice.py). This module only encodes them, the way RFC 5322, 2045-2047 and 2046 ask:
a header field is plain ASCII folded at spaces, or RFC 2047 encoded words ("B" encoding of
UTF-8) when it holds anything else; a body is quoted-printable or base64, so every line is
ASCII, ends in CRLF and is at most 76 octets. The head is ASCII too, unless the configured
sender's address has a non-ASCII local part (written as UTF-8, RFC 6532). Writing the bytes
directly costs a tenth of what ``EmailMessage`` and its header registry cost for the same
message.
"""

from __future__ import annotations

import binascii
from email.utils import formataddr, parseaddr
from functools import lru_cache

FOLD_AT = 78  # octets per header line that RFC 5322 section 2.1.1 asks writers to keep to
_ENCODED_WORD_LIMIT = 75  # octets of one encoded word (RFC 2047 section 2)
_WORD_START, _WORD_END = "=?utf-8?b?", "?="
_MAX_WORD_BYTES = (_ENCODED_WORD_LIMIT - len(_WORD_START) - len(_WORD_END)) // 4 * 3
# Quoted-printable and base64 never write "=_": "=" starts only "=XX", a soft line break or
# base64's padding. So no body, whatever text it holds, can write this boundary.
BOUNDARY = "=_mailhook_notice_"


def field(name: str, value: str) -> str:
    """A header field ``name: value`` folded to lines of at most 78 octets, without the CRLF
    that ends it; the value is encoded when it is not plain ASCII text."""
    if value.isascii() and "=?" not in value:
        folded = _fold(name, value.split())
        if _short(folded):
            return folded
    return _fold(name, encoded_words(value, first=FOLD_AT - len(name) - 2))


def _short(folded: str) -> bool:
    """Whether every line of a folded field is at most 78 octets."""
    return all(len(line) <= FOLD_AT for line in folded.split("\r\n"))


# Notices come from one configured sender: its field is made once, not parsed for each notice.
@lru_cache(maxsize=16)
def address_field(name: str, mailbox: str) -> str:
    """A From or To field for ``mailbox`` ("addr" or "Display Name <addr>")."""
    display, address = parseaddr(mailbox)
    if not address:
        return field(name, mailbox)
    address = _ascii_address(address)
    if not display:
        return f"{name}: {address}"
    if display.isascii() and "=?" not in display:
        folded = _fold(name, formataddr((display, address)).split(" "))
        if _short(folded):
            return folded
    return _fold(name, [*encoded_words(display, first=FOLD_AT - len(name) - 2), f"<{address}>"])


def _ascii_address(address: str) -> str:
    """The address with an internationalized domain in its ASCII (IDNA) form, where it has one."""
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    try:
        return f"{local}{at}{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def encoded_words(text: str, first: int = FOLD_AT) -> list[str]:
    """``text`` as RFC 2047 encoded words, each whole characters of UTF-8; the first fits in
    ``first`` octets, the rest each on a folded line of their own.

    Readers drop the white space between adjacent encoded words, so the words read back as
    exactly ``text``.
    """
    data = text.encode("utf-8")
    words: list[str] = []
    room = _bytes_in(first)
    while data or not words:
        cut = _whole_characters(data, room)
        words.append(_WORD_START + binascii.b2a_base64(data[:cut], newline=False).decode()
                     + _WORD_END)
        data = data[cut:]
        room = _bytes_in(FOLD_AT - 1)
    return words


def _bytes_in(octets: int) -> int:
    """How many bytes of text one encoded word in ``octets`` octets of a line can hold."""
    base64_room = min(octets, _ENCODED_WORD_LIMIT) - len(_WORD_START) - len(_WORD_END)
    return max(3, min(base64_room // 4 * 3, _MAX_WORD_BYTES))


def _whole_characters(data: bytes, limit: int) -> int:
    """The longest prefix of UTF-8 ``data``, at most ``limit`` bytes, that ends on a character."""
    if len(data) <= limit:
        return len(data)
    cut = limit
    while cut > 0 and 0x80 <= data[cut] < 0xC0:  # a continuation byte: back to its lead byte
        cut -= 1
    return cut or limit


def _fold(name: str, tokens: list[str]) -> str:
    """``name:`` and the tokens, a space between each, a line break before a token that would
    take its line past 78 octets (a longer token stands on a line of its own)."""
    lines = []
    line = f"{name}:"
    for index, token in enumerate(tokens):
        if index and len(line) + 1 + len(token) > FOLD_AT:
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return "\r\n".join(lines)


def text_part(media_type: str, text: str) -> bytes:
    """One MIME part of UTF-8 text: its header fields, a blank line and its encoded body.

    ``text`` has "\\n" line ends. Mostly-ASCII text is written quoted-printable, so it can be
    read in the raw mail; mostly-other text (Cyrillic) base64, a third of the size.
    """
    text = text.replace("\n", "\r\n")
    data = text.encode("utf-8")
    if len(data) - len(text) > len(text) // 8:
        encoding, body = "base64", binascii.b2a_base64(data, newline=False)
        body = b"\r\n".join(body[i:i + 76] for i in range(0, len(body), 76)) + b"\r\n"
    else:
        encoding, body = "quoted-printable", binascii.b2a_qp(data, istext=True)
        body = body if body.endswith(b"\r\n") else body + b"=\r\n"
    head = (f'Content-Type: {media_type}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n")
    return head.encode("ascii") + body


def message(fields: list[str], part: bytes) -> bytes:
    """A single-part message: the header fields, MIME-Version and the part."""
    head = "\r\n".join([*fields, "MIME-Version: 1.0"]) + "\r\n"
    return head.encode("utf-8") + part


def alternative(fields: list[str], parts: list[bytes]) -> bytes:
    """A multipart/alternative message: the header fields and the parts, plainest first."""
    head = "\r\n".join([
        *fields, "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{BOUNDARY}"',
    ]) + "\r\n\r\n"
    delimiter = f"\r\n--{BOUNDARY}\r\n".encode("ascii")
    return (head.encode("utf-8") + delimiter[2:] + delimiter.join(parts)
            + f"\r\n--{BOUNDARY}--\r\n".encode("ascii"))
