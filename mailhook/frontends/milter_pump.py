"""The transport side of a milter connection: bytes in, whole packets handed on, packets out.

Packets are handled in the transport's own callback as they arrive, not by a task woken for
each read: an ordinary message is some twenty small packets, and a task switch per packet
cost more than handling it. A step that must wait (the flow, at the end of a message) runs as
a task; packets that arrive meanwhile wait for it, and reading pauses when more than a
packet's worth piles up (the MTA waits for an answer there, so only a misbehaving peer sends
more).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Coroutine
from typing import Any

from kilter.protocol.messages import Message

from mailhook.frontends.milter_packets import (
    MAX_PACKET,
    ProtocolError,
    complete_packets,
    encode,
)

log = logging.getLogger("mailhook.milter")

IDLE_TIMEOUT = 7200.0  # an MTA keeps milter connections open between messages
IDLE_CHECK = 60.0  # how often a connection's silence is looked at
# Packets handled in one go before the loop gets a turn: a peer sending a flood of tiny
# packets cannot hold the other connections up for long.
PACKETS_PER_TURN = 200

Step = Coroutine[Any, Any, None]
CLOSE = "close"  # what a packet handler returns when the MTA ended the connection


class PacketPump(asyncio.Protocol):
    """One connection's packets; ``handle`` (a subclass's) answers each one."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._tcp: Any = None  # the socket, when it is TCP (for TCP_QUICKACK)
        self._received = bytearray()
        self._work: asyncio.Task[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._turn: asyncio.Handle | None = None
        self._heard = 0.0
        self.closed = False

    def handle(self, packet: Message) -> Step | str | None:
        """Answer one packet: None when done, a step to run for it, or CLOSE."""
        raise NotImplementedError

    # --- the transport's callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            self._tcp = sock
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        self._watch = loop.call_later(IDLE_CHECK, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._heard = asyncio.get_running_loop().time()
        self._received += data
        if self._waiting():
            if len(self._received) > MAX_PACKET and self.transport is not None:
                self.transport.pause_reading()
        else:
            self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        # A step under way finishes (what the flow did is kept); its answer goes nowhere.
        self.closed = True
        self._received.clear()
        for handle in (self._watch, self._turn):
            if handle is not None:
                handle.cancel()
        self.resume_writing()

    def pause_writing(self) -> None:
        # The MTA is not reading its answers: read nothing more from it until it does.
        self._writable = asyncio.get_running_loop().create_future()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None
        if not self.closed and not self._waiting():
            self._pump()

    # --- packets -------------------------------------------------------------------------

    def _waiting(self) -> bool:
        """A step is under way, the MTA is not taking answers, or a turn is scheduled."""
        return self._work is not None or self._writable is not None or self._turn is not None

    def _next_turn(self) -> None:
        self._turn = None
        if not self.closed and not self._waiting():
            self._pump()

    def _pump(self) -> None:
        """Handle the whole packets received, until one needs a step that waits, the MTA
        stops taking answers, or this turn's share is used up."""
        loop = asyncio.get_running_loop()
        try:
            for handled, packet in enumerate(complete_packets(self._received), start=1):
                answer = self.handle(packet)
                if answer == CLOSE:
                    self._close()
                    return
                if answer is not None:
                    assert not isinstance(answer, str)
                    self._work = loop.create_task(self._run(answer))
                    return
                if self._writable is not None:
                    return  # reading is paused; resume_writing goes on from here
                if handled >= PACKETS_PER_TURN:
                    self._turn = loop.call_soon(self._next_turn)
                    return
        except ProtocolError as exc:
            log.warning("milter client dropped: %s", exc)
            self._close()
            return
        except Exception:
            log.exception("milter connection failed")
            self._close()
            return
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    async def _run(self, step: Step) -> None:
        try:
            await step
        except Exception:
            log.exception("milter connection failed")
            self._work = None
            self._close()
            return
        self._work = None
        if not self.closed and not self._waiting():
            self._pump()

    def send(self, message: Message) -> None:
        """Write one packet (dropped when the MTA has gone)."""
        if self.closed or self.transport is None:
            return
        self.transport.write(encode(message))
        self._quick_ack()

    async def drained(self) -> None:
        """Wait until the MTA has taken what was written (between large packets)."""
        if self._writable is not None:
            await self._writable

    def _quick_ack(self) -> None:
        """Acknowledge what arrives at once until the next write. Sending data puts the
        kernel into delayed-ACK mode; the MTA then writes a macro packet and the command
        after it separately without waiting for an answer to the first, and with Nagle's
        algorithm on its side a delayed ACK here would hold each such command ~40 ms."""
        if self._tcp is not None:
            self._tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _check_idle(self) -> None:
        """Drop a connection the MTA left silent for IDLE_TIMEOUT; one timer per connection
        rather than one per read, which would cost more than most packets' handling."""
        loop = asyncio.get_running_loop()
        if self._work is None and loop.time() - self._heard > IDLE_TIMEOUT:
            if self.transport is not None:
                self.transport.abort()
            return
        self._watch = loop.call_later(IDLE_CHECK, self._check_idle)
