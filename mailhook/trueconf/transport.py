"""A lean HTTP/1.1 transport for httpx on asyncio: h11 over ``asyncio.open_connection``.

``httpx.AsyncClient`` keeps doing everything above the socket (building requests, headers,
redirects, Content-Encoding decoding, ``Response`` objects); this module only replaces its
default transport, whose connection pool and anyio plumbing cost far more CPU per request than
the one or two small JSON calls mailhook makes per invitation are worth.

What it does:

* HTTP/1.1 (and answers from HTTP/1.0 servers) over plain TCP or TLS, framing by h11:
  Content-Length, chunked and close-delimited bodies, 1xx answers skipped.
* Whole answers only: the body is read before the ``Response`` is returned (capped, by default
  at 16 MiB); this suits a JSON API and lets the connection go back to the pool at once.
* A keep-alive pool per (scheme, host, port), with a cap on idle and on open connections.
  A reused connection found dead when the request is written to it is replaced by a fresh
  one and the request sent once more; one that closes after taking the request but before
  any byte of the answer is retried the same way only for idempotent methods (a POST might
  have created a conference already). Nothing is retried after an answer started.
* httpx's timeouts (connect, read, write, pool) and exceptions, so callers catching
  ``httpx.HTTPError`` see the same errors as with the default transport.

What it does not do: HTTP/2, streaming answers, and proxies: it always connects directly, which
is how a TrueConf Server is normally reached (on the same LAN). The client keeps httpx's default
transport, which honours HTTP_PROXY / HTTPS_PROXY / ALL_PROXY, for a server the environment
sends through a proxy. Certificates are checked against the system trust store
(``ssl.create_default_context()``) unless an ``ssl.SSLContext`` is given.

Nothing here logs: the requests carry bearer tokens and client secrets.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

import h11
import httpx

__all__ = ["H11Transport"]

DEFAULT_PORTS = {"http": 80, "https": 443}
READ_SIZE = 65536
MAX_BODY_SIZE = 16 * 1024 * 1024
MAX_HEADER_SIZE = 100 * 1024  # an answer's status line and headers (h11's default is 16 KiB)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

_Key = tuple[str, str, int]


class _Stale(Exception):
    """A reused connection died before answering: the request may go out once more."""


class _Connection:
    """One TCP (or TLS) connection with its h11 state."""

    __slots__ = ("key", "reader", "writer", "state", "reused", "idle_since")

    def __init__(self, key: _Key, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.key = key
        self.reader = reader
        self.writer = writer
        self.state = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_SIZE)
        self.reused = False
        self.idle_since = 0.0

    def quiet(self) -> bool:
        """Tell whether an idle connection is still open and has received nothing meanwhile."""
        reader = self.reader
        if reader.at_eof() or reader.exception() is not None or self.writer.is_closing():
            return False
        # A server may send something before it closes an idle connection (some send a
        # "408 Request Timeout"); such bytes would be taken for the answer to our next request.
        # StreamReader has no public way to ask how much it holds, hence the peek.
        return not getattr(reader, "_buffer", b"")


class H11Transport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` speaking HTTP/1.1 through h11 with a keep-alive pool.

    ``verify`` is True (check against the system trust store), False (no certificate check),
    or a ready ``ssl.SSLContext``. One instance belongs to one event loop.
    """

    def __init__(
        self,
        *,
        verify: bool | ssl.SSLContext = True,
        max_connections: int = 100,
        max_idle_connections: int = 20,
        keepalive_expiry: float | None = 5.0,
        max_body_size: int = MAX_BODY_SIZE,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._verify = verify
        self._ssl_context: ssl.SSLContext | None = None  # built on the first https request
        self._max_connections = max_connections
        self._max_idle = max(0, max_idle_connections)
        self._keepalive_expiry = keepalive_expiry
        self._max_body_size = max_body_size
        self._idle: dict[_Key, list[_Connection]] = {}  # oldest first, reused from the end
        self._idle_count = 0
        self._open = 0  # connections open or being opened, idle ones included
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    # --- the request ------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        default_port = DEFAULT_PORTS.get(scheme)
        if default_port is None:
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'.", request=request
            )
        host = url.host
        if not host:
            raise httpx.UnsupportedProtocol("Request URL is missing a host.", request=request)
        key = (scheme, host, url.port or default_port)
        timeouts = request.extensions.get("timeout") or {}
        body = await request.aread()
        try:
            head = h11.Request(
                method=request.method, target=url.raw_path, headers=request.headers.raw
            )
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from exc

        conn = await self._checkout(key, timeouts, request, fresh=False)
        if conn.reused:
            try:
                return await self._exchange(conn, head, body, timeouts, request, may_retry=True)
            except _Stale:
                pass  # the dead connection is closed already; try once on a new one
            conn = await self._checkout(key, timeouts, request, fresh=True)
        return await self._exchange(conn, head, body, timeouts, request, may_retry=False)

    async def _exchange(
        self,
        conn: _Connection,
        head: h11.Request,
        body: bytes,
        timeouts: dict[str, Any],
        request: httpx.Request,
        *,
        may_retry: bool,
    ) -> httpx.Response:
        """Send one request on ``conn`` and read its answer; the connection is always released."""
        try:
            await self._send(conn, head, body, timeouts.get("write"), request, may_retry)
            # A request the server may have received and acted on goes out again only when
            # repeating it is harmless: never a POST (a second conference) or a PATCH.
            resend = may_retry and request.method in IDEMPOTENT_METHODS
            response = await self._receive(conn, timeouts.get("read"), request, resend)
        except BaseException:
            # Errors, timeouts and cancellation alike leave the connection in an unknown state.
            self._drop(conn, abort=True)
            raise
        self._release(conn)
        return response

    async def _send(
        self,
        conn: _Connection,
        head: h11.Request,
        body: bytes,
        timeout: float | None,
        request: httpx.Request,
        may_retry: bool,
    ) -> None:
        state = conn.state
        try:
            data = state.send(head)
            if body:
                data += state.send(h11.Data(data=body))
            data += state.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        writer = conn.writer
        try:
            if writer.is_closing():
                raise ConnectionResetError("connection closed")
            writer.write(data)
            if writer.transport.get_write_buffer_size():
                async with asyncio.timeout(timeout):
                    await writer.drain()
        except TimeoutError as exc:
            raise httpx.WriteTimeout("timed out sending the request", request=request) from exc
        except OSError as exc:
            if may_retry:
                raise _Stale from exc
            raise httpx.WriteError(_describe(exc, "sending the request"), request=request) from exc

    async def _receive(
        self, conn: _Connection, timeout: float | None, request: httpx.Request, may_retry: bool
    ) -> httpx.Response:
        state = conn.state
        reader = conn.reader
        loop = asyncio.get_running_loop()
        answer: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        received = False  # any byte of the answer, which rules out sending the request again
        try:
            # One timer for the whole answer, moved forward before every read: the timeout
            # applies to each wait for data, as with httpx's own transport.
            async with asyncio.timeout(None) as timer:
                while True:
                    event = state.next_event()
                    if event is h11.NEED_DATA:
                        if timeout is not None:
                            timer.reschedule(loop.time() + timeout)
                        data = await reader.read(READ_SIZE)
                        if data:
                            received = True
                        elif may_retry and not received:
                            raise _Stale
                        state.receive_data(data)
                    elif type(event) is h11.Data:
                        size += len(event.data)
                        if size > self._max_body_size:
                            raise httpx.RemoteProtocolError(
                                f"response body exceeds {self._max_body_size} bytes",
                                request=request,
                            )
                        chunks.append(event.data)
                    elif type(event) is h11.Response:
                        answer = event
                    elif type(event) is h11.EndOfMessage:
                        break
                    elif type(event) is h11.InformationalResponse:
                        continue
                    else:
                        # ConnectionClosed or PAUSED cannot come before the end of an answer
                        # to a request that asked for no protocol switch.
                        raise httpx.RemoteProtocolError(
                            "unexpected HTTP event from the server", request=request
                        )
        except TimeoutError as exc:
            raise httpx.ReadTimeout("timed out reading the response", request=request) from exc
        except h11.RemoteProtocolError as exc:
            if not received:
                raise httpx.RemoteProtocolError(
                    "server disconnected without sending a response", request=request
                ) from exc
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except OSError as exc:
            if may_retry and not received:
                raise _Stale from exc
            raise httpx.ReadError(_describe(exc, "reading the response"), request=request) from exc
        assert answer is not None  # h11 yields the Response before any Data or EndOfMessage
        return httpx.Response(
            answer.status_code,
            headers=answer.headers.raw_items(),
            # A stream rather than content=: httpx then reads it and applies Content-Encoding
            # itself, and leaves the headers exactly as the server sent them.
            stream=httpx.ByteStream(b"".join(chunks)),
            extensions={
                "http_version": b"HTTP/" + answer.http_version,
                "reason_phrase": answer.reason,
            },
        )

    # --- the pool ---------------------------------------------------------------------------

    async def _checkout(
        self,
        key: _Key,
        timeouts: dict[str, Any],
        request: httpx.Request,
        *,
        fresh: bool,
    ) -> _Connection:
        """Take an idle connection for ``key`` or open one, waiting for a free slot if need be."""
        deadline: float | None = None
        while True:
            if not fresh:
                conn = self._take_idle(key)
                if conn is not None:
                    return conn
            if self._open < self._max_connections or self._evict_idle():
                self._open += 1
                break
            if deadline is None:
                pool_timeout = timeouts.get("pool")
                loop = asyncio.get_running_loop()
                deadline = loop.time() + pool_timeout if pool_timeout is not None else float("inf")
            await self._wait_for_slot(deadline, request)
        try:
            return await self._connect(key, timeouts.get("connect"), request)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _wait_for_slot(self, deadline: float, request: httpx.Request) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(None if deadline == float("inf") else deadline):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # this task was woken but gives up: wake the next one instead
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout(
                    "timed out waiting for a free connection", request=request
                ) from exc
            raise
        finally:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def _wake(self) -> None:
        """Tell the first task waiting for a connection slot to look again."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(
        self, key: _Key, timeout: float | None, request: httpx.Request
    ) -> _Connection:
        scheme, host, port = key
        context = self._context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                    limit=READ_SIZE,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"timed out connecting to {host}:{port}", request=request
            ) from exc
        except OSError as exc:  # ssl.SSLError (certificate checks included) is an OSError
            raise httpx.ConnectError(
                _describe(exc, f"connecting to {host}:{port}"), request=request
            ) from exc
        return _Connection(key, reader, writer)

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = _ssl_context(self._verify)
        return self._ssl_context

    def _take_idle(self, key: _Key) -> _Connection | None:
        stack = self._idle.get(key)
        if not stack:
            return None
        expiry = self._keepalive_expiry
        oldest_allowed = (
            asyncio.get_running_loop().time() - expiry if expiry is not None else float("-inf")
        )
        while stack:
            conn = stack.pop()
            self._idle_count -= 1
            if conn.idle_since >= oldest_allowed and conn.quiet():
                conn.reused = True
                return conn
            # Expired, closed by the server, or sent something unasked: close it, try the next.
            self._drop(conn, abort=False)
        return None

    def _release(self, conn: _Connection) -> None:
        """Put a connection whose exchange completed back in the pool, or close it."""
        state = conn.state
        if (
            self._closed
            or self._max_idle == 0
            or state.our_state is not h11.DONE
            or state.their_state is not h11.DONE
        ):
            self._drop(conn, abort=False)
            return
        state.start_next_cycle()
        if state.trailing_data[0] or not conn.quiet():
            self._drop(conn, abort=False)  # bytes after the answer: the stream is out of step
            return
        now = asyncio.get_running_loop().time()
        conn.idle_since = now
        conn.reused = False
        stack = self._idle.setdefault(conn.key, [])
        expiry = self._keepalive_expiry
        while stack and expiry is not None and stack[0].idle_since < now - expiry:
            self._idle_count -= 1
            self._drop(stack.pop(0), abort=False)
        if self._idle_count >= self._max_idle:
            self._evict_idle()
        stack.append(conn)
        self._idle_count += 1
        self._wake()

    def _evict_idle(self) -> bool:
        """Close the idle connection unused for the longest time; False if there is none."""
        oldest: list[_Connection] | None = None
        for stack in self._idle.values():
            if stack and (oldest is None or stack[0].idle_since < oldest[0].idle_since):
                oldest = stack
        if oldest is None:
            return False
        self._idle_count -= 1
        self._drop(oldest.pop(0), abort=False)
        return True

    def _drop(self, conn: _Connection, *, abort: bool) -> None:
        """Close a connection that is not (or no longer) in the idle pool and free its slot."""
        transport = conn.writer.transport
        if abort:
            transport.abort()
        else:
            transport.close()
        self._open -= 1
        self._wake()

    async def aclose(self) -> None:
        """Close every pooled connection; connections still in use close when their answer is in."""
        self._closed = True
        stacks = list(self._idle.values())
        self._idle.clear()
        self._idle_count = 0
        for stack in stacks:
            for conn in stack:
                self._drop(conn, abort=False)
        if stacks:
            await asyncio.sleep(0)  # let the event loop finish closing the sockets


def _ssl_context(verify: bool | ssl.SSLContext) -> ssl.SSLContext:
    """True: check certificates against the system trust store; False: check nothing."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify:
        context = ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def _describe(exc: BaseException, doing: str) -> str:
    detail = str(exc) or type(exc).__name__
    return f"{doing}: {detail}"
