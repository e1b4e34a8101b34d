"""An SMTP client that sends a message's bytes exactly as given (only dot-stuffed), for tests.

aiosmtplib turns every bare LF or CR into CRLF before sending, as a well-behaved client should;
hostile and broken senders do not, so tests that play one use this instead.
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
