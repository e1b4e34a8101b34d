"""The real daemon on loopback, with the TrueConf stand-in and a sink SMTP server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from mailhook.config import Settings
from mailhook.daemon import Daemon
from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn

ROOT = Path(__file__).resolve().parents[2]
USERS = json.loads((ROOT / "config" / "standin-users.json").read_text())


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """A TrueConf API stand-in that knows the example users."""
    with StandIn(users=USERS, client_id="mailhook", client_secret="s3cret-value") as server:
        yield server


@pytest.fixture
def sink() -> Iterator[Sink]:
    """The next hop: keeps every message it accepts."""
    with Sink() as server:
        yield server


def settings_for(standin: StandIn, sink: Sink, tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """Settings pointing at the stand-in and the sink, listening on a free port."""
    data: dict[str, Any] = {
        "smtp": {"listen_host": "127.0.0.1", "listen_port": 0, "hostname": "mailhook.test"},
        "relay": {"host": sink.host, "port": sink.port, "timeout": 10},
        "trueconf": {
            "server_url": standin.url,
            "client_id": "mailhook",
            "client_secret": "s3cret-value",
            "api_version": "v3.11",
            "timeout": 5,
        },
        "policy": {"local_domains": ["example.com"]},
        "store": {"path": str(tmp_path / "state" / "mailhook.sqlite3")},
        "metrics": {"listen_port": 0},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return Settings(**data)


@pytest.fixture
async def start_daemon(
    standin: StandIn, sink: Sink, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Start the daemon (sections override settings); every daemon started is shut down."""
    started: list[Daemon] = []

    async def start(clock: Callable[[], Any] | None = None, **sections: dict[str, Any]) -> Daemon:
        daemon = Daemon(settings_for(standin, sink, tmp_path, **sections), clock=clock)
        await daemon.startup()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        await daemon.shutdown()


@pytest.fixture
async def daemon(start_daemon: Callable[..., Any]) -> Daemon:
    """The daemon on its default test settings (API v3.11)."""
    return await start_daemon()


async def send(
    daemon: Daemon, raw: bytes, sender: str = "alice@example.com",
    rcpts: tuple[str, ...] = ("bob@example.com",), timeout: float = 30,
) -> tuple[int, str]:
    """Send one message to the daemon (anything with a ``port``); return the final reply
    (code, text)."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.port, timeout=timeout,
                             start_tls=False)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail(sender)
        for rcpt in rcpts:
            await client.rcpt(rcpt)
        response = await client.data(raw)
        return response.code, response.message
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()
