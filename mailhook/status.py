"""A small HTTP endpoint on the event loop: ``GET /metrics`` (Prometheus) and ``GET /healthz``.

It runs on the daemon's own loop, so /metrics can count stored events and /healthz can ping
each dependency with the daemon's own adapters. Bind it to loopback: it has no authentication.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from mailhook.health import Health
from mailhook.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("mailhook.status")

READ_TIMEOUT = 10.0
MAX_REQUEST = 16 * 1024


class StatusServer:
    """Serves the metrics and the health check over HTTP/1.1 (one request per connection)."""

    def __init__(
        self, metrics: Metrics, health: Health, refresh: Callable[[], Awaitable[None]]
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._refresh = refresh
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    async def started(self, host: str, port: int) -> bool:
        """Start; False (logged) when the address cannot be had: metrics are for watching
        mail flow, never a reason to stop it."""
        try:
            await self.start(host, port)
        except OSError as exc:
            log.error("cannot serve metrics on %s:%s: %s; going on without them",
                      host, port, exc.strerror or exc)
            return False
        log.info("metrics and health on http://%s:%s/metrics and /healthz", host, self.port)
        return True

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            method, _, rest = head[:MAX_REQUEST].decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            status, content_type, body = await self._answer(method, path)
            writer.write(_response(status, content_type, body, head_only=method == "HEAD"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        except Exception:
            log.exception("status endpoint failed")
        finally:
            writer.close()

    async def _answer(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        if path == "/metrics":
            try:
                await self._refresh()
            except Exception as exc:  # noqa: BLE001 - the other metrics are still worth having
                log.warning("cannot count stored events for /metrics: %s", exc)
            return "200 OK", CONTENT_TYPE, self._metrics.exposition()
        if path == "/healthz":
            return await self._healthz()
        return "404 Not Found", "text/plain", b"try /metrics or /healthz\n"

    async def _healthz(self) -> tuple[str, str, bytes]:
        checks = await self._health.run()
        healthy = all(check.ok for check in checks)
        body = {
            "status": "ok" if healthy else "fail",
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }
        status = "200 OK" if healthy else "503 Service Unavailable"
        return status, "application/json", json.dumps(body, indent=1).encode("utf-8") + b"\n"


def _response(status: str, content_type: str, body: bytes, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + (b"" if head_only else body)
