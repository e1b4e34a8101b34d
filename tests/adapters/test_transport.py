"""TrueConfClient over httpx's own transport and real loopback sockets: what users see of its
connections (keep-alive, requests never sent twice, timeouts, TLS, proxies)."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from mailhook.core.model import ConferenceSpec, Invitee
from mailhook.errors import TemporaryError, TrueConfUnavailable
from mailhook.trueconf import client as client_module
from mailhook.trueconf.client import TrueConfClient

SECRET = "transport-test-secret"
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

# --- a scriptable HTTP server -----------------------------------------------------------------


class Exchange:
    """One request as the test server read it."""

    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.target = target  # as sent: a path, or an absolute URL when sent to a proxy
        self.path = urlsplit(target).path
        self.headers = headers
        self.body = body


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
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Exchange(method, target, headers, body)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


# Answers one request; True keeps the connection for another request, False closes it.
Reply = Callable[[Conn, Exchange], Awaitable[bool]]


def answer(body: bytes = b'{"ok": true}', status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return f"{head}\r\n\r\n".encode() + body


def trueconf_answer(request: Exchange) -> bytes:
    """What a TrueConf Server answers to the client's requests, in brief."""
    if request.path.endswith("/token"):
        return answer(b'{"access_token": "token-1", "expires_in": 3600}')
    if request.method == "DELETE":
        return answer(b"", "204 No Content")
    conference = {"id": "4000", "url": "https://video.example.com/c/4000", "topic": SPEC.topic}
    return answer(json.dumps({"conference": conference}).encode())


async def trueconf(conn: Conn, request: Exchange) -> bool:
    await conn.send(trueconf_answer(request))
    return True


class Server:
    """An asyncio HTTP server on 127.0.0.1 answering each request through ``reply``."""

    def __init__(self, reply: Reply = trueconf, *, context: ssl.SSLContext | None = None) -> None:
        self.reply = reply
        self.context = context
        self.accepted = 0
        self.requests: list[Exchange] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        scheme = "https" if self.context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def sent(self, method: str) -> list[Exchange]:
        return [request for request in self.requests if request.method == method]

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
        try:
            while (request := await conn.read_request()) is not None:
                self.requests.append(request)
                keep = await self.reply(conn, request)
                conn.served += 1
                if not keep:
                    break
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


def client_for(server: Server, **options) -> TrueConfClient:
    return TrueConfClient(server.url, "mailhook", SECRET, **options)


def closes_after_reading(method: str) -> Reply:
    """A server that reads every ``method`` request and closes the connection unanswered (as
    when its idle timer fires just as the request arrives); it answers everything else."""

    async def reply(conn: Conn, request: Exchange) -> bool:
        if request.method == method:
            return False
        return await trueconf(conn, request)

    return reply


# --- keep-alive and requests never sent twice -------------------------------------------------


@pytest.mark.parametrize("version", ["v3.11", "v4"])
async def test_calls_share_one_kept_alive_connection(version: str) -> None:
    """Token, create, update, read and delete travel over a single TCP connection."""
    async with Server() as server, client_for(server, api_version=version) as client:
        conference = await client.create_conference(SPEC)
        await client.update_conference(conference.id, replace(SPEC, topic="Moved"))
        assert await client.get_conference(conference.id) == conference
        await client.delete_conference(conference.id)
    assert [r.method for r in server.requests] == [
        "POST", "POST", "PATCH" if version == "v4" else "PUT", "GET", "DELETE"]
    assert server.accepted == 1


async def test_a_post_the_server_took_is_never_sent_twice() -> None:
    """A create read by the server on a kept-alive connection that then closed unanswered may
    have made a conference: it is not sent again, and the failure is temporary (451)."""
    async with Server(closes_after_reading("POST")) as server, client_for(server) as client:
        with pytest.raises(TrueConfUnavailable):
            await client.check()  # the token request (a POST) is refused the same way
    assert len(server.sent("POST")) == 1

    async def token_then_close(conn: Conn, request: Exchange) -> bool:
        if request.path.endswith("/conferences"):
            return False
        return await trueconf(conn, request)

    async with Server(token_then_close) as server, client_for(server) as client:
        await client.check()  # the connection is kept alive and reused for the create
        with pytest.raises(TrueConfUnavailable) as caught:
            await client.create_conference(SPEC)
    assert isinstance(caught.value, TemporaryError)
    assert [r.path for r in server.sent("POST")] == ["/oauth2/v1/token", "/api/v3.11/conferences"]


