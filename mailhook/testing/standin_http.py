"""The TrueConf API stand-in's HTTP plumbing: a threading HTTP server whose requests become
``Request`` values for the stand-in and whose ``Reply`` values go back as HTTP/1.1."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from mailhook.testing.standin_rules import Reply, Request, error


class Answering(Protocol):
    """What the server serves: the stand-in."""

    verbose: bool

    def _handle(self, request: Request) -> Reply: ...


class Server(ThreadingHTTPServer):
    """The stand-in's HTTP server: one thread per connection, a long listen queue."""

    daemon_threads = True
    # The stdlib's backlog of 5 resets connections when dozens of requests arrive at once
    # (a mail burst); a real TrueConf Server takes them.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], handler: type, *, standin: Answering) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.standin = standin
        self.connections: set[socket.socket] = set()  # open keep-alive connections
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_close(self) -> None:
        super().server_close()
        # As a server that stops: a client's kept-alive connection must not reach it any more.
        self.hang_up()

    def hang_up(self) -> None:
        """Close every open connection."""
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout tests do) leaves a broken pipe; that is not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    """Turns each HTTP request into a Request for the stand-in, and its Reply back."""

    server: Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms each.
    disable_nagle_algorithm = True
    server_version = "TrueConfStandIn/1.0"

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:  # the name http.server dispatches to
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=parts.path,
            query={key: values[0] for key, values in parse_qs(parts.query).items()},
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self._read_body(),
        )
        try:
            reply = self.server.standin._handle(request)
        except Exception:  # a stand-in bug must still answer, as the real server's 500 would
            traceback.print_exc()
            reply = error(500, "internalError", "stand-in failure")
        self._send(reply)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, reply: Reply) -> None:
        payload, content_type = _encoded(reply)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if reply.status != 204:
            self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line may carry ?access_token=, so log the path without its query.
        if self.server.standin.verbose:
            path = urlsplit(self.path).path
            sys.stderr.write(f"standin: {self.command} {path} {code}\n")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        # Silenced: http.server's messages can quote raw request lines.
        return


def _encoded(reply: Reply) -> tuple[bytes, str]:
    if reply.text is not None:
        return reply.text.encode("utf-8"), "text/html; charset=utf-8"
    if reply.body is None:
        return b"", "application/json"
    return json.dumps(reply.body).encode("utf-8"), "application/json; charset=utf-8"


