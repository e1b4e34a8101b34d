"""Tests for the h11 transport over real loopback sockets: framing, pooling, errors, TLS."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailhook.core.model import ConferenceSpec, Invitee
from mailhook.errors import TrueConfUnavailable
from mailhook.testing.standin import StandIn
from mailhook.trueconf.client import TrueConfClient, _tls_verify
from mailhook.trueconf.transport import H11Transport

# --- a scriptable HTTP server -----------------------------------------------------------------


class Exchange:
    """One request as the test server read it."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body


Reply = Callable[["Conn", Exchange], Awaitable[bool]]


class Conn:
    """The server side of one accepted connection."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.index = index
        self.reader = reader
        self.writer = writer
        self.served = 0  # requests answered on this connection

    async def read_request(self) -> Exchange | None:
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Exchange(method, path, headers, body)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


def answer(body: bytes = b'{"ok": true}', status: str = "200 OK", **extra: str) -> bytes:
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **extra}
    lines = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return f"HTTP/1.1 {status}\r\n{lines}\r\n".encode() + body


async def echo(conn: Conn, request: Exchange) -> bool:
    """Answer with what was asked, keeping the connection open."""
    payload = {"method": request.method, "path": request.path, "body": request.body.decode()}
    await conn.send(answer(json.dumps(payload).encode()))
    return True


class Server:
    """An asyncio HTTP server on 127.0.0.1 answering each request through ``reply``.

    ``reply`` returns True to keep the connection for another request, False to close it.
    """

    def __init__(self, reply: Reply = echo, *, context: ssl.SSLContext | None = None) -> None:
        self.reply = reply
        self.context = context
        self.accepted = 0
        self.open_now = 0
        self.open_peak = 0
        self.requests: list[Exchange] = []
        self.closed_by_client = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        scheme = "https" if self.context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Conn(self.accepted, reader, writer)
        self.accepted += 1
        self.open_now += 1
        self.open_peak = max(self.open_peak, self.open_now)
        try:
            while True:
                request = await conn.read_request()
                if request is None:
                    self.closed_by_client += 1
                    break
                self.requests.append(request)
                keep = await self.reply(conn, request)
                conn.served += 1
                if not keep:
                    break
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.open_now -= 1
            writer.close()
            self._tasks.discard(task)


def client_for(server: Server, transport: H11Transport | None = None, **options: Any):
    transport = transport or H11Transport()
    return httpx.AsyncClient(base_url=server.url, transport=transport, **options)


# --- framing ----------------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection() -> None:
    """Two sequential requests travel over a single TCP connection."""
    async with Server() as server, client_for(server) as client:
        first = await client.get("/one")
        second = await client.post("/two", json={"a": 1})
    assert first.json()["path"] == "/one"
    assert second.json() == {"method": "POST", "path": "/two", "body": '{"a":1}'}
    assert server.accepted == 1
    assert server.requests[1].headers["content-type"] == "application/json"
    assert server.requests[1].headers["host"] == f"127.0.0.1:{server.port}"


async def test_content_length_body_and_response_metadata() -> None:
    """A Content-Length answer comes back with its status, reason, headers and version."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        await conn.send(answer(b'{"id": "42"}', "201 Made Here", X_Extra="yes"))
        return True

    async with Server(reply) as server, client_for(server) as client:
        response = await client.post("/conferences", content=b"x" * 1000)
    assert response.status_code == 201 and response.reason_phrase == "Made Here"
    assert response.http_version == "HTTP/1.1"
    assert response.headers["x-extra"] == "yes" and response.headers["content-length"] == "12"
    assert response.json() == {"id": "42"}
    assert server.requests[0].body == b"x" * 1000


async def test_chunked_body() -> None:
    """A chunked answer is reassembled and the connection stays usable."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        await conn.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\n{\"a\":\r\n"
            b"3\r\n 1}\r\n0\r\n\r\n"
        )
        return True

    async with Server(reply) as server, client_for(server) as client:
        assert (await client.get("/")).json() == {"a": 1}
        assert (await client.get("/")).json() == {"a": 1}
    assert server.accepted == 1


async def test_http10_close_delimited_body() -> None:
    """An HTTP/1.0 answer without a length ends at the close, and is not pooled."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        await conn.send(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"old": true}')
        return False

    async with Server(reply) as server, client_for(server) as client:
        first = await client.get("/")
        second = await client.get("/")
    assert first.json() == second.json() == {"old": True}
    assert first.http_version == "HTTP/1.0"
    assert server.accepted == 2


