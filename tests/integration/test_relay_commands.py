"""MAIL and RCPT towards the next hop: plain addresses are written without the email package's
address parser, exactly as aiosmtplib's quoting writes them, and every other address still
goes through aiosmtplib; refusals come back as the next hop gave them."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiosmtplib.email import quote_address
from hypothesis import given
from hypothesis import strategies as st

from mailhook.config import RelaySettings
from mailhook.core.replies import Reply
from mailhook.relay import _PLAIN_PATH, NextHop, Transaction


@dataclass
class Recorder:
    """A next hop that writes down every command line and answers as scripted."""

    port: int = 0
    lines: list[bytes] = field(default_factory=list)
    answers: dict[bytes, bytes] = field(default_factory=dict)  # command prefix -> reply

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 recorder ESMTP\r\n")
        while line := await reader.readline():
            self.lines.append(line)
            command = line.upper()
            if command.startswith(b"EHLO"):
                writer.write(b"250-recorder\r\n250 PIPELINING\r\n")
            elif command.startswith(b"DATA"):
                writer.write(b"354 go on\r\n")
                while await reader.readline() not in (b".\r\n", b""):
                    pass
                writer.write(b"250 2.0.0 kept\r\n")
            elif command.startswith(b"QUIT"):
                writer.write(b"221 bye\r\n")
                break
            else:
                scripted = [reply for prefix, reply in self.answers.items() if line.startswith(prefix)]
                writer.write(scripted[0] if scripted else b"250 2.1.0 Ok\r\n")
            await writer.drain()
        writer.close()

    def envelope_lines(self) -> list[bytes]:
        return [line for line in self.lines if line[:4].upper() in (b"MAIL", b"RCPT")]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    recording = Recorder()
    server = await asyncio.start_server(recording.serve, "127.0.0.1", 0)
    recording.port = server.sockets[0].getsockname()[1]
    async with server:
        yield recording


def _hop(recorder: Recorder) -> NextHop:
    return NextHop(RelaySettings(host="127.0.0.1", port=recorder.port))


async def test_plain_addresses_are_written_as_aiosmtplib_writes_them(recorder: Recorder) -> None:
    """Plain envelope addresses and the null sender go on the wire as <address>."""
    hop = _hop(recorder)
    reply = await hop.send("alice.o'neil+tag@example.com", ["Bob@Example.COM"], b"Subject: x\r\n\r\nhi\r\n")
    assert reply.ok
    reply = await hop.send("", ["carol@example.net"], b"Subject: y\r\n\r\nhi\r\n")
    assert reply.ok
    await hop.aclose()
    assert recorder.envelope_lines() == [
        b"MAIL FROM:<alice.o'neil+tag@example.com>\r\n",
        b"RCPT TO:<Bob@Example.COM>\r\n",
        b"MAIL FROM:<>\r\n",
        b"RCPT TO:<carol@example.net>\r\n",
    ]


async def test_unusual_addresses_still_go_through_aiosmtplib(recorder: Recorder) -> None:
    """A quoted local part or an address literal is quoted by aiosmtplib, as before."""
    hop = _hop(recorder)
    reply = await hop.send('"john smith"@example.com', ["bob@[192.0.2.1]"], b"Subject: x\r\n\r\nhi\r\n")
    await hop.aclose()
    assert reply.ok
    assert recorder.envelope_lines() == [
        f"MAIL FROM:{quote_address(chr(34) + 'john smith' + chr(34) + '@example.com')}\r\n".encode(),
        f"RCPT TO:{quote_address('bob@[192.0.2.1]')}\r\n".encode(),
    ]


async def test_refusals_come_back_as_the_next_hop_gave_them(recorder: Recorder) -> None:
    """A refused MAIL or RCPT on the quick path is the next hop's own reply."""
    recorder.answers = {b"MAIL FROM:<mallory@": b"553 5.7.1 not you\r\n",
                        b"RCPT TO:<nobody@": b"550 5.1.1 no such user\r\n",
                        b"RCPT TO:<later@": b"251 2.1.5 will forward\r\n"}
    hop = _hop(recorder)
    refused = await hop.begin("mallory@example.com", [])
    assert refused == Reply(553, "5.7.1 not you")
    transaction = await hop.begin("alice@example.com", [])
    assert isinstance(transaction, Transaction)
    assert await transaction.rcpt("nobody@example.com", []) == Reply(550, "5.1.1 no such user")
    assert (await transaction.rcpt("later@example.com", [])).ok
    await transaction.close()
    await hop.aclose()


async def test_plain_addresses_skip_the_address_parser(recorder: Recorder,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Relaying plain addresses runs no email-package address parsing (it is the cost spared)."""
    calls: list[str] = []
    parse = email.utils.parseaddr

    def counted(address: str, *args: object, **kwargs: object) -> tuple[str, str]:
        calls.append(address)
        return parse(address)

    monkeypatch.setattr(email.utils, "parseaddr", counted)
    hop = _hop(recorder)
    assert (await hop.send("alice@example.com", ["bob@example.com", "zoe@example.net"],
                           b"Subject: x\r\n\r\nhi\r\n")).ok
    await hop.aclose()
    assert calls == []
    assert len(recorder.envelope_lines()) == 3


_ANY_TEXT = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-.@\"\\ ()<>[]:;,é\t", max_size=24)


@given(st.one_of(st.from_regex(_PLAIN_PATH, fullmatch=True), _ANY_TEXT))
def test_the_quick_path_agrees_with_aiosmtplib(address: str) -> None:
    """Whenever an address takes the quick path, aiosmtplib would have written it the same."""
    if _PLAIN_PATH.fullmatch(address):
        assert quote_address(address) == f"<{address}>"
