"""The daemon: set up the adapters, serve SMTP, and drain in order on SIGTERM.

Under systemd it reports READY, STATUS, WATCHDOG and STOPPING, and re-reads its config on
SIGHUP (see ``Daemon.reload`` for what a reload changes).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailhook import logfmt
from mailhook.config import ConfigError, Settings, SmtpSettings, load_settings
from mailhook.errors import StoreUnavailable
from mailhook.health import Health
from mailhook.metrics import InstrumentedTrueConf, Metrics, outcome_of, shared_totals
from mailhook.notify import Notifier
from mailhook.core.decide import Policy
from mailhook.locks import EventLocks, KeyedLocks, lock_path
from mailhook.pipeline import Inbound, Outcome, Pipeline, PipelineConfig, UnsentLinks
from mailhook.relay import NextHop, Reply
from mailhook.smtp import (
    ConnectionLimit,
    Handler,
    MailhookSMTP,
    Upstream,
    quiet_accept_errors,
    trusted_networks,
)
from mailhook.status import StatusServer
from mailhook.store import SqliteStore
from mailhook.trueconf.client import TrueConfClient
from mailhook.trueconf.directory import Directory, LocalPartDirectory, UserListDirectory

log = logging.getLogger("mailhook")

DRAIN_TIMEOUT = 120.0  # seconds to let messages in flight finish after SIGTERM
STATUS_INTERVAL = 30.0  # seconds between STATUS updates when systemd asks for no watchdog
# Sections a reload (SIGHUP) applies; a change anywhere else is logged as needing a restart.
RELOADABLE = frozenset({"log", "policy", "notice", "recurrence", "trueconf"})


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


def event_locks(settings: Settings, create: bool = True) -> EventLocks | KeyedLocks:
    """The per-event locks shared by every process using the store (worker processes, admin
    commands); in-process ones when the lock file cannot be had (a store in memory, or with
    ``create`` False, no daemon has made the file yet)."""
    path = settings.store.path
    if path == ":memory:":
        return KeyedLocks()
    try:
        if create:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return EventLocks.for_path(lock_path(path), create=create)
    except OSError as exc:
        if create or not isinstance(exc, FileNotFoundError):
            log.warning("cannot open the lock file %s (%s); locking within this process only",
                        lock_path(path), exc.strerror or exc)
        return KeyedLocks()


FILES_PER_CONNECTION = 2  # the client's socket and, during a transaction, the next hop's
# Open files a process needs besides its connections: standard streams, the event loop, the
# listening and metrics sockets, the store and its lock file, and up to 100 connections to
# TrueConf Server (the API client's pool); the next hop's idle sessions are added to these.
FILES_RESERVED = 160


def connection_cap(smtp: SmtpSettings, pool_size: int, warn: bool = True) -> int:
    """smtp.max_connections, or fewer when the open-files limit cannot hold that many.

    The soft limit is first raised as far as needed and the hard limit allows (what systemd
    advises programs that need many files to do); a client turned away with 421 comes back
    later, while one accepted past the limit would fail in the middle of its transaction.
    """
    wanted = smtp.max_connections * FILES_PER_CONNECTION + FILES_RESERVED + pool_size
    files = _raise_open_files(wanted)
    if files is None:
        return smtp.max_connections
    ceiling = max(1, (files - FILES_RESERVED - pool_size) // FILES_PER_CONNECTION)
    if smtp.max_connections <= ceiling:
        return smtp.max_connections
    if warn:
        log.warning("smtp.max_connections = %d needs about %d open files but the limit is %d "
                    "(LimitNOFILE); lowered to %d connections", smtp.max_connections, wanted,
                    files, ceiling)
    return ceiling


def _raise_open_files(wanted: int) -> int | None:
    """The soft open-files limit, raised toward ``wanted`` when the hard limit allows; None
    when there is no limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    if soft < wanted and soft != hard:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def call_limits(limit: int) -> dict[str, int]:
    """Per-session command limits: chatter is limited, mail transactions are not."""
    chatter = ("NOOP", "VRFY", "EXPN", "HELP", "HELO", "EHLO")
    return {"*": 10**9, **{command: limit for command in chatter}}


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
            calendar_senders=policy.calendar_senders,
            delegates=tuple(policy.delegates.items()),
        ),
        language=policy.language,
        notices=settings.notice.enabled,
        notice_sender=settings.notice_sender(),
        default_zone=ZoneInfo(policy.default_timezone),
        delete_after_series_end=settings.recurrence.after_series_end == "delete",
        retry_deadline=settings.retry.deadline,
        backoff_initial=settings.retry.backoff_initial,
        backoff_max=settings.retry.backoff_max,
    )


