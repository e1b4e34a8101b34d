"""The milter protocol's packets as mailhook reads and writes them: framing, the packets
the library's parser is too strict for (macros, header fields), and the modifications that
turn a message into its rewritten form.

Packets are encoded and decoded with ``kilter.protocol``; only framing and two lenient
decoders are written here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.messages import AddHeader, ChangeHeader, Header, Macro, Message, ReplaceBody

# The largest packet taken from the MTA. Body chunks are at most 65535 bytes (no larger size
# is negotiated); a header is bounded by Postfix's header_size_limit (100 KiB). Anything
# claiming more is not a milter client: the connection is dropped before reading it.
MAX_PACKET = 1024 * 1024
REPLACE_CHUNK = 65535  # libmilter's chunk size for body replacement
REWRITTEN_HEADERS = ("content-type", "content-transfer-encoding")
_HEADER = struct.Struct("!L")


class ProtocolError(Exception):
    """The peer broke the milter protocol; its connection is closed."""


def changes(original: bytes, rewritten: bytes) -> list[Message]:
    """The milter modifications that turn ``original`` into ``rewritten``: the body replaced
    when it changed, and the top-level MIME headers the rewrite changed."""
    old_head, old_body = _split(original)
    new_head, new_body = _split(rewritten)
    result: list[Message] = []
    old_fields, new_fields = _fields(old_head), _fields(new_head)
    for name in REWRITTEN_HEADERS:
        before = [value for key, value in old_fields if key.lower() == name]
        after = [value for key, value in new_fields if key.lower() == name]
        if before == after:
            continue
        spelled = next((key for key, _ in new_fields + old_fields if key.lower() == name), name)
        for index in range(max(len(before), len(after))):
            value = after[index] if index < len(after) else b""
            if index < len(before):
                result.append(ChangeHeader(index + 1, spelled, _lf(value)))
            else:
                result.append(AddHeader(spelled, _lf(value)))
    if new_body != old_body:
        result += [ReplaceBody(new_body[start:start + REPLACE_CHUNK])
                   for start in range(0, len(new_body), REPLACE_CHUNK)] or [ReplaceBody(b"")]
    return result


def _split(content: bytes) -> tuple[bytes, bytes]:
    end = content.find(b"\r\n\r\n")
    if end < 0:
        return content, b""
    return content[:end + 2], content[end + 4:]


def _fields(head: bytes) -> list[tuple[str, bytes]]:
    """The header fields as (name, raw value with its folding) pairs."""
    fields: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif b":" in line:
            raw_name, _, value = line.partition(b":")
            fields.append((raw_name.decode("ascii", "replace").strip(), value))
    return fields


def complete_packets(pending: bytearray) -> Iterator[Message]:
    """Take each whole packet off the front of ``pending``, decoded; the length is checked as
    soon as it is there, so a peer claiming a huge packet is dropped before it is read."""
    while len(pending) >= 4:
        size = _HEADER.unpack_from(pending)[0]
        if not 1 <= size <= MAX_PACKET:
            raise ProtocolError(f"packet of {size} bytes (at most {MAX_PACKET} taken)")
        if len(pending) < 4 + size:
            return
        packet = bytes(pending[:4 + size])
        del pending[:4 + size]
        yield decode(packet)


def decode(packet: bytes) -> Message:
    """One whole packet (its length included) as a message; ProtocolError when malformed."""
    kind = packet[4:5]
    if kind == b"D":
        return _macro(packet)
    if kind == b"L":
        return _header(packet)
    buffer = SimpleBuffer(len(packet))
    buffer[:] = packet
    try:
        message, _ = Message.unpack(buffer)
    except Exception as exc:  # noqa: BLE001 - the library's parse errors differ by packet (assert, struct)
        raise ProtocolError(f"malformed packet {packet[4:5]!r}: {exc or type(exc).__name__}") \
            from None
    if hasattr(message, "freeze"):
        message.freeze()
    return message


def _macro(packet: bytes) -> Macro:
    """A macro packet, its values read as UTF-8 whatever they hold: the MTA passes the SMTP
    client's words on (an SMTPUTF8 sender address, a login name), and the library's parser,
    which takes only ASCII, would turn such a message into a dropped connection."""
    if len(packet) < 6:
        raise ProtocolError("macro packet without a stage")
    words = packet[6:].split(b"\0")
    pairs = zip(words[0::2], words[1::2], strict=False)
    return Macro(packet[5], {name.decode("utf-8", "replace"): value.decode("utf-8", "replace")
                             for name, value in pairs if name})


def _header(packet: bytes) -> Header:
    """A header packet: name and value, each ended by a NUL. The name is kept byte for byte
    (``surrogateescape``), so a field whose name is not ASCII goes back as it came."""
    name, nul, value = packet[5:].partition(b"\0")
    if not nul or not value.endswith(b"\0"):
        raise ProtocolError("malformed header packet")
    return Header(name.decode("utf-8", "surrogateescape"), value[:-1])


def encode(message: Message) -> bytes:
    """One packet as it goes on the wire: its length, its kind and its data."""
    size = 256 + sum(len(value) for value in vars(message).values()
                     if isinstance(value, bytes | str))
    buffer = SimpleBuffer(size)
    message.pack(buffer)
    return bytes(buffer[:])


def address(value: bytes | memoryview) -> str:
    text = bytes(value).decode("utf-8", "replace").strip()
    return text[1:-1] if text.startswith("<") and text.endswith(">") else text


def crlf(value: bytes) -> bytes:
    """A header value as the MTA sends it (folded lines end in LF) with CRLF line ends."""
    return value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _lf(value: bytes) -> bytes:
    return value.replace(b"\r\n", b"\n")