async def test_connection_close_from_the_server_is_honoured() -> None:
    """An answer saying "Connection: close" is followed by a new connection for the next one."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        await conn.send(answer(Connection="close"))
        return False

    async with Server(reply) as server, client_for(server) as client:
        for _ in range(3):
            assert (await client.get("/")).json() == {"ok": True}
    assert server.accepted == 3


async def test_connection_close_from_the_client_is_honoured() -> None:
    """A request saying "Connection: close" does not leave its connection in the pool."""
    async with Server() as server, client_for(server) as client:
        await client.get("/", headers={"Connection": "close"})
        await client.get("/")
    assert server.accepted == 2


async def test_informational_answers_are_skipped() -> None:
    """100 Continue and 103 Early Hints before the answer are passed over."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        await conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        await conn.send(answer(b'{"final": 1}'))
        return True

    async with Server(reply) as server, client_for(server) as client:
        response = await client.post("/", content=b"body")
    assert response.status_code == 200 and response.json() == {"final": 1}


async def test_gzip_content_encoding_is_decoded_by_httpx() -> None:
    """A gzip-encoded JSON answer reaches response.json() decoded."""
    packed = gzip.compress(json.dumps({"conference": {"id": "7"}}).encode())

    async def reply(conn: Conn, request: Exchange) -> bool:
        await conn.send(answer(packed, Content_Encoding="gzip"))
        return True

    async with Server(reply) as server, client_for(server) as client:
        response = await client.get("/")
    assert response.json() == {"conference": {"id": "7"}}
    assert response.headers["content-encoding"] == "gzip"
    assert "gzip" in server.requests[0].headers["accept-encoding"]


async def test_body_larger_than_the_cap_is_an_error() -> None:
    """An answer above max_body_size raises instead of filling memory."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        await conn.send(answer(b"x" * 5000))
        return True

    transport = H11Transport(max_body_size=4096)
    async with Server(reply) as server, client_for(server, transport) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="exceeds"):
            await client.get("/")


# --- stale and broken connections -------------------------------------------------------------


async def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    """The server closing a kept-alive connection between requests costs nothing visible."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        await conn.send(answer())
        return False  # keep-alive promised, then closed

    async with Server(reply) as server, client_for(server) as client:
        await client.get("/")
        await asyncio.sleep(0.05)
        assert (await client.get("/")).json() == {"ok": True}
    assert server.accepted == 2


async def test_reused_connection_dying_before_the_answer_is_retried_once() -> None:
    """A request sent on a reused connection that closes without a byte goes out again, once."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        if conn.index == 0 and conn.served == 1:
            return False  # read the second request, then close as if the idle timer had fired
        await conn.send(answer(json.dumps(request.path).encode()))
        return True

    async with Server(reply) as server, client_for(server) as client:
        assert (await client.get("/a")).json() == "/a"
        assert (await client.put("/b", content=b"payload")).json() == "/b"
    assert server.accepted == 2
    assert [r.path for r in server.requests] == ["/a", "/b", "/b"]
    assert server.requests[2].body == b"payload"


async def test_a_post_the_server_took_is_never_sent_twice() -> None:
    """A POST read by the server before the connection closed may have created something:
    the error surfaces (mailhook answers 451 and finds the conference by its tag later)."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        if conn.index == 0 and conn.served == 1:
            return False
        await conn.send(answer(json.dumps(request.path).encode()))
        return True

    async with Server(reply) as server, client_for(server) as client:
        assert (await client.get("/a")).json() == "/a"
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/b", content=b"payload")
    assert [r.path for r in server.requests] == ["/a", "/b"]


async def test_retry_happens_only_once() -> None:
    """When the fresh connection also closes without answering, the error surfaces."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        if conn.index == 0 and conn.served == 0:
            await conn.send(answer())
            return True
        return False

    async with Server(reply) as server, client_for(server) as client:
        await client.get("/")
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.get("/")
    assert server.accepted == 2 and len(server.requests) == 3


async def test_fresh_connection_closing_without_answer_is_not_retried() -> None:
    """On a new connection nothing is retried: the first close is the error."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        return False

    async with Server(reply) as server, client_for(server) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/")
    assert server.accepted == 1


async def test_server_closing_mid_response_is_a_protocol_error() -> None:
    """A body cut short of its Content-Length raises and is never retried."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\":")
        return False

    async with Server(reply) as server, client_for(server) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.get("/")
    assert server.accepted == 1 and len(server.requests) == 1


async def test_cut_answer_on_a_reused_connection_is_not_retried() -> None:
    """Once an answer started, a reused connection dying is an error, not a retry."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        if conn.served == 0:
            await conn.send(answer())
            return True
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Le")
        return False

    async with Server(reply) as server, client_for(server) as client:
        await client.get("/")
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/")
    assert server.accepted == 1 and len(server.requests) == 2


