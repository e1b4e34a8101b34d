"""The daemon: set up the adapters, serve SMTP, and drain in order on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from typing import Any

from mailhook.config import Settings
from mailhook.core.decide import Policy
from mailhook.pipeline import Inbound, Outcome, Pipeline, PipelineConfig
from mailhook.relay import NextHop, Reply
from mailhook.smtp import Handler, MailhookSMTP, trusted_networks
from mailhook.store import SqliteStore
from mailhook.trueconf.client import TrueConfClient
from mailhook.trueconf.directory import Directory, LocalPartDirectory, UserListDirectory

log = logging.getLogger("mailhook")

DRAIN_TIMEOUT = 120.0  # seconds to let messages in flight finish after SIGTERM


def build_directory(settings: Settings, client: TrueConfClient) -> Directory:
    """The configured way to find TrueConf accounts for addresses."""
    if settings.trueconf.user_mapping == "local_part":
        return LocalPartDirectory(settings.policy.local_domains)
    return UserListDirectory(client, ttl=settings.trueconf.users_cache_ttl)


def build_client(settings: Settings) -> TrueConfClient:
    """The TrueConf API client for the configured server."""
    section = settings.trueconf
    verify: bool | str = section.ca_file or section.verify_tls
    return TrueConfClient(
        section.server_url,
        section.client_id,
        section.secret(),
        api_version=section.api_version,
        timeout=section.timeout,
        verify=verify,
    )


def pipeline_config(settings: Settings) -> PipelineConfig:
    """The pipeline's part of the settings."""
    policy = settings.policy
    return PipelineConfig(
        policy=Policy(
            local_domains=policy.local_domains,
            trigger=policy.trigger,
            keywords=policy.keywords,
            all_on_screen_limit=policy.all_on_screen_limit,
            max_participants=policy.max_participants,
        ),
        language=policy.language,
        notices=settings.notice.enabled,
        notice_sender=settings.notice_sender(),
    )


class Daemon:
    """mailhook serve: startup, serve and shutdown as separate steps."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = SqliteStore(settings.store.path)
        self.client = build_client(settings)
        self.next_hop = NextHop(settings.relay)
        self.pipeline = Pipeline(
            pipeline_config(settings), self.store, self.client, build_directory(settings, self.client)
        )
        self.handler = Handler(self.pipeline.process, self.next_hop, self._delivered)
        self.server: asyncio.AbstractServer | None = None
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    async def startup(self) -> None:
        """Open the store and the listening socket."""
        await self.store.open()
        smtp = self.settings.smtp
        trusted = trusted_networks(smtp.trusted_networks)
        hostname = smtp.hostname or socket.getfqdn()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: MailhookSMTP(
                self.handler,
                trusted,
                hostname=hostname,
                data_size_limit=smtp.max_message_size,
                timeout=smtp.timeout,
                enable_SMTPUTF8=True,
                ident="mailhook",
            ),
            host=smtp.listen_host,
            port=smtp.listen_port,
            reuse_address=True,
        )
        log.info("listening on %s:%s, next hop %s:%s", smtp.listen_host, smtp.listen_port,
                 self.settings.relay.host, self.settings.relay.port)

    @property
    def port(self) -> int:
        """The port actually bound (useful when listen_port is 0)."""
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self) -> None:
        """Serve until stop() is called or SIGTERM/SIGINT arrives."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self.stop)
            except (NotImplementedError, RuntimeError):
                pass
        await self._stopping.wait()

    def stop(self) -> None:
        """Ask the daemon to shut down."""
        self._stopping.set()

    async def shutdown(self) -> None:
        """Stop accepting, let messages in flight finish, then close adapters in order."""
        if self.server is not None:
            self.server.close()
        try:
            await asyncio.wait_for(self.handler.idle.wait(), DRAIN_TIMEOUT)
        except TimeoutError:
            log.warning("%d message(s) still in flight at shutdown", self.handler.in_flight)
        if self._background:
            await asyncio.wait(self._background, timeout=30)
        await self.client.aclose()
        await self.store.close()
        log.info("stopped")

    async def _delivered(self, inbound: Inbound, outcome: Outcome, reply: Reply, started: float) -> None:
        log_summary(inbound, outcome, reply, started)
        if outcome.notice is not None and reply.ok:
            task = asyncio.get_running_loop().create_task(self._send_notice(outcome))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _send_notice(self, outcome: Outcome) -> None:
        assert outcome.notice is not None and outcome.decision.invitation is not None
        organizer = outcome.decision.invitation.organizer
        reply = await self.next_hop.send("", [organizer], outcome.notice)
        if not reply.ok:
            log.warning("organizer notice to %s not accepted: %s", organizer, reply)


def log_summary(inbound: Inbound, outcome: Outcome, reply: Reply, started: float) -> None:
    """One key=value line per message, for the journal."""
    fields = {
        "message_id": outcome.message_id or "-",
        "from": inbound.mail_from or "<>",
        "rcpts": str(len(inbound.rcpt_tos)),
        "method": outcome.method or "-",
        "uid": outcome.uid or "-",
        "decision": str(outcome.decision.action),
        "reason": outcome.decision.reason,
        "conference": outcome.conference_id or "-",
        "reply": str(reply),
        "ms": str(int((time.monotonic() - started) * 1000)),
        **outcome.fields,
    }
    log.info(" ".join(f"{key}={_quote(value)}" for key, value in fields.items()))


def _quote(value: str) -> str:
    value = value.replace("\r", " ").replace("\n", " ")
    if not value or any(ch in value for ch in ' "='):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


async def run(settings: Settings) -> int:
    """Run the daemon until told to stop; the exit status."""
    daemon = Daemon(settings)
    try:
        await daemon.startup()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.smtp.listen_host,
                  settings.smtp.listen_port, exc.strerror or exc)
        await daemon.client.aclose()
        await daemon.store.close()
        return 1
    try:
        await daemon.serve()
    finally:
        await daemon.shutdown()
    return 0
