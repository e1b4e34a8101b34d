"""A discarding SMTP sink on aiosmtpd, for machines without Postfix's ``smtp-sink``::

python benchmarks/sink.py --port 10026
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiosmtpd.smtp import SMTP, Envelope, Session


class DiscardHandler:
    """Accept every message and forget it."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 Ok: discarded"


class _LongLines(SMTP):
    line_length_limit = 16 * 1024 * 1024  # like Postfix, take lines longer than 1000 octets


async def serve(port: int) -> None:
    """Listen on loopback until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    handler = DiscardHandler()
    server = await loop.create_server(
        lambda: _LongLines(handler, hostname="sink.bench", data_size_limit=None,
                           enable_SMTPUTF8=True),
        host="127.0.0.1", port=port, reuse_address=True, backlog=1024,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"sink listening on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
