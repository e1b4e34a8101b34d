"""Reading DATA: mailhook's own reader answers as aiosmtpd does, in one buffer."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest
from aiosmtpd.smtp import SMTP

from mailhook.frontends.smtp import COMMAND_LINE_LIMIT, MailhookSMTP


class Recorder:
    """The least an aiosmtpd handler for MailhookSMTP needs; keeps each message."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(envelope.original_content)
        return "250 2.0.0 Ok"

    def forget(self, session) -> None:
        pass


class Session:
    """A raw client: write bytes, read replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> str:
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode()
            lines.append(line)
            if line[3:4] != "-":
                return "".join(lines)

    async def command(self, text: bytes) -> str:
        self.writer.write(text)
        return await self.reply()


@pytest.fixture
async def server():
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    listening = await loop.create_server(
        lambda: MailhookSMTP(recorder, (), hostname="mx.test", data_size_limit=3_000_000),
        "127.0.0.1", 0,
    )
    port = listening.sockets[0].getsockname()[1]

    async def connect() -> Session:
        session = Session(*await asyncio.open_connection("127.0.0.1", port, limit=2**20))
        assert (await session.reply()).startswith("220")
        assert (await session.command(b"EHLO client.test\r\n")).startswith("250")
        return session

    yield recorder, connect
    listening.close()
    await listening.wait_closed()


async def transaction(session: Session, body: bytes) -> str:
    assert (await session.command(b"MAIL FROM:<a@example.com>\r\n")).startswith("250")
    assert (await session.command(b"RCPT TO:<b@example.com>\r\n")).startswith("250")
    assert (await session.command(b"DATA\r\n")).startswith("354")
    return await session.command(body)


async def test_dots_are_unstuffed_and_the_lone_dot_ends_the_message(server) -> None:
    recorder, connect = server
    session = await connect()
    body = b"Subject: x\r\n\r\n..leading dot\r\n.\tdot tab\r\nmiddle . dot\r\n.\r\n"
    assert (await transaction(session, body)).startswith("250 2.0.0 Ok")
    assert recorder.messages == [b"Subject: x\r\n\r\n.leading dot\r\n\tdot tab\r\nmiddle . dot\r\n"]


async def test_bytes_after_the_dot_are_the_next_command(server) -> None:
    """A client pipelining QUIT right behind the final dot gets both answers."""
    recorder, connect = server
    session = await connect()
    assert (await session.command(b"MAIL FROM:<a@example.com>\r\n")).startswith("250")
    assert (await session.command(b"RCPT TO:<b@example.com>\r\n")).startswith("250")
    assert (await session.command(b"DATA\r\n")).startswith("354")
    session.writer.write(b"Subject: y\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert (await session.reply()).startswith("250")
    assert (await session.reply()).startswith("221")
    assert recorder.messages == [b"Subject: y\r\n\r\nbody\r\n"]


async def test_a_lone_lf_is_not_a_line_end_and_a_split_dot_line_is_not_the_end(server) -> None:
    recorder, connect = server
    session = await connect()
    assert (await session.command(b"MAIL FROM:<a@example.com>\r\n")).startswith("250")
    assert (await session.command(b"RCPT TO:<b@example.com>\r\n")).startswith("250")
    assert (await session.command(b"DATA\r\n")).startswith("354")
    session.writer.write(b"a\n.\nb\r\n.")
    await asyncio.sleep(0.05)
    assert (await session.command(b"x\r\n.\r\n")).startswith("250")
    assert recorder.messages == [b"a\n.\nb\r\nx\r\n"]


async def test_too_much_data_is_refused_after_the_end_and_the_session_goes_on(server) -> None:
    recorder, connect = server
    session = await connect()
    big = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
    reply = await transaction(session, big * 3100 + b".\r\n")
    assert reply.startswith("552")
    assert recorder.messages == []
    assert (await transaction(session, b"Subject: small\r\n\r\nok\r\n.\r\n")).startswith("250")
    assert recorder.messages == [b"Subject: small\r\n\r\nok\r\n"]


async def test_lines_longer_than_the_stream_limit_come_whole_and_unstuffed(server) -> None:
    """Message lines far over the command line limit are read in pieces and kept whole: a
    leading dot is unstuffed once, and a CRLF split between two reads still ends the line."""
    recorder, connect = server
    session = await connect()
    assert (await session.command(b"MAIL FROM:<a@example.com>\r\n")).startswith("250")
    assert (await session.command(b"RCPT TO:<b@example.com>\r\n")).startswith("250")
    assert (await session.command(b"DATA\r\n")).startswith("354")
    long_dot = b".." + b"y" * 300_000 + b"\r\n"
    session.writer.write(b"Subject: long\r\n\r\n" + long_dot + b"z" * 5000 + b"\r")
    await session.writer.drain()
    await asyncio.sleep(0.05)
    assert (await session.command(b"\n.\r\n")).startswith("250")
    assert recorder.messages == [b"Subject: long\r\n\r\n" + long_dot[1:] + b"z" * 5000 + b"\r\n"]


async def test_a_command_line_over_the_limit_is_answered_before_it_ends(server) -> None:
    """A command line longer than COMMAND_LINE_LIMIT gets 500 while it is still coming; the
    rest of it is dropped and the next line is a command again."""
    recorder, connect = server
    session = await connect()
    session.writer.write(b"NOOP " + b"n" * 100_000)
    assert (await session.reply()).startswith("500 5.5.2 Line too long")
    session.writer.write(b"n" * 100_000)
    assert (await session.command(b"\r\nNOOP\r\n")).startswith("250")
    assert (await session.command(b"NOOP " + b"n" * (COMMAND_LINE_LIMIT - 10) + b"\r\n")
            ).startswith("250")


async def test_a_large_message_takes_far_less_memory_than_aiosmtpds_reader(
    server, monkeypatch
) -> None:
    """aiosmtpd's own reader keeps each line as an object until the end (about three times
    the message); mailhook's one buffer plus the final copy stay near twice."""
    recorder, connect = server
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    body = b"Subject: big\r\n\r\n" + line * (2_000_000 // len(line))
    payload = body + b".\r\n"

    async def peak_for_one_message() -> int:
        session = await connect()
        assert (await session.command(b"MAIL FROM:<a@example.com>\r\n")).startswith("250")
        assert (await session.command(b"RCPT TO:<b@example.com>\r\n")).startswith("250")
        assert (await session.command(b"DATA\r\n")).startswith("354")
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            assert (await session.command(payload)).startswith("250")
            return tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
            recorder.messages.clear()

    ours = await peak_for_one_message()
    monkeypatch.setattr(MailhookSMTP, "line_length_limit", 16 * 1024 * 1024)
    monkeypatch.setattr(MailhookSMTP, "data_size_limit", 10_000_000, raising=False)
    monkeypatch.setattr(MailhookSMTP, "smtp_DATA", SMTP.smtp_DATA)
    theirs = await peak_for_one_message()
    assert ours < 0.75 * theirs, f"ours {ours / len(body):.2f}x, aiosmtpd {theirs / len(body):.2f}x"


def read_line_by_line(stream: bytes) -> tuple[bytes, int]:
    """What DATA holds by RFC 5321 4.5.2, read one CRLF line at a time: the unstuffed message
    and where the lone dot's line ends."""
    lines, position = [], 0
    while True:
        end = stream.index(b"\r\n", position) + 2
        line = stream[position:end]
        if line == b".\r\n":
            return b"".join(lines), end
        lines.append(line[1:] if line.startswith(b".") else line)
        position = end


async def test_the_message_read_in_pieces_equals_the_message_read_line_by_line(server) -> None:
    """Whatever the octets and however the client's writes split them, DATA holds exactly
    the lines before the lone dot, each leading dot removed once."""
    import random

    recorder, connect = server
    session = await connect()
    pick = random.Random(20310303)
    alphabet = [b".", b"\r", b"\n", b"\r\n", b"a", b"..", b"\r\n.", b".\r", b"z" * 2500, b" "]
    for _ in range(150):
        body = b"".join(pick.choice(alphabet) for _ in range(pick.randrange(0, 40)))
        stream = body + b"\r\n.\r\n"
        expected, end = read_line_by_line(stream)
        stream = stream[:end]
        assert (await session.command(b"MAIL FROM:<a@example.com>\r\n")).startswith("250")
        assert (await session.command(b"RCPT TO:<b@example.com>\r\n")).startswith("250")
        assert (await session.command(b"DATA\r\n")).startswith("354")
        cuts = sorted(pick.sample(range(1, len(stream)), min(3, len(stream) - 1)))
        for first, last in zip([0, *cuts], [*cuts, len(stream)]):
            session.writer.write(stream[first:last])
            await session.writer.drain()
            if last < len(stream):
                await asyncio.sleep(0.002)  # a read of its own for each write
        assert (await session.reply()).startswith("250"), stream
        assert recorder.messages.pop() == expected, stream
