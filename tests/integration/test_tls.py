"""STARTTLS on both SMTP sides: offered (or required) on the listener, used (or required, with
the certificate checked) towards the next hop. Certificates are made by the openssl command."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from mailhook.testing.sink import Sink
from tests.integration.conftest import send
from tests.support.invites import Event, thunderbird


def make_certificate(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed, so no test certificate can be made")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=IP:127.0.0.1,DNS:{name}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_path)


def client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


async def send_over_tls(port: int, raw: bytes, cert: Path) -> tuple[int, str]:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30, start_tls=False)
    await client.connect()
    try:
        await client.ehlo()
        assert client.supports_extension("starttls")
        await client.starttls(tls_context=client_context(cert))
        await client.ehlo()
        await client.mail("alice@example.com")
        await client.rcpt("bob@example.com")
        response = await client.data(raw)
        return response.code, response.message
    finally:
        await client.quit()


async def test_listener_offers_starttls(start_daemon, sink, standin, certificate):
    """With a certificate configured the listener offers STARTTLS, and invitations sent over
    it get their conference and go on; a connection is counted once however it is secured
    (one allowed connection serves session after session)."""
    cert, key = certificate
    daemon = await start_daemon(smtp={"tls_cert_file": str(cert), "tls_key_file": str(key),
                                      "max_connections": 1})
    for number in range(3):
        raw = thunderbird(Event(uid=f"tls-{number}@example.com"))
        assert (await send_over_tls(daemon.port, raw, cert))[0] == 250
    assert (await send(daemon, thunderbird(Event(uid="plain@example.com"))))[0] == 250
    assert len(standin.conferences) == 4
    assert sum(1 for m in sink.messages if b"tls-" in m.content) == 3


async def test_a_large_message_over_tls_is_read_whole(start_daemon, sink, certificate):
    """A message of several megabytes sent over STARTTLS arrives whole at the next hop."""
    cert, key = certificate
    daemon = await start_daemon(smtp={"tls_cert_file": str(cert), "tls_key_file": str(key)})
    body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 6000
    assert (await send_over_tls(daemon.port, body, cert))[0] == 250
    assert sink.messages[-1].content.count(b"x" * 998) == 6000


async def test_listener_requires_tls_when_told(start_daemon, certificate):
    """With smtp.require_tls a client that did not STARTTLS cannot give a sender; one that
    did can send."""
    cert, key = certificate
    daemon = await start_daemon(smtp={"tls_cert_file": str(cert), "tls_key_file": str(key),
                                      "require_tls": True})
    code, text = await send(daemon, thunderbird(Event()))
    assert code == 530 and "STARTTLS" in text
    assert (await send_over_tls(daemon.port, thunderbird(Event()), cert))[0] == 250


async def test_trusted_networks_still_apply_with_tls(start_daemon, certificate):
    """A client outside smtp.trusted_networks is refused at connect, TLS or not."""
    cert, key = certificate
    daemon = await start_daemon(smtp={"tls_cert_file": str(cert), "tls_key_file": str(key),
                                      "trusted_networks": ["10.0.0.0/8"]})
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.port, timeout=10, start_tls=False)
    with pytest.raises(aiosmtplib.SMTPConnectError) as refused:
        await client.connect()
    assert "554" in str(refused.value) or refused.value.code == 554


@pytest.fixture
def tls_sink(tmp_path: Path) -> Iterator[tuple[Sink, Path]]:
    """A next hop offering STARTTLS with a certificate for "relay.test"."""
    cert, key = make_certificate(tmp_path, "relay.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with Sink(tls_context=context) as server:
        yield server, cert


@pytest.mark.parametrize("mode", ["opportunistic", "required"])
async def test_relay_uses_starttls(start_daemon, tls_sink, mode):
    """relay.tls "opportunistic" and "required" hand the message on over STARTTLS (required
    checks the certificate against relay.ca_file and relay.tls_name)."""
    sink, cert = tls_sink
    daemon = await start_daemon(relay={"host": sink.host, "port": sink.port, "tls": mode,
                                       "ca_file": str(cert), "tls_name": "relay.test"})
    assert (await send(daemon, thunderbird(Event())))[0] == 250
    assert [m.tls for m in sink.messages] == [True]


async def test_required_tls_refuses_a_certificate_it_cannot_check(start_daemon, tls_sink,
                                                                   tmp_path):
    """relay.tls "required" answers 451 (mail stays queued) when the next hop's certificate is
    not signed by relay.ca_file, and sends nothing in the clear."""
    sink, _ = tls_sink
    other, _ = make_certificate(tmp_path, "other.test")
    daemon = await start_daemon(relay={"host": sink.host, "port": sink.port, "tls": "required",
                                       "ca_file": str(other), "tls_name": "relay.test"})
    assert (await send(daemon, thunderbird(Event())))[0] == 451
    assert sink.messages == []


async def test_required_tls_refuses_a_next_hop_without_starttls(start_daemon, sink):
    """relay.tls "required" answers 451 when the next hop does not offer STARTTLS;
    "opportunistic" then sends in the clear."""
    daemon = await start_daemon(relay={"tls": "required"})
    assert (await send(daemon, thunderbird(Event())))[0] == 451
    assert sink.messages == []
    plain = await start_daemon(relay={"tls": "opportunistic"})
    assert (await send(plain, thunderbird(Event())))[0] == 250
    assert [m.tls for m in sink.messages] == [False]
