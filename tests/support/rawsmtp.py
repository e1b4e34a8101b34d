"""Raw SMTP clients for tests that send what a well-behaved library would not.

aiosmtplib turns every bare LF or CR into CRLF before sending, as a well-behaved client should;
hostile and broken senders do not, so tests that play one use these instead.
"""

from __future__ import annotations

import asyncio


async def send_raw(
    port: int,
    content: bytes,
    sender: str = "alice@example.com",
    rcpts: tuple[str, ...] = ("bob@example.com",),
    host: str = "127.0.0.1",
) -> tuple[int, str]:
    """Send one message; return the reply to its DATA (or to the first refused command)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        code, text = await _reply(reader)
        for command in (b"EHLO raw.test", f"MAIL FROM:<{sender}>".encode(),
                        *(f"RCPT TO:<{rcpt}>".encode() for rcpt in rcpts), b"DATA"):
            writer.write(command + b"\r\n")
            code, text = await _reply(reader)
            if code >= 400:
                return code, text
        writer.write(data_payload(content))
        code, text = await _reply(reader)
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return code, text
    finally:
        writer.close()


def data_payload(content: bytes) -> bytes:
    """The bytes after DATA: a dot at the start of a CRLF line doubled, then CRLF.CRLF; a bare
    LF or CR is sent as it is (a dot after one is not doubled: it starts no SMTP line)."""
    stuffed = (b"." if content.startswith(b".") else b"") + content.replace(b"\r\n.", b"\r\n..")
    return stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n"


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(reader.readline(), 60)).decode("utf-8", "replace")
        if not line:
            raise ConnectionError("the server closed the connection")
        lines.append(line[4:].rstrip("\r\n"))
        if line[3:4] != "-":
            return int(line[:3]), "\n".join(lines)


class RawClient:
    """Writes bytes as given and reads replies (a multi-line reply comes back as one string)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, ehlo: bool = True) -> RawClient:
        """Connect to 127.0.0.1:port, read the greeting and (by default) say EHLO."""
        client = cls(*await asyncio.open_connection("127.0.0.1", port, limit=2**20))
        greeting = await client.reply()
        assert greeting.startswith("220"), greeting
        if ehlo:
            assert (await client.command("EHLO client.test")).startswith("250")
        return client

    async def reply(self, timeout: float = 30) -> str:
        """The next reply, or "" when the server closed the connection."""
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), timeout)).decode("utf-8")
            if not line:
                return "".join(lines)
            lines.append(line)
            if line[3:4] != "-":
                return "".join(lines)

    async def command(self, line: str | bytes) -> str:
        """Send one command line (CRLF added) and return the reply."""
        data = line.encode("utf-8") if isinstance(line, str) else line
        self.writer.write(data + b"\r\n")
        return await self.reply()

    async def message(self, content: bytes) -> str:
        """DATA with the content dot-stuffed here, as a client must; the final reply."""
        start = await self.command("DATA")
        if not start.startswith("354"):
            return start
        lines = content.split(b"\r\n")
        if lines[-1] == b"":
            lines.pop()
        stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                           for line in lines)
        self.writer.write(stuffed + b".\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
