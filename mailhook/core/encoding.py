"""A new body put back into its MIME part: in the part's transfer encoding and line ends
(quoted-printable when the text no longer fits 7bit or 8bit), with the part's header fields
edited only where the body needs it (Content-Transfer-Encoding, charset, no Content-Length).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from mailhook.core.mime import IDENTITY_CTES
from mailhook.core.mimetree import MimePart
from mailhook.errors import InvitationError

MAX_LINE_OCTETS = 998
_TEXT_LINE_BREAK = re.compile(rb"\r?\n")


@dataclass(frozen=True, slots=True)
class Encoded:
    """A new body and the header changes it needs."""

    body: bytes
    cte: str | None = None  # new Content-Transfer-Encoding, None = unchanged
    charset: str | None = None  # new charset parameter, None = unchanged



def encode_payload(raw: bytes, part: MimePart, payload: bytes, charset: str | None) -> Encoded:
    original = raw[part.body_start : part.body_end]
    trailing = original.endswith(b"\n")
    if part.cte == "base64":
        return Encoded(_base64(payload, part.eol, trailing), charset=charset)
    if part.cte == "quoted-printable":
        return Encoded(_quoted_printable(payload, part.eol), charset=charset)
    if part.cte not in IDENTITY_CTES:
        raise InvitationError(f"cannot re-encode transfer encoding {part.cte!r}")
    body = _with_eol(payload, part.eol)
    if _needs_quoting(body, part.cte):
        return Encoded(
            _quoted_printable(payload, part.eol), cte="quoted-printable", charset=charset
        )
    return Encoded(body, charset=charset)


def _with_eol(payload: bytes, eol: bytes) -> bytes:
    """Every CRLF or bare LF as ``eol``; a bare CR stays as it is."""
    return payload.replace(b"\r\n", b"\n").replace(b"\n", eol)


def _needs_quoting(body: bytes, cte: str) -> bool:
    # Lines over 998 octets and bare CRs are not allowed in 7bit or 8bit text (RFC 2045 2.7,
    # 2.8); quoted-printable carries both without changing the text.
    unfit = max(map(len, body.split(b"\n"))) > MAX_LINE_OCTETS or _has_bare_cr(body)
    if cte in ("8bit", "binary"):
        return unfit and cte == "8bit"
    return unfit or not body.isascii()


def _base64(payload: bytes, eol: bytes, trailing: bool) -> bytes:
    encoded = base64.b64encode(payload)
    lines = [encoded[index : index + 76] for index in range(0, len(encoded), 76)]
    return eol.join(lines) + (eol if trailing else b"")


def _quoted_printable(payload: bytes, eol: bytes) -> bytes:
    """Quoted-printable text whose every line break, hard or soft, is ``eol``.

    binascii takes its soft line break from the text's first line end, so a body without one
    (a one-line HTML body, common from Outlook and Apple Mail) got "=\\n" soft breaks in a CRLF
    message. A bare CR is no line break in text: it is written as "=0D", never raw.
    """
    if _has_bare_cr(payload):
        soft_break = b"=" + eol
        return eol.join(
            binascii.b2a_qp(line, istext=False).replace(b"=\n", soft_break)
            for line in _TEXT_LINE_BREAK.split(payload)
        )
    text = _with_eol(payload, eol)
    encoded = binascii.b2a_qp(text, istext=True)
    if eol == b"\r\n" and b"\n" not in text:
        encoded = encoded.replace(b"=\n", b"=\r\n")  # every LF in it is a soft break
    return encoded


def _has_bare_cr(data: bytes) -> bool:
    return data.count(b"\r") != data.count(b"\r\n")


# --- headers ----------------------------------------------------------------------------------

_CHARSET_PARAM = re.compile(rb'(?<![\w*-])(charset\s*=\s*)("[^"]*"|[^;\s]*)', re.IGNORECASE)


def _header_fields(block: bytes) -> list[bytes]:
    """Split a raw header block into fields, each with its continuation lines and line ends."""
    fields: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def edit_header(raw: bytes, part: MimePart, encoded: Encoded) -> bytes:
    """The part's header block without Content-Length and with the encoding changes applied."""
    fields = _header_fields(raw[part.header_start : part.header_end])
    fields = [field for field in fields if _field_name(field) != b"content-length"]
    if encoded.cte is not None:
        line = b"Content-Transfer-Encoding: " + encoded.cte.encode("ascii") + part.eol
        fields = _set_field(fields, b"content-transfer-encoding", line)
    if encoded.charset is not None:
        fields = _set_charset(fields, encoded.charset.encode("ascii"), part.eol)
    return b"".join(fields)


def _set_field(fields: list[bytes], name: bytes, line: bytes) -> list[bytes]:
    replaced = [line if _field_name(field) == name else field for field in fields]
    return replaced if any(_field_name(field) == name for field in fields) else [*fields, line]


def _set_charset(fields: list[bytes], charset: bytes, eol: bytes) -> list[bytes]:
    for index, field in enumerate(fields):
        if _field_name(field) != b"content-type":
            continue
        if _CHARSET_PARAM.search(field):
            fields[index] = _CHARSET_PARAM.sub(
                lambda m: (
                    m.group(1) + (b'"%s"' % charset if m.group(2).startswith(b'"') else charset)
                ),
                field,
                count=1,
            )
        else:
            body = field.rstrip(b"\r\n")
            fields[index] = body + b"; charset=" + charset + field[len(body) :]
        return fields
    return [*fields, b"Content-Type: text/plain; charset=" + charset + eol]
