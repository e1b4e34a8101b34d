"""The baselines: an aiosmtpd server that relays each message with aiosmtplib, and nothing more.

It takes the whole message, hands it to the next hop and answers 250 only after the next hop
accepted it. Two ways of reaching the next hop:

- new connection (the default, the naive relay): connect, EHLO, MAIL, RCPT, DATA, QUIT for
  each message;
- ``--pooled`` (the fair peer of mailhook, whose next-hop sessions are pooled): sessions to
  the next hop are kept open and reused, MAIL, RCPT and DATA on one already greeted, like
  mailhook's relay pool. A session that failed is closed, never reused.

``--processes N`` binds the listening socket once and forks N processes that all accept on
it, as mailhook's ``smtp.workers`` do, so that both sides use the same number of cores::

    python benchmarks/bare_relay.py --port 10027 --next-hop 127.0.0.1:10026 --pooled --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

IDLE_SESSIONS = 100  # next-hop sessions kept open at most, per process (mailhook's default)


class RelayHandler:
    """aiosmtpd's DATA hook: hand the message on, answer with the next hop's verdict."""

    def __init__(self, host: str, port: int, pooled: bool = False) -> None:
        self.host, self.port, self.pooled = host, port, pooled
        self.idle: list[aiosmtplib.SMTP] = []

    async def _session(self) -> aiosmtplib.SMTP:
        """A greeted session to the next hop: an idle pooled one, or a new one."""
        while self.pooled and self.idle:
            client = self.idle.pop()
            if client.is_connected:
                return client
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=60, start_tls=False)
        await client.connect()
        return client

    def _done(self, client: aiosmtplib.SMTP, reusable: bool) -> None:
        if self.pooled and reusable and client.is_connected and len(self.idle) < IDLE_SESSIONS:
            self.idle.append(client)
        else:
            client.close()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        client: aiosmtplib.SMTP | None = None
        reusable = False
        try:
            client = await self._session()
            await client.sendmail(envelope.mail_from or "", envelope.rcpt_tos,
                                  envelope.original_content or b"")
            if self.pooled:
                reusable = True
            else:
                await client.quit()
        except aiosmtplib.SMTPRecipientsRefused:
            return "550 5.1.1 Recipients refused by the next hop"
        except aiosmtplib.SMTPResponseException as exc:
            return f"{451 if exc.code < 500 else exc.code} {exc.message}"
        except (aiosmtplib.SMTPException, OSError):
            return "451 4.4.1 Next hop unavailable"
        finally:
            if client is not None:
                self._done(client, reusable)
        return "250 2.0.0 Ok: relayed"


async def serve(listener: socket.socket, next_host: str, next_port: int, pooled: bool) -> None:
    """Accept on ``listener`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    handler = RelayHandler(next_host, next_port, pooled)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bare.bench", data_size_limit=None, enable_SMTPUTF8=True),
        sock=listener,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watch = loop.create_task(_stop_when_orphaned(stop)) if os.getppid() != 1 else None
    await stop.wait()
    if watch is not None:
        watch.cancel()
    server.close()


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """A forked child whose parent was killed stops too, rather than hold the port."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 - a parent's death sends no event
        await asyncio.sleep(1.0)
    stop.set()


def listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    return listener


def run_processes(listener: socket.socket, count: int, next_host: str, next_port: int,
                  pooled: bool) -> None:
    """Fork ``count`` processes accepting on ``listener``; the parent waits and passes SIGTERM on."""
    children = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(serve(listener, next_host, next_port, pooled))
            finally:
                os._exit(0)
        children.append(pid)

    def stop(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--next-hop", required=True, metavar="HOST:PORT")
    parser.add_argument("--pooled", action="store_true", help="keep next-hop sessions open and reuse them")
    parser.add_argument("--processes", type=int, default=1,
                        help="processes accepting on the one socket (1: no fork)")
    args = parser.parse_args()
    host, _, port = args.next_hop.rpartition(":")
    listener = listen(args.port)
    kind = "pooled" if args.pooled else "new-connection"
    print(f"{kind} relay listening on 127.0.0.1:{args.port}, {args.processes} process(es)",
          flush=True)
    sys.stdout.flush()
    if args.processes <= 1:
        asyncio.run(serve(listener, host, int(port), args.pooled))
    else:
        run_processes(listener, args.processes, host, int(port), args.pooled)


if __name__ == "__main__":
    main()
