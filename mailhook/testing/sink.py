"""A sink SMTP server: accepts mail on loopback and keeps it, for tests and rehearsals.

Replies can be scripted per command, so tests can make the next hop refuse or fail.

    python -m mailhook.testing.sink --port 10026 --maildir var/sink
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True, slots=True)
class Received:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...] = ()


@dataclass
class Script:
    """Replies to give instead of accepting: per recipient, or for DATA."""

    rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply
    data: list[str] = field(default_factory=list)  # replies for the next DATA commands
    data_delay: float = 0.0


class SinkHandler:
    """Keeps what it accepts; replies as scripted."""

    def __init__(self, maildir: Path | None = None) -> None:
        self.messages: list[Received] = []
        self.data_started = 0  # DATA commands begun, accepted or not
        self.sessions = 0  # EHLO/HELO greetings seen: roughly, connections
        self.script = Script()
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
        )
        with self.arrived:
            self.messages.append(message)
            number = len(self.messages)
            self.arrived.notify_all()
        if self._maildir is not None:
            self._maildir.mkdir(parents=True, exist_ok=True)
            (self._maildir / f"{time.time():.6f}-{number}.eml").write_bytes(message.content)
        return f"250 2.0.0 Ok: queued as SINK{number}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``count`` messages arrived; return them all."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


class _LongLineSMTP(SMTP):
    # Like Postfix, the sink takes lines longer than RFC 5321's 1000 octets.
    line_length_limit = 16 * 1024 * 1024


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _LongLineSMTP(self.handler, **self.SMTP_kwargs)


class Sink:
    """The sink server on a free loopback port, in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, maildir: Path | None = None,
                 smtputf8: bool = True) -> None:
        self.handler = SinkHandler(maildir)
        # smtputf8=False: a next hop that does not announce SMTPUTF8 (and refuses UTF-8 commands).
        self._controller = _Controller(
            self.handler, hostname=host, port=port or _free_port(host), enable_SMTPUTF8=smtputf8,
            data_size_limit=None,
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
    args = parser.parse_args(argv)
    sink = Sink(args.host, args.port, args.maildir).start()
    print(f"sink listening on {sink.host}:{sink.port}, writing to {args.maildir}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