async def test_a_post_cut_off_mid_answer_is_never_sent_twice() -> None:
    """A server that closes in the middle of its answer to a create gets the create once."""

    async def cut(conn: Conn, request: Exchange) -> bool:
        if request.path.endswith("/conferences"):
            await conn.send(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"conference":')
            return False
        return await trueconf(conn, request)

    async with Server(cut) as server, client_for(server) as client:
        with pytest.raises(TrueConfUnavailable):
            await client.create_conference(SPEC)
    assert len([r for r in server.requests if r.path.endswith("/conferences")]) == 1


async def test_a_patch_the_server_took_is_never_sent_twice() -> None:
    """An update on the v4 API (PATCH) is not repeated after a connection closed unanswered."""
    async with Server(closes_after_reading("PATCH")) as server:
        async with client_for(server, api_version="v4") as client:
            with pytest.raises(TrueConfUnavailable):
                await client.update_conference("4000", SPEC)
    assert len(server.sent("PATCH")) == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_an_idempotent_request_is_sent_once_more_on_a_new_connection(method: str) -> None:
    """A read, a v3 update (PUT) or a delete whose connection closed unanswered goes out again,
    once, on a fresh connection: repeating it is harmless."""

    async def first_closes(conn: Conn, request: Exchange) -> bool:
        if request.method == method and len(server.sent(method)) == 1:
            return False
        return await trueconf(conn, request)

    async with Server(first_closes) as server, client_for(server) as client:
        if method == "GET":
            assert (await client.get_conference("4000")).id == "4000"
        elif method == "PUT":
            assert (await client.update_conference("4000", SPEC)).id == "4000"
        else:
            await client.delete_conference("4000")
    assert len(server.sent(method)) == 2
    assert server.accepted == 2


async def test_an_idempotent_request_is_repeated_only_once() -> None:
    """When the second connection closes unanswered too, the failure is temporary (451)."""
    async with Server(closes_after_reading("GET")) as server, client_for(server) as client:
        with pytest.raises(TrueConfUnavailable) as caught:
            await client.get_conference("4000")
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert len(server.sent("GET")) == 2


# --- timeouts ---------------------------------------------------------------------------------


async def test_a_silent_server_is_a_temporary_error_within_the_timeout() -> None:
    """A server that never answers raises TrueConfUnavailable after trueconf.timeout."""

    async def silent(conn: Conn, request: Exchange) -> bool:
        await asyncio.sleep(30)
        return False

    async with Server(silent) as server, client_for(server, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(TrueConfUnavailable) as caught:
            await client.check()
        assert time.monotonic() - started < 5
    assert isinstance(caught.value, TemporaryError)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert len(server.requests) == 1


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


async def test_tls_with_a_ca_file(certificate, server_context: ssl.SSLContext) -> None:
    """trueconf.ca_file naming the server's CA lets the client in, over one connection."""
    cert, _ = certificate
    async with Server(context=server_context) as server:
        async with client_for(server, verify=str(cert)) as client:
            assert (await client.create_conference(SPEC)).id == "4000"
            assert (await client.get_conference("4000")).id == "4000"
    assert server.accepted == 1


async def test_tls_untrusted_certificate_is_a_temporary_error(
    server_context: ssl.SSLContext,
) -> None:
    """verify_tls = true refuses a self-signed certificate: TrueConfUnavailable, nothing sent."""
    async with Server(context=server_context) as server, client_for(server, timeout=5) as client:
        with pytest.raises(TrueConfUnavailable) as caught:
            await client.check()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert server.requests == []


async def test_tls_without_verification(server_context: ssl.SSLContext) -> None:
    """verify_tls = false talks to a server with a self-signed certificate."""
    async with Server(context=server_context) as server, client_for(server, verify=False) as client:
        assert (await client.create_conference(SPEC)).id == "4000"


async def test_tls_checks_against_the_system_trust_store(
    monkeypatch: pytest.MonkeyPatch, certificate, server_context: ssl.SSLContext
) -> None:
    """verify_tls = true checks certificates with ssl.create_default_context() (the system's
    trust store), not with certifi's bundle: a CA added there is trusted."""
    cert, _ = certificate
    made: list[ssl.SSLContext] = []

    class SystemSsl:
        """The ssl module as the client sees it, with the test CA in the default store."""

        def __getattr__(self, name: str):
            return getattr(ssl, name)

        def create_default_context(self, *args, **kwargs) -> ssl.SSLContext:
            context = ssl.create_default_context(*args, **kwargs)
            context.load_verify_locations(cafile=str(cert))  # as if installed system-wide
            made.append(context)
            return context

    monkeypatch.setattr(client_module, "ssl", SystemSsl())
    async with Server(context=server_context) as server, client_for(server) as client:
        assert (await client.create_conference(SPEC)).id == "4000"
    assert len(made) == 1


# --- proxies ----------------------------------------------------------------------------------


@pytest.fixture
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
                 "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def test_http_proxy_from_the_environment_is_used(no_proxy_environment) -> None:
    """With HTTP_PROXY set, requests for TrueConf go to the proxy, asking for TrueConf's URL."""
    async with Server() as proxy:
        no_proxy_environment.setenv("HTTP_PROXY", proxy.url)
        url = "http://trueconf.invalid:8090"
        async with TrueConfClient(url, "mailhook", SECRET) as client:
            assert (await client.create_conference(SPEC)).id == "4000"
    assert [r.target for r in proxy.requests] == [
        f"{url}/oauth2/v1/token", f"{url}/api/v3.11/conferences"]


async def test_no_proxy_sends_trueconf_directly(no_proxy_environment) -> None:
    """A TrueConf address listed in NO_PROXY is reached directly, not through HTTPS_PROXY."""
    async with Server() as proxy, Server() as direct:
        no_proxy_environment.setenv("HTTP_PROXY", proxy.url)
        no_proxy_environment.setenv("NO_PROXY", "127.0.0.1")
        async with client_for(direct) as client:
            assert (await client.create_conference(SPEC)).id == "4000"
    assert proxy.requests == []
    assert len(direct.requests) == 2
