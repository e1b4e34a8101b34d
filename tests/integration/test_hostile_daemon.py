"""Hostile invitations built to make the filter's text scans slow, sent to the real daemon
while other clients use it: nobody waits for them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import replace

import aiosmtplib
import httpx

from mailhook.core import blocks
from tests.support import reliability
from tests.support.daemon import invitations
from tests.support.invites import Event, exchange, plain_mail, thunderbird

PATIENCE = 2.0  # seconds any other client may wait while a hostile message is handled
ORDINARY_CONNECTIONS = 5
# 12,000 plain block opener lines without a closer: 422 KiB of text/plain.
OPENER_LINES = ("~" * 12 + " TrueConf " + "~" * 12 + "\r\n") * 12_000
# 15,000 HTML block start markers without an end marker: 500 KiB of text/html.
HTML_OPENERS = (blocks.HTML_START + "\r\n") * 15_000


def hostile_invitations() -> dict[str, bytes]:
    """Local organizers' REQUESTs asking for TrueConf, each with a body or field built to stall."""
    plain = thunderbird(Event(uid="hostile-plain@example.com"), "<hostile-1@example.com>")
    html = exchange(Event(uid="hostile-html@example.com"), "<hostile-2@example.com>")
    subject = "=?utf-8?q?a" * 14_000
    return {
        "text/plain body of 12,000 block opener lines": plain.replace(
            b"You have been invited to Quarterly planning.", OPENER_LINES.encode()),
        "text/html body of 15,000 block start markers": html.replace(
            b"<html><body><p>Let's meet.</p></body></html>",
            b"<html><body>\r\n" + HTML_OPENERS.encode() + b"</body></html>"),
        "DESCRIPTION of 12,000 block opener lines": thunderbird(replace(
            Event(uid="hostile-description@example.com"),
            description="\\n".join([blocks.PLAIN_START] * 12_000)), "<hostile-3@example.com>"),
        "Subject of 14,000 unterminated encoded words": thunderbird(
            Event(uid="hostile-subject@example.com"), "<hostile-4@example.com>").replace(
            b"Invitation: Quarterly planning", subject.encode(), 1),
    }


async def send_on_one_connection(port: int, messages: list[bytes]) -> list[int]:
    """Send each message in its own transaction on one SMTP connection; the reply codes."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=300, start_tls=False)
    await client.connect()
    codes = []
    for raw in messages:
        try:
            await client.sendmail("alice@example.com", ["bob@example.com"], raw)
            codes.append(250)
        except aiosmtplib.SMTPResponseException as exc:
            codes.append(exc.code)
    await client.quit()
    return codes


async def waited(call: Awaitable[object]) -> tuple[object, float]:
    """What ``call`` answered and how long it took (None if not within ten times the patience)."""
    start = time.perf_counter()
    try:
        result = await asyncio.wait_for(call, 10 * PATIENCE)
    except TimeoutError:
        result = None
    return result, time.perf_counter() - start


async def ordinary_mail(port: int, number: int) -> int:
    """Send one ordinary message on a connection of its own; the reply code."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, start_tls=False)
    await client.connect()
    try:
        body = f"Lunch at {number}?\r\n"
        await client.sendmail("carol@example.com", ["bob@example.com"],
                              plain_mail(body, sender="carol@example.com"))
        return 250
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code
    finally:
        client.close()


async def test_hostile_bodies_do_not_hold_up_other_clients(daemon, standin, sink):
    """While hostile invitations are handled, ordinary mail and /healthz answer within 2 s."""
    hostile = hostile_invitations()
    health_url = f"http://127.0.0.1:{daemon.status_server.port}/healthz"
    sending = asyncio.create_task(send_on_one_connection(daemon.port, list(hostile.values())))
    await asyncio.sleep(0.05)  # the first hostile message is on its way
    waits: list[float] = []
    codes: list[object] = []
    async with httpx.AsyncClient(timeout=60) as http:
        for round_number in range(30):
            if sending.done() and round_number >= 3:
                break
            parallel = await asyncio.gather(*(
                waited(ordinary_mail(daemon.port, round_number * 10 + n))
                for n in range(ORDINARY_CONNECTIONS)))
            in_turn = [await waited(ordinary_mail(daemon.port, 100 + round_number))]
            health = await waited(http.get(health_url))
            for answer, seconds in [*parallel, *in_turn, health]:
                codes.append(getattr(answer, "status_code", answer))
                waits.append(seconds)
    hostile_codes = await sending
    for name in hostile:
        reliability.hostile(name)
    reliability.responsiveness(max(waits))
    assert max(waits) < PATIENCE, f"another client waited {max(waits):.1f} s"
    assert set(codes) <= {250, 200}, codes
    assert hostile_codes == [250] * len(hostile)
    delivered = [m.content for m in invitations(sink) if b"hostile-" in m.content]
    assert len(delivered) == len(hostile)
    urls = [conference["url"].encode() for conference in standin.conferences.values()]
    assert len(urls) == len(hostile)
    assert all(any(url in content for url in urls) for content in delivered)
