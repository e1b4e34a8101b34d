"""A raw SMTP client for tests that need to send what a well-behaved library would not."""

from __future__ import annotations

import asyncio


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
