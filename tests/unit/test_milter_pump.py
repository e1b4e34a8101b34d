"""The milter connection's packet pump shares the event loop: a flood of packets in one read
is handled a share at a time, and a peer that stops taking answers is read no further."""

from __future__ import annotations

import asyncio
import struct

from mailhook.frontends import milter_pump
from mailhook.frontends.milter_pump import PacketPump


class Counting(PacketPump):
    """Counts the packets handed on; answers none."""

    def __init__(self) -> None:
        super().__init__()
        self.handled = 0

    def handle(self, packet):  # type: ignore[no-untyped-def]
        self.handled += 1


class Transport(asyncio.Transport):
    """A transport that records reading being paused and resumed."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def get_extra_info(self, name, default=None):  # type: ignore[no-untyped-def]
        return default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        pass


def end_of_headers_packets(count: int) -> bytes:
    return (struct.pack("!L", 1) + b"N") * count


async def test_a_flood_in_one_read_is_handled_a_share_per_turn():
    """Packets beyond one turn's share wait for the loop's next turn, so other connections
    get theirs in between; all of them are handled in the end."""
    pump = Counting()
    pump.connection_made(Transport())
    pump.data_received(end_of_headers_packets(1000))
    assert pump.handled == milter_pump.PACKETS_PER_TURN
    for _ in range(10):
        await asyncio.sleep(0)
    assert pump.handled == 1000
    pump.connection_lost(None)


async def test_a_peer_not_taking_answers_is_read_no_further():
    """Once the transport says the peer's answers back up, reading pauses and no more packets
    are handled; when they drain, the rest is handled and reading resumes."""
    pump = Counting()
    transport = Transport()
    pump.connection_made(transport)
    pump.pause_writing()
    assert not transport.reading
    pump.data_received(end_of_headers_packets(10))
    assert pump.handled == 0
    pump.resume_writing()
    assert pump.handled == 10 and transport.reading
    pump.connection_lost(None)