async def test_garbled_answer_is_a_protocol_error() -> None:
    """Bytes that are not HTTP raise RemoteProtocolError."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        await conn.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        return False

    async with Server(reply) as server, client_for(server) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/")


async def test_connection_refused_is_connect_error() -> None:
    """Nothing listening on the port raises httpx.ConnectError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = H11Transport()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")
    assert transport._open == 0


async def test_silent_server_is_read_timeout() -> None:
    """A server that never answers raises ReadTimeout within the read timeout."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        await asyncio.sleep(30)
        return False

    async with Server(reply) as server, client_for(server, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/")
        assert time.monotonic() - started < 2


async def test_unsupported_scheme_is_rejected() -> None:
    async with httpx.AsyncClient(transport=H11Transport()) as client:
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get("ftp://127.0.0.1/")


# --- the pool ---------------------------------------------------------------------------------


async def slow_echo(conn: Conn, request: Exchange) -> bool:
    await asyncio.sleep(0.02)
    return await echo(conn, request)


async def test_fifty_parallel_requests_are_all_answered() -> None:
    """Concurrent requests each get their own answer, and the connections are then pooled."""
    transport = H11Transport()
    async with Server(slow_echo) as server, client_for(server, transport) as client:
        responses = await asyncio.gather(*(client.get(f"/r{i}") for i in range(50)))
        assert [r.json()["path"] for r in responses] == [f"/r{i}" for i in range(50)]
        assert server.open_peak > 1
        assert transport._idle_count == 20  # the idle cap; the rest were closed
        again = await asyncio.gather(*(client.get(f"/s{i}") for i in range(10)))
    assert all(r.status_code == 200 for r in again)
    assert server.accepted == 50  # the second round reused pooled connections


async def test_connection_limit_makes_requests_wait() -> None:
    """With max_connections=3, twenty parallel requests share three connections."""
    transport = H11Transport(max_connections=3)
    async with Server(slow_echo) as server, client_for(server, transport) as client:
        responses = await asyncio.gather(*(client.get(f"/r{i}") for i in range(20)))
    assert [r.json()["path"] for r in responses] == [f"/r{i}" for i in range(20)]
    assert server.open_peak <= 3 and server.accepted == 3


async def test_pool_timeout() -> None:
    """No free connection within the pool timeout raises PoolTimeout."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        await asyncio.sleep(1)
        return await echo(conn, request)

    transport = H11Transport(max_connections=1)
    timeout = httpx.Timeout(5, pool=0.2)
    async with Server(reply) as server, client_for(server, transport, timeout=timeout) as client:
        busy = asyncio.create_task(client.get("/busy"))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await client.get("/waits")
        assert (await busy).json()["path"] == "/busy"
        assert (await client.get("/after")).json()["path"] == "/after"
    assert server.accepted == 1


async def test_cancelled_request_does_not_poison_the_pool() -> None:
    """A request cancelled while waiting for its answer closes its connection.

    Were the connection pooled, the next request would read the late answer to the cancelled one.
    """

    async def reply(conn: Conn, request: Exchange) -> bool:
        if request.path == "/slow":
            await asyncio.sleep(0.3)
        return await echo(conn, request)

    transport = H11Transport()
    async with Server(reply) as server, client_for(server, transport) as client:
        await client.get("/warm")
        slow = asyncio.create_task(client.get("/slow"))
        await asyncio.sleep(0.1)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert transport._open == 0 and transport._idle_count == 0
        for path in ("/fast", "/faster"):
            assert (await client.get(path)).json()["path"] == path
    assert server.accepted == 2


async def test_cancelled_waiter_passes_its_turn_on() -> None:
    """A request cancelled while waiting for a slot does not strand the requests behind it."""
    transport = H11Transport(max_connections=1)
    async with Server(slow_echo) as server, client_for(server, transport) as client:
        first = asyncio.create_task(client.get("/1"))
        await asyncio.sleep(0)
        doomed = asyncio.create_task(client.get("/2"))
        third = asyncio.create_task(client.get("/3"))
        await asyncio.sleep(0.005)
        doomed.cancel()
        assert (await first).json()["path"] == "/1"
        assert (await third).json()["path"] == "/3"
    assert doomed.cancelled()


