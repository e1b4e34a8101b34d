"""The MTA's side of the milter protocol, for tests: negotiates like Postfix, sends one
message's steps and collects the milter's modifications and final answer."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.messages import (
    ActionFlags,
    Body,
    Close,
    Continue,
    EndOfHeaders,
    EndOfMessage,
    EnvelopeFrom,
    EnvelopeRecipient,
    Macro,
    Message,
    Negotiate,
    ProtocolFlags,
)

# What Postfix 3.7 offers: every action, every step flag.
POSTFIX_ACTIONS = ActionFlags(0x1ff)
POSTFIX_STEPS = ProtocolFlags(0x1fffff)


@dataclass
class Answer:
    """The milter's packets for one message: modifications, then the final answer."""

    packets: list[Message] = field(default_factory=list)
    at_end_of_headers: bool = False  # the milter answered before the body

    @property
    def final(self) -> Message:
        return self.packets[-1]

    def of(self, kind: type[Message]) -> list[Message]:
        return [packet for packet in self.packets if isinstance(packet, kind)]


class MilterClient:
    """One connection to the milter, as an MTA holds it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.negotiated: Negotiate | None = None

    @classmethod
    async def connect(cls, host: str, port: int) -> MilterClient:
        client = cls(*await asyncio.open_connection(host, port))
        await client.send(Negotiate(6, POSTFIX_ACTIONS, POSTFIX_STEPS))
        reply = await client.receive()
        assert isinstance(reply, Negotiate)
        client.negotiated = reply
        return client

    async def send(self, message: Message) -> None:
        buffer = SimpleBuffer(len(getattr(message, "content", b"")) + 4096)
        message.pack(buffer)
        self.writer.write(bytes(buffer[:]))
        await self.writer.drain()

    async def send_raw(self, packet: bytes) -> None:
        """Send bytes as they are (what the library's encoder would refuse to write)."""
        self.writer.write(packet)
        await self.writer.drain()

    async def receive(self) -> Message:
        size = struct.unpack("!L", await self.reader.readexactly(4))[0]
        data = await self.reader.readexactly(size)
        buffer = SimpleBuffer(size + 4)
        buffer[:] = struct.pack("!L", size) + data
        message, _ = Message.unpack(buffer)
        message.freeze()
        return message

    async def step(self, message: Message, flag: ProtocolFlags) -> None:
        """Send one step; read the milter's Continue unless it asked not to answer it."""
        await self.send(message)
        assert self.negotiated is not None
        if not flag & self.negotiated.protocol_flags:
            await self.receive()

    async def message(self, sender: str, recipients: list[str], raw: bytes,
                      macros: dict[str, str] | None = None) -> Answer:
        """Send one message the way Postfix does; the milter's answer to its end."""
        await self.step(EnvelopeFrom(f"<{sender}>".encode()), ProtocolFlags.NR_SENDER)
        for recipient in recipients:
            await self.step(EnvelopeRecipient(f"<{recipient}>".encode()),
                            ProtocolFlags.NR_RECIPIENT)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert self.negotiated is not None
        for line in unfold(head):
            name, _, value = line.partition(b":")
            await self.send_raw(header_packet(name, value))  # the name as raw bytes, too
            if not ProtocolFlags.NR_HEADER & self.negotiated.protocol_flags:
                await self.receive()
        macros = macros or {"i": "4Xq1Jt2ZzQz9sWQ"}
        await self.send(Macro(ord("N"), macros))  # Postfix sends the asked-for macros at both
        await self.send(EndOfHeaders())
        assert self.negotiated is not None
        if not ProtocolFlags.NR_END_OF_HEADERS & self.negotiated.protocol_flags:
            early = await self.receive()
            if not isinstance(early, Continue):  # answered here: the MTA sends no more of it
                return Answer([early], at_end_of_headers=True)
        for start in range(0, len(body), 65535):
            await self.step(Body(body[start:start + 65535]), ProtocolFlags.NR_BODY)
        await self.send(Macro(ord("E"), macros))
        await self.send(EndOfMessage(b""))
        answer = Answer()
        while True:
            packet = await self.receive()
            answer.packets.append(packet)
            if type(packet).__name__ in ("Continue", "Accept", "TemporaryFailure", "Reject",
                                         "ReplyCode", "Discard"):
                return answer

    async def close(self) -> None:
        await self.send(Close())
        self.writer.close()


def unfold(head: bytes) -> list[bytes]:
    """Header fields, folded lines joined with LF as Postfix sends them."""
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        else:
            fields.append(line)
    return fields


def macro_packet(stage: str, macros: dict[bytes, bytes]) -> bytes:
    """A macro packet with values as raw bytes (any encoding, as an MTA may pass them on)."""
    body = b"D" + stage.encode() + b"".join(name + b"\0" + value + b"\0"
                                            for name, value in macros.items())
    return struct.pack("!L", len(body)) + body


def header_packet(name: bytes, value: bytes) -> bytes:
    """A header packet as an MTA writes it: name and value, each ended by a NUL."""
    body = b"L" + name + b"\0" + value + b"\0"
    return struct.pack("!L", len(body)) + body
