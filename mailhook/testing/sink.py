"""A sink SMTP server: accepts mail on loopback and keeps it, for tests and rehearsals.

Replies can be scripted per command, so tests can make the next hop refuse or fail. It reads
lines in one of three ways (``line_ends``):

- ``"crlf"`` (the default): only CRLF ends a line, and lines of any length are taken;
- ``"strict"``: like a strict MTA, any message with a bare LF, a bare CR or a line over 998
  octets is refused with 500 (and kept in ``refused``);
- ``"lenient"``: like Postfix's smtpd with ``smtpd_forbid_bare_newline = no`` (the default
  before 3.9), a bare LF also ends a line, so "<LF>.<CR><LF>" ends the data and whatever
  follows is read as SMTP commands.

    python -m mailhook.testing.sink --port 10026 --maildir var/sink [--line-ends strict]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from mailhook.compat import begin_data

LineEnds = Literal["crlf", "strict", "lenient"]
MAX_LINE_OCTETS = 998  # RFC 5321 4.5.3.1.6, without the CRLF
_BARE_CR = re.compile(rb"\r(?!\n)")
_BARE_LF = re.compile(rb"(?<!\r)\n")


@dataclass(frozen=True, slots=True)
class Received:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...] = ()
    tls: bool = False  # it came over a session that had done STARTTLS


@dataclass
class Script:
    """Replies to give instead of accepting: per recipient, or for DATA."""

    rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply
    data: list[str] = field(default_factory=list)  # replies for the next DATA commands
    data_delay: float = 0.0
    # A reply to send after the next accepted message's own reply, unasked for (as a next
    # hop does when it read more from the data than the client meant), and whether to send
    # it in the same write ("") or after this many seconds.
    extra_reply: str = ""
    extra_reply_delay: float = 0.0


class SinkHandler:
    """Keeps what it accepts; replies as scripted."""

    def __init__(self, maildir: Path | None = None, line_ends: LineEnds = "crlf") -> None:
        self.messages: list[Received] = []
        self.refused: list[tuple[str, Received]] = []  # strict mode: (reply, message)
        self.data_started = 0  # DATA commands begun, accepted or not
        self.sessions = 0  # EHLO/HELO greetings seen: roughly, connections
        self.extra_replies_sent = 0
        self._pushing: set[asyncio.Task[None]] = set()
        self.script = Script()
        self.line_ends = line_ends
        self._maildir = maildir
        self._lock = threading.Lock()
        self.arrived = threading.Condition(self._lock)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.script.rcpt.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_started += 1
        if self.script.data_delay:
            await asyncio.sleep(self.script.data_delay)
        if self.script.data:
            return self.script.data.pop(0)
        message = Received(
            envelope.mail_from or "",
            tuple(envelope.rcpt_tos),
            envelope.original_content or b"",
            tuple(envelope.mail_options),
            session.ssl is not None,
        )
        if self.line_ends == "strict":
            refusal = strict_refusal(message.content)
            if refusal:
                self.refused.append((refusal, message))
                return refusal
        reply = self._keep(message)
        if self.script.extra_reply:
            return await self._with_extra_reply(server, reply)
        return reply

    def _keep(self, message: Received) -> str:
        with self.arrived:
            self.messages.append(message)
            number = len(self.messages)
            self.arrived.notify_all()
        if self._maildir is not None:
            self._maildir.mkdir(parents=True, exist_ok=True)
            (self._maildir / f"{time.time():.6f}-{number}.eml").write_bytes(message.content)
        return f"250 2.0.0 Ok: queued as SINK{number}"

    async def _with_extra_reply(self, server: SMTP, reply: str) -> str:
        """The message's reply, with the scripted unasked one (sent once) in the same write
        or on its own a little later."""
        extra, self.script.extra_reply = self.script.extra_reply, ""
        if not self.script.extra_reply_delay:
            self.extra_replies_sent += 1
            return f"{reply}\r\n{extra}"
        pushing = asyncio.get_running_loop().create_task(
            self._push_later(server, extra, self.script.extra_reply_delay)
        )
        self._pushing.add(pushing)
        pushing.add_done_callback(self._pushing.discard)
        return reply

    async def _push_later(self, server: SMTP, reply: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await server.push(reply)
        self.extra_replies_sent += 1

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``count`` messages arrived; return them all."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


def strict_refusal(content: bytes) -> str:
    """The 500 reply a strict MTA gives a message that is not in SMTP's wire form, or ""."""
    if _BARE_LF.search(content):
        return "500 5.5.2 Error: bare <LF> received"
    if _BARE_CR.search(content):
        return "500 5.5.2 Error: bare <CR> received"
    if any(len(line) > MAX_LINE_OCTETS for line in content.split(b"\r\n")):
        return "500 5.5.2 Line too long (see RFC5321 4.5.3.1.6)"
    return ""


class _LongLineSMTP(SMTP):
    # Like Postfix, the sink takes lines longer than RFC 5321's 1000 octets (strict mode
    # refuses them itself, with the message read to its end).
    line_length_limit = 16 * 1024 * 1024


class _LenientSMTP(_LongLineSMTP):
    """Reads DATA the way Postfix's smtpd did by default before 3.9: a bare LF ends a line too."""

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if not await begin_data(self, arg):
            return
        assert self.envelope is not None
        lines: list[bytes] = []
        while True:
            line = await self._reader.readuntil(b"\n")
            if line in (b".\r\n", b".\n"):
                break
            lines.append(line[1:] if line.startswith(b".") else line)
        self.envelope.content = self.envelope.original_content = b"".join(lines)
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)


class _Controller(Controller):
    def factory(self) -> SMTP:
        lenient = getattr(self.handler, "line_ends", "crlf") == "lenient"
        return (_LenientSMTP if lenient else _LongLineSMTP)(self.handler, **self.SMTP_kwargs)


class Sink:
    """The sink server on a free loopback port, in a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        maildir: Path | None = None,
        line_ends: LineEnds = "crlf",
        smtputf8: bool = True,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = SinkHandler(maildir, line_ends)
        # smtputf8=False: a next hop that does not announce SMTPUTF8 (and refuses UTF-8 commands).
        # tls_context: STARTTLS is offered with it.
        self._controller = _Controller(
            self.handler, hostname=host, port=port or _free_port(host), enable_SMTPUTF8=smtputf8,
            data_size_limit=None, tls_context=tls_context,
        )

    @property
    def host(self) -> str:
        return str(self._controller.hostname)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def messages(self) -> list[Received]:
        return list(self.handler.messages)

    def start(self) -> Sink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    """Run the sink until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m mailhook.testing.sink",
                                     description="Accept mail on loopback and keep it.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10026)
    parser.add_argument("--maildir", type=Path, default=Path("var/sink"),
                        help="folder the messages are written to, one .eml each")
    parser.add_argument("--line-ends", choices=("crlf", "strict", "lenient"), default="crlf",
                        help="how lines are read: CRLF only (default), refuse anything else "
                             "like a strict MTA, or take a bare LF as a line end like Postfix's "
                             "smtpd before 3.9")
    args = parser.parse_args(argv)
    sink = Sink(args.host, args.port, args.maildir, args.line_ends).start()
    print(f"sink listening on {sink.host}:{sink.port}, writing to {args.maildir}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
