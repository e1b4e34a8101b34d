"""A milter that does nothing but answer: the floor for the milter benchmark.

It negotiates the same steps and "no reply" flags as mailhook's milter, reads each packet's
frame and nothing more, and accepts every message at the end of its header section, as
mailhook does for ordinary mail. Postfix with this milter shows what speaking the milter
protocol costs Postfix itself, and what a Python milter costs at the least::

    python benchmarks/null_milter.py 8892
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kilter.protocol.messages import ActionFlags, Negotiate, ProtocolFlags  # noqa: E402

from mailhook.frontends.milter import NO_REPLY_STEPS, WANTED_STEPS  # noqa: E402
from mailhook.frontends.milter_packets import encode  # noqa: E402

ACCEPT = struct.pack("!L", 1) + b"a"
CONTINUE = struct.pack("!L", 1) + b"c"
ANSWERED = {b"N": ACCEPT, b"E": CONTINUE, b"C": CONTINUE, b"H": CONTINUE, b"T": CONTINUE,
            b"U": CONTINUE}
NO_REPLY = {b"M": ProtocolFlags.NR_SENDER, b"R": ProtocolFlags.NR_RECIPIENT,
            b"L": ProtocolFlags.NR_HEADER, b"B": ProtocolFlags.NR_BODY}


class NullMilter(asyncio.Protocol):
    """One MTA connection, answered with the least work."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.flags = ProtocolFlags.NONE

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data
        while len(self.received) >= 4:
            size = struct.unpack_from("!L", self.received)[0]
            if len(self.received) < 4 + size:
                return
            command, body = bytes(self.received[4:5]), bytes(self.received[5:4 + size])
            del self.received[:4 + size]
            self.answer(command, body)

    def answer(self, command: bytes, body: bytes) -> None:
        assert self.transport is not None
        if command == b"O":
            offered = ProtocolFlags(struct.unpack("!III", body[:12])[2])
            self.flags = (WANTED_STEPS | NO_REPLY_STEPS) & offered
            self.write(encode(Negotiate(6, ActionFlags.NONE, self.flags)))
        elif command == b"Q":
            self.transport.close()
        elif command in ANSWERED:
            self.write(ANSWERED[command])
        elif command in NO_REPLY and not self.flags & NO_REPLY[command]:
            self.write(CONTINUE)

    def write(self, packet: bytes) -> None:
        assert self.transport is not None
        self.transport.write(packet)
        sock = self.transport.get_extra_info("socket")
        # As mailhook does: without it each unanswered macro packet waits for a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(NullMilter, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