class Daemon:
    """mailhook serve: startup, serve and shutdown as separate steps."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime] | None = None,
        *,
        config_file: Path | None = None,
        notifier: Notifier | None = None,
        log_level_fixed: bool = False,
        sockets: list[socket.socket] | None = None,
        primary: bool = True,
        serves_mail: bool = True,
    ) -> None:
        self.settings = settings
        # With several worker processes (see mailhook.workers) the workers serve mail on
        # sockets the supervisor bound; only the supervisor (primary, serving no mail) runs the
        # periodic passes and the metrics endpoint and talks to systemd. One process does all.
        self.sockets = sockets
        self.primary = primary
        self.serves_mail = serves_mail
        self.reload_hooks: list[Callable[[], None]] = []  # called after each applied reload
        self.config_file = config_file  # re-read on SIGHUP; None: nothing to reload from
        self.log_level_fixed = log_level_fixed  # --log-level was given: a reload keeps it
        self.metrics = Metrics()
        self.store = SqliteStore(settings.store.path, settings.store.synchronous)
        self.client = build_client(settings)
        # The pipeline holds the instrumented client, so a reload can swap the client behind it.
        self.trueconf = InstrumentedTrueConf(self.client, self.metrics)
        self.next_hop = NextHop(settings.relay)
        self._clock = clock
        self._locks = event_locks(settings)
        self._unsent = UnsentLinks()
        self.pipeline = self._build_pipeline(settings)
        self.handler = Handler(self._process, self.next_hop, self._delivered)
        self.health = Health(self.store, self.trueconf, self.next_hop, settings.metrics.health_cache)
        self.notifier = notifier if notifier is not None else Notifier()
        self.status_server: StatusServer | None = None
        if not self.metrics.follow_in_flight(lambda: self.handler.in_flight):
            self.handler.on_change = self.metrics.in_flight.set
        self.counts: Counter[str] = Counter()
        self._secret = settings.trueconf.secret()
        logfmt.redact(self._secret)
        self._retired: list[TrueConfClient] = []
        self._reload_lock = asyncio.Lock()
        self.server: asyncio.AbstractServer | None = None
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._extra_servers: list[asyncio.AbstractServer] = []
        self._undo_quiet_accept: Callable[[], None] | None = None

    async def startup(self) -> None:
        """Open the store and the listening socket."""
        await self.store.open()
        smtp = self.settings.smtp
        trusted = trusted_networks(smtp.trusted_networks)
        hostname = smtp.hostname or socket.getfqdn()
        loop = asyncio.get_running_loop()
        connections = ConnectionLimit(
            connection_cap(smtp, self.settings.relay.pool_size, warn=self.primary))

        def session() -> MailhookSMTP:
            return MailhookSMTP(
                self.handler,
                trusted,
                connections,
                hostname=hostname,
                data_size_limit=smtp.max_message_size,
                timeout=smtp.timeout,
                enable_SMTPUTF8=True,
                ident="mailhook",
                command_call_limit=call_limits(smtp.command_call_limit),
            )

        self._undo_quiet_accept = quiet_accept_errors(loop)
        if not self.sockets:
            self.server = await loop.create_server(
                session, host=smtp.listen_host, port=smtp.listen_port, reuse_address=True
            )
        elif self.serves_mail:
            # Sockets the supervisor bound before it started the workers; one server per
            # address (e.g. "localhost": 127.0.0.1 and ::1).
            self.server = await loop.create_server(session, sock=self.sockets[0])
            for extra in self.sockets[1:]:
                self._extra_servers.append(await loop.create_server(session, sock=extra))
        if self.primary:
            log.info("listening on %s:%s, next hop %s:%s", smtp.listen_host, smtp.listen_port,
                     self.settings.relay.host, self.settings.relay.port)
            await self._start_status_server()

    async def _start_status_server(self) -> None:
        # Metrics are for watching mail flow, never a reason to stop it.
        section = self.settings.metrics
        if not section.enabled:
            return
        server = StatusServer(self.metrics, self.health, self.refresh_store_metrics)
        try:
            await server.start(section.listen_host, section.listen_port)
        except OSError as exc:
            log.error("cannot serve metrics on %s:%s: %s; going on without them",
                      section.listen_host, section.listen_port, exc.strerror or exc)
            return
        self.status_server = server
        log.info("metrics and health on http://%s:%s/metrics and /healthz",
                 section.listen_host, server.port)

    @property
    def port(self) -> int:
        """The port actually bound (useful when listen_port is 0)."""
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def reschedule_forever(self) -> None:
        """Move conferences of recurring events along, now (catching up) and then periodically."""
        interval = self.settings.recurrence.reschedule_interval
        while True:
            try:
                moved = await self.pipeline.reschedule_due()
                if moved:
                    log.info("rescheduled %d conference(s) to their next occurrence", moved)
            except StoreUnavailable:
                pass  # the store logs its own trouble, once
            except Exception:
                log.exception("reschedule pass failed")
            await asyncio.sleep(interval)

    async def retry_forever(self) -> None:
        """Push deletions and updates TrueConf has not taken yet, until it confirms them."""
        while True:
            try:
                done = await self.pipeline.retry_pending()
                if done:
                    log.info("TrueConf took %d postponed deletion(s)/update(s)", done)
            except StoreUnavailable:
                pass  # the store logs its own trouble, once
            except Exception:
                log.exception("retry pass failed")
            await asyncio.sleep(self.settings.retry.interval)

    async def serve(self) -> None:
        """Serve until stop() is called or SIGTERM/SIGINT arrives."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self.stop)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            loop.add_signal_handler(signal.SIGHUP, self._reload_in_background)
            # `mailhook serve` holds SIGHUP back while it starts (see workers.hold_reloads):
            # one that came meanwhile is handled now.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        except (NotImplementedError, RuntimeError):
            pass
        if not self.primary:
            await self._stopping.wait()
            return
        await self.refresh_store_metrics()
        self.notifier.ready(self.status_line())
        tasks = [loop.create_task(self._report_forever()),
                 loop.create_task(self.reschedule_forever()),
                 loop.create_task(self.retry_forever())]
        try:
            await self._stopping.wait()
        finally:
            self.notifier.stopping()
            for task in tasks:
                task.cancel()

    def stop(self) -> None:
        """Ask the daemon to shut down."""
        self._stopping.set()

    # --- reporting --------------------------------------------------------------------------

    async def refresh_store_metrics(self) -> None:
        """Count the stored events by state for the gauges (pending retries, tracked)."""
        try:
            states, pending = await self.store.count_by_state(), await self.store.count_pending()
        except StoreUnavailable:
            return  # the store logs its own trouble, once; the gauges keep their last values
        self.metrics.store_states(states, pending)

    def status_line(self) -> str:
        """The one-line STATUS systemctl shows (for every worker process together)."""
        counts, in_flight = dict(self.counts), self.handler.in_flight
        shared = shared_totals()
        if shared is not None:
            counts, in_flight = shared
        handled = sum(counts.values())
        detail = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()) if n)
        return (f"{handled} message(s){f' ({detail})' if detail else ''}, "
                f"{in_flight} in flight, "
                f"{self.metrics.tracked_count} conference(s) tracked")

    async def _report_forever(self) -> None:
        # The watchdog ping comes from the event loop itself: a wedged loop stops the pings.
        interval = self.notifier.watchdog_interval
        while self.notifier.enabled:
            if interval is not None:
                self.notifier.watchdog()
            try:
                await self.refresh_store_metrics()
            except Exception as exc:
                log.warning("cannot count stored events: %s", exc)
            self.notifier.status(self.status_line())
            await asyncio.sleep(interval if interval is not None else STATUS_INTERVAL)

    # --- reload -----------------------------------------------------------------------------

    def _build_pipeline(self, settings: Settings) -> Pipeline:
        directory = build_directory(settings, self.trueconf)  # type: ignore[arg-type]
        extra = {"clock": self._clock} if self._clock else {}
        return Pipeline(pipeline_config(settings), self.store, self.trueconf, directory,
                        locks=self._locks, unsent=self._unsent, **extra)

    def _reload_in_background(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reload(self) -> bool:
        """Re-read the config file (SIGHUP) and apply what is safe to change while running.

        Applied: [log] level, [policy], [notice], [recurrence] and [trueconf] (a new API client,
        so a rotated secret file is read again). Changes to [smtp], [relay], [store] and
        [metrics] need a restart and are logged as such. A config that does not load keeps
        the running one. True when the new config was taken.
        """
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                return self._reload_from_file()
            finally:
                self.notifier.ready(self.status_line())

    def _reload_from_file(self) -> bool:
        if self.config_file is None:
            log.warning("reload asked for, but mailhook was not started from a config file")
            return False
        try:
            new = load_settings(self.config_file)
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            if self.primary:  # counted once, not once per worker
                self.metrics.reloads.labels("failed").inc()
            return False
        self._apply(new)
        if self.primary:
            self.metrics.reloads.labels("applied").inc()
        for hook in self.reload_hooks:
            hook()
        return True

    def _apply(self, new: Settings) -> None:
        old = self.settings
        changed = [name for name in Settings.model_fields if getattr(new, name) != getattr(old, name)]
        for name in changed:
            if name not in RELOADABLE:
                log.warning("setting section [%s] changed; restart mailhook to apply it", name)
        if not self.log_level_fixed:
            logfmt.set_level(new.log.level)
        secret = new.trueconf.secret()
        if "trueconf" in changed or secret != self._secret:
            self._replace_client(new, secret)
        self.settings = old.model_copy(update={name: getattr(new, name) for name in RELOADABLE})
        # The new pipeline shares the per-event locks (see _build_pipeline), so a message still
        # in the old pipeline and the next one for the same event never run at once.
        self.pipeline = self._build_pipeline(self.settings)
        log.info("configuration reloaded from %s (changed: %s)", self.config_file,
                 ", ".join(changed) or "nothing")

    def _replace_client(self, new: Settings, secret: str) -> None:
        logfmt.redact(secret)
        self.client = build_client(new)
        # Calls under way finish on the old client; it is closed at shutdown.
        self._retired.append(self.trueconf.replace(self.client))
        self._secret = secret
        self.health.forget()

    async def shutdown(self) -> None:
        """Stop accepting, let messages in flight finish, then close adapters in order."""
        self.handler.stopping = True
        for server in (self.server, *self._extra_servers):
            if server is not None:
                server.close()
        try:
            await asyncio.wait_for(self.handler.idle.wait(), DRAIN_TIMEOUT)
        except TimeoutError:
            log.warning("%d message(s) still in flight at shutdown", self.handler.in_flight)
        if self._background:
            await asyncio.wait(self._background, timeout=30)
        if self.status_server is not None:
            await self.status_server.stop()
        for client in (*self._retired, self.client):
            await client.aclose()
        await self.next_hop.aclose()
        await self.store.close()
        self.notifier.close()
        if self._undo_quiet_accept is not None:
            self._undo_quiet_accept()
        log.info("stopped")

    async def _process(self, inbound: Inbound) -> Outcome:
        # Looked up per message, so that the pipeline a reload builds takes the next message.
        return await self.pipeline.process(inbound)

    async def _delivered(
        self, inbound: Inbound, outcome: Outcome, reply: Reply, started: float,
        upstream: Upstream | None = None,
    ) -> None:
        log_summary(inbound, outcome, reply, started, upstream)
        self.metrics.message(outcome.method, str(outcome.decision.action), reply.code)
        self.counts[outcome_of(reply.code)] += 1
        try:
            # A conference made for an invitation the next hop refused for good is not left behind.
            await self.pipeline.settle(outcome, accepted=reply.ok, refused=reply.code >= 500)
        except Exception:
            log.exception("uid=%s: cannot settle the conference after the next hop's reply",
                          outcome.uid)
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


def log_summary(
    inbound: Inbound, outcome: Outcome, reply: Reply, started: float,
    upstream: Upstream | None = None,
) -> None:
    """One key=value line per message, for the journal."""
    upstream = upstream or Upstream()
    # The SMTP side binds the Message-ID it read from the header for every message; the
    # pipeline knows it only for mail it parsed (not for mail without a calendar).
    message_id = logfmt.context().get("message_id") or outcome.message_id
    fields = {
        "queue_id": upstream.queue_id or "-",
        "client": upstream.client or "-",
        "message_id": message_id or "-",
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
    log.info(logfmt.fields(fields))


async def run(
    settings: Settings, config_file: Path | None = None, log_level_fixed: bool = False,
    *, sockets: list[socket.socket] | None = None, worker_pids: tuple[int, ...] = (),
    log_level: str | None = None,
) -> int:
    """Run the daemon until told to stop; the exit status.

    With worker processes (``smtp.workers`` > 1) this is the supervisor, serving no mail:
    ``sockets`` were bound and the workers forked before the event loop started (see
    ``mailhook.workers``).
    """
    from mailhook.workers import Workers

    smtp = settings.smtp
    daemon = Daemon(settings, config_file=config_file, log_level_fixed=log_level_fixed,
                    sockets=sockets, serves_mail=not worker_pids)
    workers = None
    if sockets and worker_pids and config_file is not None:
        workers = Workers(list(worker_pids), config_file, sockets, lambda: daemon.settings,
                          log_level if log_level_fixed else None, DRAIN_TIMEOUT)
        workers.start()
        daemon.reload_hooks.append(partial(workers.signal, signal.SIGHUP))
    try:
        await daemon.startup()
    except (OSError, StoreUnavailable) as exc:
        if isinstance(exc, StoreUnavailable):
            log.error("cannot open the store: %s", exc)
        else:
            log.error("cannot listen on %s:%s: %s", smtp.listen_host, smtp.listen_port,
                      exc.strerror or exc)
        if workers is not None:
            await workers.stop()
        await daemon.client.aclose()
        await daemon.store.close()
        return 1
    try:
        await daemon.serve()
    finally:
        if workers is not None:
            await asyncio.gather(workers.stop(), daemon.shutdown())
        else:
            await daemon.shutdown()
    return 0


async def run_worker(
    settings: Settings, config_file: Path, sockets: list[socket.socket], log_level_fixed: bool
) -> int:
    """A worker process: serve mail on the supervisor's sockets until told to stop."""
    daemon = Daemon(settings, config_file=config_file, log_level_fixed=log_level_fixed,
                    notifier=Notifier({}), sockets=sockets, primary=False)
    await daemon.startup()
    try:
        await daemon.serve()
    finally:
        await daemon.shutdown()
    return 0
