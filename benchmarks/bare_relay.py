"""The naive baseline: an aiosmtpd server that relays each message with aiosmtplib.

It does what any SMTP relay must and nothing more: it takes the whole message, opens a new
connection to the next hop for it (connect, EHLO, MAIL, RCPT, DATA, QUIT), and answers 250 only
after the next hop accepted it. mailhook is measured against it::

    python benchmarks/bare_relay.py --port 10027 --next-hop 127.0.0.1:10026
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session


class RelayHandler:
    """aiosmtpd's DATA hook: hand the message on, answer with the next hop's verdict."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=60, start_tls=False)
        try:
            await client.connect()
            await client.sendmail(envelope.mail_from or "", envelope.rcpt_tos,
                                  envelope.original_content or b"")
            await client.quit()
        except aiosmtplib.SMTPRecipientsRefused:
            return "550 5.1.1 Recipients refused by the next hop"
        except aiosmtplib.SMTPResponseException as exc:
            return f"{451 if exc.code < 500 else exc.code} {exc.message}"
        except (aiosmtplib.SMTPException, OSError):
            return "451 4.4.1 Next hop unavailable"
        finally:
            client.close()
        return "250 2.0.0 Ok: relayed"


async def serve(port: int, next_host: str, next_port: int) -> None:
    """Listen on loopback until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    handler = RelayHandler(next_host, next_port)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bare.bench", data_size_limit=None, enable_SMTPUTF8=True),
        host="127.0.0.1", port=port, reuse_address=True,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"bare relay listening on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--next-hop", required=True, metavar="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.next_hop.rpartition(":")
    asyncio.run(serve(args.port, host, int(port)))


if __name__ == "__main__":
    main()
