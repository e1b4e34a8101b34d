"""Prometheus metrics: messages by method, decision and outcome; TrueConf API latency and
errors by kind; events in the store by state (pending retries, conferences tracked).

Each daemon has its own registry, so several daemons in one process (tests) do not collide.
With several worker processes (``smtp.workers``), prometheus-client's multiprocess mode is on
(``PROMETHEUS_MULTIPROC_DIR``, set before the library is imported): every process writes its
values to files there and /metrics, served by the first process, adds them up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from mailhook.core.model import Conference, ConferenceSpec
from mailhook.errors import TrueConfAuthError, TrueConfRejected, TrueConfUnavailable

T = TypeVar("T")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# States in which a conference exists (or should) on TrueConf; every other state except
# "deleted" is work mailhook still owes TrueConf (a create to confirm, a delete to retry).
TRACKED_STATES = frozenset({"active"})
SETTLED_STATES = frozenset({"active", "deleted"})

# The *_created series double the output and no dashboard of ours reads them.
disable_created_metrics()


class Metrics:
    """The daemon's metrics and the registry they are exported from."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "mailhook_messages", "Messages handled, by iTIP method, decision and outcome",
            ["method", "decision", "outcome"], registry=self.registry,
        )
        self.in_flight = Gauge(
            "mailhook_messages_in_flight", "Messages being handled now", registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.trueconf_latency = Histogram(
            "mailhook_trueconf_request_seconds", "TrueConf API calls, by operation",
            ["operation"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.trueconf_errors = Counter(
            "mailhook_trueconf_errors", "Failed TrueConf API calls, by operation and kind",
            ["operation", "kind"], registry=self.registry,
        )
        self.pending = Gauge(
            "mailhook_pending_retries",
            "TrueConf changes not confirmed yet: creates owed, deletions and updates to retry",
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.tracked = Gauge(
            "mailhook_conferences_tracked", "Conferences mailhook keeps in step with their events",
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.events = Gauge(
            "mailhook_events", "Stored events, by state", ["state"], registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "mailhook_config_reloads", "Configuration reloads, by result", ["result"],
            registry=self.registry,
        )
        self.caldav_writebacks = Counter(
            "mailhook_caldav_writebacks", "Links written back into organizers' events, by result",
            ["result"], registry=self.registry,
        )

    tracked_count = 0  # conferences tracked at the last count, for the STATUS line
    _states: frozenset[str] = frozenset()  # states counted last time

    def follow_in_flight(self, count: Callable[[], int]) -> bool:
        """Let the in-flight gauge read ``count`` at each scrape. False in multiprocess mode,
        where values live in files: the caller then sets the gauge as the count changes."""
        if shared_dir():
            return False
        self.in_flight.set_function(count)
        return True

    def message(self, method: str, decision: str, code: int) -> None:
        """Count one message by the reply its client got."""
        self.messages.labels(method or "none", decision, outcome_of(code)).inc()

    def store_states(self, tally: Mapping[str, int], postponed: int = 0) -> None:
        """Set the store gauges from the number of events in each state and the number of
        postponed deletions and updates."""
        # A state no longer present reads 0 (rather than vanishing: with several processes the
        # last value written would otherwise stay).
        for state in self._states - tally.keys():
            self.events.labels(state).set(0)
        for state, count in tally.items():
            self.events.labels(state).set(count)
        self._states = self._states | tally.keys()
        self.tracked_count = sum(n for s, n in tally.items() if s in TRACKED_STATES)
        self.tracked.set(self.tracked_count)
        self.pending.set(postponed + sum(n for s, n in tally.items() if s not in SETTLED_STATES))

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (every worker's values, when there are several)."""
        if shared_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def shared_totals() -> tuple[dict[str, int], int] | None:
    """Messages by outcome and messages in flight, added up over every worker process; None
    with one process (the daemon's own counts are the totals then)."""
    if not shared_dir():
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    outcomes: dict[str, int] = {}
    in_flight = 0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "mailhook_messages_total":
                outcome = sample.labels.get("outcome", "")
                outcomes[outcome] = outcomes.get(outcome, 0) + int(sample.value)
            elif sample.name == "mailhook_messages_in_flight":
                in_flight += int(sample.value)
    return outcomes, in_flight


def shared_dir() -> str:
    """Where worker processes keep their metric values ("" with one process)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def process_gone(pid: int) -> None:
    """Forget the live gauges of a worker process that exited."""
    if shared_dir():
        multiprocess.mark_process_dead(pid)


def outcome_of(code: int) -> str:
    """relayed (2xx), deferred (4xx: the MTA retries) or rejected (5xx)."""
    if 200 <= code < 300:
        return "relayed"
    return "deferred" if 400 <= code < 500 else "rejected"


def error_kind(exc: BaseException) -> str:
    """The kind of a TrueConf failure, as a metric label."""
    if isinstance(exc, TrueConfAuthError):
        return "auth"
    if isinstance(exc, TrueConfUnavailable):
        return "unavailable"
    if isinstance(exc, TrueConfRejected):
        return "rejected"
    return "other"


class TrueConfApi(Protocol):
    """The TrueConf client's operations (``mailhook.trueconf.client.TrueConfClient``)."""

    async def create_conference(self, spec: ConferenceSpec) -> Conference: ...
    async def update_conference(self, conference_id: str, spec: ConferenceSpec) -> Conference: ...
    async def delete_conference(self, conference_id: str) -> None: ...
    async def get_conference(self, conference_id: str) -> Conference | None: ...
    async def find_conference_by_tag(self, tag: str, owner: str) -> Conference | None: ...
    async def list_users(self) -> list[Any]: ...
    async def check(self) -> None: ...
    async def aclose(self) -> None: ...


class InstrumentedTrueConf:
    """The TrueConf client with every API call timed and every failure counted, by operation.

    The client behind it can be replaced (on reload) while the effects keep holding this
    object; calls under way finish on the client they started on.
    """

    def __init__(self, client: TrueConfApi, metrics: Metrics) -> None:
        self.client = client
        self._metrics = metrics

    def replace(self, client: TrueConfApi) -> TrueConfApi:
        """Use another client from now on; return the previous one."""
        previous, self.client = self.client, client
        return previous

    async def create_conference(self, spec: ConferenceSpec) -> Conference:
        return await self._timed("create_conference", self.client.create_conference(spec))

    async def update_conference(self, conference_id: str, spec: ConferenceSpec) -> Conference:
        return await self._timed("update_conference",
                                 self.client.update_conference(conference_id, spec))

    async def delete_conference(self, conference_id: str) -> None:
        await self._timed("delete_conference", self.client.delete_conference(conference_id))

    async def get_conference(self, conference_id: str) -> Conference | None:
        return await self._timed("get_conference", self.client.get_conference(conference_id))

    async def find_conference_by_tag(self, tag: str, owner: str) -> Conference | None:
        return await self._timed("find_conference_by_tag",
                                 self.client.find_conference_by_tag(tag, owner))

    async def list_users(self) -> list[Any]:
        return await self._timed("list_users", self.client.list_users())

    async def check(self) -> None:
        await self._timed("check", self.client.check())

    async def aclose(self) -> None:
        """Close the client in use now (retired ones are closed by their owner)."""
        await self.client.aclose()

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        except Exception as exc:
            self._metrics.trueconf_errors.labels(operation, error_kind(exc)).inc()
            raise
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.trueconf_latency.labels(operation).observe(elapsed)
