"""The composition root: settings → store → TrueConf client → directory → effects → flow, built
in one place for the daemon and for the tools (admin commands, ``explain``, ``reschedule``).

Each part gets only its own section of the settings. The clock built here (or passed in by a
test) is the only source of wall-clock time for the flow, the effects and background work.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from mailhook import logfmt
from mailhook.background import Rescheduler, RetryQueue
from mailhook.caldav_writeback import CalendarWriteBack, build_writeback
from mailhook.conferences import Conferences, UnsentLinks
from mailhook.config import Settings
from mailhook.core.decide import Policy
from mailhook.core.plan import FlowConfig
from mailhook.core.trace import trace_header
from mailhook.flow import Flow
from mailhook.handling import Handling
from mailhook.locks import EventLocks, KeyedLocks, StoreLocks, lock_path
from mailhook.metrics import InstrumentedTrueConf, Metrics, TrueConfApi
from mailhook.relay import NextHop
from mailhook.store import Store, build_store
from mailhook.store.claims import lease
from mailhook.trueconf.client import TrueConfClient
from mailhook.trueconf.directory import (
    Directory,
    LocalPartDirectory,
    UserListDirectory,
    UsersCache,
)

log = logging.getLogger("mailhook")
Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    """The real time, in UTC."""
    return datetime.now(UTC)


def flow_config(settings: Settings) -> FlowConfig:
    """The part of the settings the plan, the effects and the flow use."""
    policy = settings.policy
    return FlowConfig(
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
        notice_when=settings.notice.sent_when,
        fallback_owner=settings.trueconf.fallback_owner,
        notice_sender=settings.notice_sender(),
        default_zone=ZoneInfo(policy.default_timezone),
        delete_after_series_end=settings.recurrence.after_series_end == "delete",
        retry_deadline=settings.retry.deadline,
        backoff_initial=settings.retry.backoff_initial,
        backoff_max=settings.retry.backoff_max,
    )


def open_store(settings: Settings, read_only: bool = False) -> Store:
    """The configured store: SQLite, or PostgreSQL shared by several instances. ``read_only``
    (for tools that only look): a SQLite file is never created, migrated or written, and one
    that does not exist yet reads as empty."""
    logfmt.redact(settings.store.password())
    return build_store(settings.store, read_only=read_only)


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


def build_directory(settings: Settings, client: TrueConfApi,
                    store: UsersCache | None = None) -> Directory:
    """The configured way to find TrueConf accounts for addresses (the user list kept in the
    store too, when one is given, so a restart during a TrueConf outage still knows it)."""
    if settings.trueconf.user_mapping == "local_part":
        return LocalPartDirectory(settings.policy.local_domains)
    return UserListDirectory(client, ttl=settings.trueconf.users_cache_ttl, cache=store,
                             server=settings.trueconf.server_url)


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


class App:
    """Everything that handles mail, built from one configuration.

    A reload (``reconfigure``) builds new effects and a new message handling from the new
    settings; they share the store, the locks, the unsent links and the instrumented client,
    so a message in flight and the next one for the same event never run at once.
    """

    def __init__(self, settings: Settings, clock: Clock | None = None, *,
                 metrics: Metrics | None = None,
                 locks: EventLocks | KeyedLocks | StoreLocks | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or wall_clock
        self.metrics = metrics or Metrics()
        self.store: Store = open_store(settings)
        self.client = build_client(settings)
        self.trueconf = InstrumentedTrueConf(self.client, self.metrics)
        own_name = settings.smtp.hostname or socket.getfqdn()  # as the SMTP greeting says
        self.next_hop = NextHop(settings.relay, own_name=own_name,
                                trace=lambda: trace_header(own_name, self.clock()))
        self.locks = locks if locks is not None else self._event_locks(settings)
        self.unsent = UnsentLinks()
        self.conferences = self._conferences(settings)
        self.flow = Flow(self._handling(settings), self.next_hop, self.metrics,
                         own_name=own_name, max_own_hops=settings.smtp.max_own_hops)
        self.flow.calendars = self._writeback(settings)
        self.rescheduler = Rescheduler(self._current, self.store, self.locks, self.clock,
                                       self._lease, self._keep_deleted_days)
        self.retries = RetryQueue(self._current, self.store, self.locks, self.clock, self._lease)
        self._retired: list[TrueConfApi] = []

    @classmethod
    def for_tools(cls, settings: Settings, clock: Clock | None = None) -> App:
        """The parts for a command beside the daemon: it takes the daemon's per-event locks
        (when a daemon made the lock file) and never makes the lock file itself."""
        shared = bool(settings.store.url)  # the database holds the locks: see _event_locks
        return cls(settings, clock, locks=None if shared else event_locks(settings, create=False))

    def reconfigure(self, settings: Settings, new_client: bool) -> None:
        """Take new settings (a reload); ``new_client``: replace the TrueConf client too."""
        if new_client:
            self.client = build_client(settings)
            # Calls under way finish on the old client; it is closed at shutdown.
            self._retired.append(self.trueconf.replace(self.client))
        self.settings = settings
        self.conferences = self._conferences(settings)
        self.flow.handling = self._handling(settings)
        self.flow.calendars = self._writeback(settings)

    async def aclose(self) -> None:
        """Close the adapters: TrueConf clients, the next hop's sessions, the store."""
        if self.flow.calendars is not None:
            await self.flow.calendars.drain(timeout=10)
        for client in (*self._retired, self.client):
            await client.aclose()
        await self.next_hop.aclose()
        await self.store.close()

    def _current(self) -> Conferences:
        return self.conferences

    def _event_locks(self, settings: Settings) -> EventLocks | KeyedLocks | StoreLocks:
        # With a shared database the per-event lock is held there, for every instance.
        return StoreLocks(self.store) if settings.store.url else event_locks(settings)

    def _lease(self) -> float:
        """Seconds a claim on due work lasts (see mailhook.store.claims), from the settings now."""
        return lease(self.settings.trueconf.timeout, self.settings.retry.interval)

    def _keep_deleted_days(self) -> float:
        return self.settings.store.keep_deleted_days

    def _conferences(self, settings: Settings) -> Conferences:
        directory = build_directory(settings, self.trueconf, self.store)
        return Conferences(flow_config(settings), self.store, self.trueconf, directory,
                           self.clock)

    def _writeback(self, settings: Settings) -> CalendarWriteBack | None:
        return build_writeback(settings.caldav, settings.policy.keywords,
                               settings.policy.language, self.metrics)

    def _handling(self, settings: Settings) -> Handling:
        return Handling(self.conferences.config, self.store, self.conferences, self.locks,
                        self.unsent, self.clock)
