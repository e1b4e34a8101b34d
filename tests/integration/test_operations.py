"""Running mailhook as a mail admin does: XFORWARD, log lines, metrics, health, reload, notify."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiosmtplib
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from mailhook import logfmt
from mailhook.daemon import Daemon
from mailhook.notify import Notifier
from mailhook.testing.sink import Sink, SinkHandler
from tests.integration.conftest import send, settings_for
from tests.support.invites import Event, thunderbird
from tests.support.process import free_port

SECRET = "s3cret-value"  # what the conftest stand-in accepts
METRICS = {"listen_port": 0, "health_cache": 60.0}


class XforwardSinkHandler(SinkHandler):
    """A next hop that announces XFORWARD and records what it was told."""

    def __init__(self) -> None:
        super().__init__()
        self.xforward: list[str] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        """Announce XFORWARD like Postfix's smtpd does for authorized clients."""
        session.host_name = hostname
        return [*responses[:-1], "250-XFORWARD NAME ADDR PROTO HELO IDENT SOURCE", responses[-1]]


class XforwardSMTP(SMTP):
    """Accepts XFORWARD and hands its argument to the handler."""

    async def smtp_XFORWARD(self, arg: str) -> None:
        """Record the attributes."""
        self.event_handler.xforward.append(arg)
        await self.push("250 2.0.0 Ok")


class XforwardController(Controller):
    """Serves XforwardSMTP."""

    def factory(self) -> SMTP:
        """The SMTP protocol instance for each connection."""
        return XforwardSMTP(self.handler, **self.SMTP_kwargs)


async def session(daemon: Daemon) -> aiosmtplib.SMTP:
    """An SMTP client connected to the daemon, after EHLO."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.port, timeout=30, start_tls=False)
    await client.connect()
    await client.ehlo()
    return client


async def test_xforward_is_advertised_logged_and_passed_on(standin, tmp_path, caplog):
    """XFORWARD is announced and accepted; the queue id and client reach the log and the next hop."""
    handler = XforwardSinkHandler()
    hop_port = free_port()
    hop = XforwardController(handler, hostname="127.0.0.1", port=hop_port)
    hop.start()
    try:
        settings = settings_for(standin, Sink(), tmp_path, relay={"port": hop_port},
                                metrics={"enabled": False})
        daemon = Daemon(settings)
        await daemon.startup()
        try:
            client = await session(daemon)
            assert "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE" in client.last_ehlo_response.message
            for command in (b"NAME=mua.example.com ADDR=192.0.2.7 PORT=50123",
                            b"PROTO=ESMTPSA HELO=[192.0.2.7] IDENT=4XyZ12abC SOURCE=REMOTE"):
                assert (await client.execute_command(b"XFORWARD", command)).code == 250
            assert (await client.execute_command(b"XFORWARD", b"COLOUR=blue")).code == 501
            caplog.set_level(logging.INFO, logger="mailhook")
            await client.sendmail("alice@example.com", ["bob@example.com"], thunderbird(Event()))
            await client.mail("alice@example.com")
            in_transaction = await client.execute_command(b"XFORWARD", b"IDENT=late")
            assert in_transaction.code == 503
            await client.quit()
        finally:
            await daemon.shutdown()
    finally:
        hop.stop()
    [summary] = [r.getMessage() for r in caplog.records if "decision=" in r.getMessage()]
    assert summary.startswith("queue_id=4XyZ12abC client=mua.example.com[192.0.2.7] ")
    passed_on = " ".join(handler.xforward)
    assert "IDENT=4XyZ12abC" in passed_on and "ADDR=192.0.2.7" in passed_on
    assert "PORT=" not in passed_on  # this next hop does not announce PORT


async def test_xforward_attributes_end_with_the_transaction(start_daemon, sink, caplog):
    """A second message on the same connection does not inherit the first one's XFORWARD."""
    daemon = await start_daemon(metrics={"enabled": False})
    caplog.set_level(logging.INFO, logger="mailhook")
    client = await session(daemon)
    await client.execute_command(b"XFORWARD", b"IDENT=FIRST1 NAME=a.example ADDR=192.0.2.1")
    plain = b"Subject: hi\r\nMessage-ID: <p1@example.com>\r\n\r\nhello\r\n"
    await client.sendmail("carol@example.com", ["bob@example.com"], plain)
    await client.sendmail("carol@example.com", ["bob@example.com"], plain)
    await client.quit()
    lines = [r.getMessage() for r in caplog.records if "decision=" in r.getMessage()]
    assert lines[0].startswith("queue_id=FIRST1 client=a.example[192.0.2.1] ")
    assert lines[1].startswith("queue_id=- client=- ")