async def test_aclose_closes_pooled_connections() -> None:
    """Closing the client closes its idle connections (the server sees them end)."""
    async with Server() as server:
        async with client_for(server) as client:
            await asyncio.gather(*(client.get("/") for _ in range(3)))
        for _ in range(50):
            if server.closed_by_client == server.accepted:
                break
            await asyncio.sleep(0.01)
        assert server.closed_by_client == server.accepted > 0


async def test_expired_idle_connection_is_not_reused() -> None:
    """An idle connection older than keepalive_expiry is closed instead of reused."""
    transport = H11Transport(keepalive_expiry=0.05)
    async with Server() as server, client_for(server, transport) as client:
        await client.get("/")
        await asyncio.sleep(0.1)
        await client.get("/")
    assert server.accepted == 2


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made by the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed, so no test certificate can be made")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


async def test_tls_without_verification(server_context: ssl.SSLContext) -> None:
    """verify=False talks to a self-signed server, over one kept-alive connection."""
    async with Server(context=server_context) as server:
        async with client_for(server, H11Transport(verify=False)) as client:
            assert (await client.get("/a")).json()["path"] == "/a"
            assert (await client.get("/b")).json()["path"] == "/b"
        assert server.accepted == 1


async def test_tls_with_ca_file_through_the_client(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    """A CA file given to TrueConfClient as verify= is trusted by its default transport."""
    cert, _ = certificate
    async with Server(context=server_context) as server:
        async with TrueConfClient(server.url, "mailhook", "secret", verify=str(cert)) as client:
            assert isinstance(client._http._transport, H11Transport)
            response = await client._http.get("/api/v3.11/ping")
        assert response.json()["path"] == "/api/v3.11/ping"
        # The same context built directly, for good measure.
        async with client_for(server, H11Transport(verify=_tls_verify(str(cert)))) as direct:
            assert (await direct.get("/x")).status_code == 200


async def test_tls_untrusted_certificate_is_connect_error(server_context: ssl.SSLContext) -> None:
    """verify=True refuses the self-signed certificate with httpx.ConnectError."""
    async with Server(context=server_context) as server:
        async with client_for(server, H11Transport(verify=True)) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get("/")
        async with TrueConfClient(server.url, "mailhook", "secret", timeout=5) as tc:
            with pytest.raises(TrueConfUnavailable) as caught:
                await tc.check()
        assert isinstance(caught.value.__cause__, httpx.ConnectError)


# --- through TrueConfClient against the stand-in ----------------------------------------------

SPEC = ConferenceSpec(
    topic="Transport check",
    owner="alice",
    invitees=(Invitee("bob", "Bob Baker"),),
    start=1767261600,
    duration=3600,
    role_based=False,
    max_participants=10,
    tag="mailhook-transport",
    description="",
    utc_offset_minutes=0,
)
USERS = [{"id": name, "email": f"{name}@example.com"} for name in ("alice", "bob")]


@pytest.mark.parametrize("version", ["v3.11", "v4"])
async def test_trueconf_client_uses_the_h11_transport_by_default(version: str) -> None:
    """Create, update and delete on the stand-in go through H11Transport, kept alive."""
    with StandIn(client_id="mailhook", client_secret="secret", users=USERS) as standin:
        async with TrueConfClient(standin.url, "mailhook", "secret", api_version=version) as client:
            transport = client._http._transport
            assert isinstance(transport, H11Transport)
            conference = await client.create_conference(SPEC)
            updated = await client.update_conference(conference.id, replace(SPEC, topic="Moved"))
            assert updated.id == conference.id
            assert standin.conferences[conference.id]["topic"] == "Moved"
            await client.delete_conference(conference.id)
            assert await client.get_conference(conference.id) is None
            assert standin.conferences == {}
            assert transport._open == 1  # every call shared one kept-alive connection


@pytest.mark.parametrize(
    ("environment", "lean"),
    [
        ({}, True),
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, False),
        ({"ALL_PROXY": "http://proxy.example:3128"}, False),
        ({"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "video.example.com"}, True),
        ({"HTTP_PROXY": "http://proxy.example:3128"}, True),  # only for http:// servers
    ],
)
async def test_a_server_behind_a_proxy_keeps_httpx_transport(monkeypatch, environment, lean) -> None:
    """The lean transport connects directly; where the environment routes TrueConf through a
    proxy, httpx's own transport (which honours the proxy settings) is kept."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
                 "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    client = TrueConfClient("https://video.example.com", "mailhook", "secret")
    try:
        assert isinstance(client._http._transport, H11Transport) is lean
    finally:
        await client.aclose()
