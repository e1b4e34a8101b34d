"""The daemon: start the parts ``mailhook.app`` builds, serve mail through the front end, run
the background loops, and drain in order on SIGTERM.

Under systemd it reports READY, STATUS, WATCHDOG and STOPPING, and re-reads its config on
SIGHUP (see ``Daemon.reload`` for what a reload changes).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from mailhook import logfmt
from mailhook.app import App, Clock
from mailhook.config import ConfigError, Settings, load_settings
from mailhook.errors import StoreUnavailable
from mailhook.flow import Flow
from mailhook.frontends.limits import FILES_PER_CONNECTION, FILES_RESERVED
from mailhook.frontends.milter import MilterServer
from mailhook.frontends.smtp import SmtpServer
from mailhook.health import Health
from mailhook.metrics import shared_totals
from mailhook.notify import Notifier
from mailhook.status import StatusServer

__all__ = ["DRAIN_TIMEOUT", "FILES_PER_CONNECTION", "FILES_RESERVED", "Daemon", "run",
           "run_worker"]
log = logging.getLogger("mailhook")

DRAIN_TIMEOUT = 120.0  # seconds to let messages in flight finish after SIGTERM
STATUS_INTERVAL = 30.0  # seconds between STATUS updates when systemd asks for no watchdog
# Sections a reload (SIGHUP) applies; a change anywhere else is logged as needing a restart.
RELOADABLE = frozenset({"log", "policy", "notice", "recurrence", "trueconf"})


class Daemon:
    """mailhook serve: startup, serve and shutdown as separate steps."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
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
        self.app = App(settings, clock)
        self.metrics, self.store, self.next_hop = self.app.metrics, self.app.store, self.app.next_hop
        self.smtp = SmtpServer(self.app.flow, settings.smtp, settings.relay.pool_size, primary)
        self.milter = milter_server(self.app.flow, settings, serves_mail and primary)
        self.health = Health(self.store, self.app.trueconf, self.next_hop,
                             settings.metrics.health_cache)
        self.notifier = notifier if notifier is not None else Notifier()
        self.status_server: StatusServer | None = None
        self._secret = settings.trueconf.secret()
        logfmt.redact(self._secret)
        self._reload_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    async def startup(self) -> None:
        """Open the store and the listening socket."""
        await self.store.open()
        smtp, relay = self.settings.smtp, self.settings.relay
        if self.serves_mail and smtp.enabled:
            await _listening(self.smtp.start(self.sockets), f"{smtp.listen_host}:{smtp.listen_port}")
        if self.milter is not None:
            await _listening(self.milter.start(), f"the milter socket {self.settings.milter.listen}")
        if self.primary:
            if smtp.enabled:
                log.info("listening on %s:%s, next hop %s:%s", smtp.listen_host,
                         smtp.listen_port, relay.host, relay.port)
            await self._start_status_server()

    async def _start_status_server(self) -> None:
        section = self.settings.metrics
        server = StatusServer(self.metrics, self.health, self.refresh_store_metrics)
        if section.enabled and await server.started(section.listen_host, section.listen_port):
            self.status_server = server

    @property
    def port(self) -> int:
        """The port actually bound (useful when listen_port is 0)."""
        return self.smtp.port

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
        # The intervals are read before each pause, so that a reload applies to the next one.
        tasks = [loop.create_task(self._report_forever()),
                 loop.create_task(self.app.rescheduler.run_forever(
                     lambda: self.settings.recurrence.reschedule_interval)),
                 loop.create_task(self.app.retries.run_forever(
                     lambda: self.settings.retry.interval))]
        try:
            await self._stopping.wait()
        finally:
            self.notifier.stopping()
            for task in tasks:
                task.cancel()

    def stop(self) -> None:
        """Ask the daemon to shut down."""
        self._stopping.set()

    async def shutdown(self) -> None:
        """Stop accepting, let messages in flight finish, then close adapters in order."""
        self.app.flow.stopping = True
        self.smtp.close()
        if self.milter is not None:
            self.milter.close()
        await self.app.flow.drain(DRAIN_TIMEOUT)
        if self._background:
            await asyncio.wait(self._background, timeout=30)
        if self.status_server is not None:
            await self.status_server.stop()
        await self.app.aclose()
        self.notifier.close()
        log.info("stopped")

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
        flow = self.app.flow
        counts, in_flight = shared_totals() or (dict(flow.counts), flow.in_flight)
        return status_text(counts, in_flight, self.metrics.tracked_count)

    async def _report_forever(self) -> None:
        # The watchdog ping comes from the event loop itself: a wedged loop stops the pings.
        interval = self.notifier.watchdog_interval
        while self.notifier.enabled:
            if interval is not None:
                self.notifier.watchdog()
            try:
                await self.refresh_store_metrics()
            except Exception as exc:  # noqa: BLE001 - the pings must go on
                log.warning("cannot count stored events: %s", exc)
            self.notifier.status(self.status_line())
            await asyncio.sleep(interval if interval is not None else STATUS_INTERVAL)

    # --- reload -----------------------------------------------------------------------------

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
        changed = changed_sections(old, new)
        if not self.log_level_fixed:
            logfmt.set_level(new.log.level)
        secret = new.trueconf.secret()
        new_client = "trueconf" in changed or secret != self._secret
        if new_client:
            logfmt.redact(secret)
            self._secret = secret
            self.health.forget()
        self.settings = old.model_copy(update={name: getattr(new, name) for name in RELOADABLE})
        self.app.reconfigure(self.settings, new_client)
        log.info("configuration reloaded from %s (changed: %s)", self.config_file,
                 ", ".join(changed) or "nothing")


async def _listening(start: Coroutine[Any, Any, None], where: str) -> None:
    """Start a listener; an OSError from it says which listener it was (``where``)."""
    try:
        await start
    except OSError as exc:
        raise OSError(exc.errno, f"{where}: {exc.strerror or exc}") from None


def milter_server(flow: Flow, settings: Settings, serves_mail: bool) -> MilterServer | None:
    """The milter front end, when one is configured, in the one process that serves mail (the
    config refuses the milter with worker processes)."""
    if not settings.milter.listen or not serves_mail:
        return None
    return MilterServer(flow, settings.milter)


def changed_sections(old: Settings, new: Settings) -> list[str]:
    """The sections a reload changes; those it cannot apply are logged as needing a restart."""
    changed = [name for name in Settings.model_fields if getattr(new, name) != getattr(old, name)]
    for name in changed:
        if name not in RELOADABLE:
            log.warning("setting section [%s] changed; restart mailhook to apply it", name)
    return changed


def status_text(counts: dict[str, int], in_flight: int, tracked: int) -> str:
    """"12 message(s) (11 relayed, 1 deferred), 0 in flight, 3 conference(s) tracked"."""
    handled = sum(counts.values())
    detail = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()) if n)
    return (f"{handled} message(s){f' ({detail})' if detail else ''}, "
            f"{in_flight} in flight, {tracked} conference(s) tracked")


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
            log.error("cannot listen on %s", exc.strerror or exc)
        if workers is not None:
            await workers.stop()
        await daemon.app.aclose()
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