async def test_warnings_carry_the_message_keys_and_no_secret(start_daemon, standin, caplog):
    """A warning while handling a message names its queue id and Message-ID, never the secret."""
    daemon = await start_daemon(metrics={"enabled": False})
    caplog.set_level(logging.INFO)
    standin.fail_next(10, 503)
    client = await session(daemon)
    await client.execute_command(b"XFORWARD", b"IDENT=WARN42 NAME=mua.example ADDR=192.0.2.9")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await client.sendmail("alice@example.com", ["bob@example.com"],
                              thunderbird(Event(), message_id="<warn-1@example.com>"))
    assert refused.value.code == 451
    await client.quit()
    formatter = logfmt.Formatter()
    warnings = [formatter.format(r) for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings and all("queue_id=WARN42" in line for line in warnings)
    assert all("message_id=<warn-1@example.com>" in line for line in warnings)
    logged = "\n".join(formatter.format(r) for r in caplog.records)
    assert SECRET not in logged and "decision=create" in logged and "queue_id=WARN42" in logged


async def test_metrics_count_messages_trueconf_calls_and_conferences(start_daemon, standin):
    """/metrics counts messages by method, decision and outcome, TrueConf latency and errors."""
    daemon = await start_daemon(metrics=METRICS)
    assert (await send(daemon, thunderbird(Event())))[0] == 250
    standin.fail_next(5, 503)
    other = Event(uid="second@example.com")
    assert (await send(daemon, thunderbird(other, message_id="<m2@example.com>")))[0] == 451
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{daemon.status_server.port}/metrics")
    assert response.status_code == 200
    text = response.text
    assert 'mailhook_messages_total{decision="create",method="REQUEST",outcome="relayed"} 1.0' in text
    assert 'mailhook_messages_total{decision="create",method="REQUEST",outcome="deferred"} 1.0' in text
    assert 'mailhook_trueconf_request_seconds_count{operation="create_conference"} 2.0' in text
    assert 'mailhook_trueconf_errors_total{kind="unavailable",operation="create_conference"} 1.0' in text
    assert "mailhook_conferences_tracked 1.0" in text
    assert "mailhook_pending_retries 1.0" in text  # the second event's create is owed


async def test_healthz_pings_store_trueconf_and_next_hop(start_daemon, standin):
    """/healthz answers 200 when every dependency answers, 503 naming the one that does not."""
    hop = Sink().start()
    daemon = await start_daemon(metrics=METRICS, relay={"port": hop.port})
    url = f"http://127.0.0.1:{daemon.status_server.port}/healthz"
    async with httpx.AsyncClient() as http:
        healthy = await http.get(url)
        again = await http.get(url)
        tokens = [r for r in standin.requests if r.path == "/oauth2/v1/token"]
        hop.stop()
        broken = await http.get(url)
    assert healthy.status_code == 200 and healthy.json()["status"] == "ok"
    assert set(healthy.json()["checks"]) == {"store", "trueconf", "next_hop"}
    assert again.status_code == 200 and len(tokens) == 1  # the token check was reused
    assert broken.status_code == 503
    checks = broken.json()["checks"]
    assert not checks["next_hop"]["ok"] and checks["store"]["ok"] and checks["trueconf"]["ok"]
    assert SECRET not in broken.text


async def test_metrics_port_in_use_does_not_stop_mail(start_daemon):
    """A metrics port already taken is logged; mail still flows."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = await start_daemon(metrics={"listen_port": port})
        assert daemon.status_server is None
        assert (await send(daemon, b"Subject: hi\r\n\r\nhello\r\n"))[0] == 250


async def test_reload_applies_policy_and_keeps_old_config_when_bad(standin, sink, tmp_path, caplog):
    """A reload takes a new keyword; a broken file is refused and the running config kept."""
    config = tmp_path / "mailhook.toml"
    base = f"""
[smtp]
listen_port = 0
[relay]
port = {sink.port}
[trueconf]
server_url = "{standin.url}"
client_id = "mailhook"
client_secret = "{SECRET}"
[store]
path = "{tmp_path / 'state.sqlite3'}"
[metrics]
enabled = false
"""
    config.write_text(base + '[policy]\nlocal_domains = ["example.com"]\n')
    from mailhook.config import load_settings

    daemon = Daemon(load_settings(config), config_file=config)
    await daemon.startup()
    try:
        video = Event(uid="video@example.com", location="Videocall")
        await send(daemon, thunderbird(video))
        assert not standin.conferences  # "Videocall" is not a keyword yet
        config.write_text(base + '[policy]\nlocal_domains = ["example.com"]\n'
                          'keywords = ["TrueConf", "Videocall"]\n[smtp]\nlisten_port = 1\n')
        assert not await daemon.reload()  # [smtp] twice: not valid TOML
        assert "keeping the running configuration" in caplog.text
        config.write_text(base.replace("listen_port = 0", "listen_port = 2525")
                          + '[policy]\nlocal_domains = ["example.com"]\n'
                          'keywords = ["TrueConf", "Videocall"]\n')
        assert await daemon.reload()
        assert "[smtp] changed; restart mailhook to apply it" in caplog.text
        await send(daemon, thunderbird(video, message_id="<v2@example.com>"))
        assert len(standin.conferences) == 1
        assert daemon.settings.smtp.listen_port == 0  # still the socket it is bound to
    finally:
        await daemon.shutdown()


async def test_reload_reads_a_rotated_secret_file(standin, sink, tmp_path):
    """A reload re-reads client_secret_file, so a rotated credential is used from then on."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("wrong-secret")
    settings = settings_for(standin, sink, tmp_path, metrics={"enabled": False},
                            trueconf={"client_secret": "", "client_secret_file": str(secret_file)})
    config = tmp_path / "mailhook.toml"
    config.write_text(f"""
[smtp]
listen_port = 0
[relay]
port = {sink.port}
[trueconf]
server_url = "{standin.url}"
client_id = "mailhook"
client_secret_file = "{secret_file}"
[policy]
local_domains = ["example.com"]
[store]
path = "{tmp_path / 'state' / 'mailhook.sqlite3'}"
[metrics]
enabled = false
""")
    daemon = Daemon(settings, config_file=config)
    await daemon.startup()
    try:
        assert not (await daemon.health.trueconf()).ok
        secret_file.write_text(SECRET)
        assert await daemon.reload()
        assert (await daemon.health.trueconf()).ok
        assert (await send(daemon, thunderbird(Event())))[0] == 250
        assert len(standin.conferences) == 1
    finally:
        await daemon.shutdown()


async def test_serve_notifies_ready_status_watchdog_and_stopping(standin, sink, tmp_path):
    """Under systemd the daemon sends READY, STATUS and WATCHDOG pings, then STOPPING."""
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(address)
        manager.setblocking(False)
        notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
        daemon = Daemon(settings_for(standin, sink, tmp_path, metrics={"enabled": False}),
                        notifier=notifier)
        await daemon.startup()
        serving = asyncio.get_running_loop().create_task(daemon.serve())
        datagrams: list[str] = []
        for _ in range(10):  # read as systemd does, while the daemon runs for 0.5 s
            await asyncio.sleep(0.05)
            datagrams += received(manager)
        daemon.stop()
        await serving
        await daemon.shutdown()
        datagrams += received(manager)
    assert datagrams[0].startswith("READY=1\nSTATUS=0 message(s)")
    assert sum(d == "WATCHDOG=1" for d in datagrams) >= 3  # every 0.1 s for 0.5 s
    assert any(d.startswith("STATUS=") and "conference(s) tracked" in d for d in datagrams)
    assert datagrams[-1].startswith("STOPPING=1")



def received(manager: socket.socket) -> list[str]:
    """Every datagram waiting on the (non-blocking) socket."""
    datagrams = []
    while True:
        try:
            datagrams.append(manager.recv(4096).decode())
        except BlockingIOError:
            return datagrams
