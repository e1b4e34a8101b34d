"""Several worker processes serving mail on the same listening sockets (``smtp.workers`` > 1).

One process uses one CPU core, and parsing and rewriting invitations is CPU work, so a busy
server runs one worker per core. The process systemd starts becomes a supervisor that serves no
mail: it binds the sockets and prepares the store, then forks ``smtp.workers`` identical
workers that inherit the bound sockets; the kernel hands each new connection to one of them.
The supervisor handles the signals (SIGTERM and SIGINT stop, SIGHUP reloads, each passed on to
the workers), talks to systemd, serves /metrics and /healthz and runs the periodic passes
(rescheduling, retries), so those run once whichever worker is busy or being replaced. Per-event
locks hold across processes (see ``locks.py``), so two copies of one invitation served by
different workers, or a worker and a pass, still make one conference.

The supervisor starts a worker that exits unexpectedly again, waiting longer each time it keeps
failing. Workers stop when the supervisor dies (``PR_SET_PDEATHSIG``), so no process is left
holding the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from mailhook.config import Settings

log = logging.getLogger("mailhook")

BACKLOG = 100  # as asyncio's own servers
RESTART_DELAY = 1.0  # seconds before a worker that exited is started again (doubling, capped)
RESTART_DELAY_MAX = 60.0  # a worker that ran this long before exiting starts the count afresh
# Seconds past the drain timeout before a worker that will not stop is killed: it may still be
# sending organizer notices for its last messages.
STOP_GRACE = 30.0
# What a worker must not inherit: systemd's notify socket and watchdog belong to the supervisor.
SUPERVISOR_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                       "LISTEN_PID", "LISTEN_FDNAMES")
PR_SET_PDEATHSIG = 1


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` stands for, as asyncio would bind them."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue  # an address family this kernel does not offer (IPv6 turned off)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                # Port 0 picked a free port for the first address; use it for the others too.
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(f"no usable address for {host!r}")
    return sockets


def inherited(fds: list[int]) -> list[socket.socket]:
    """The listening sockets a worker was started with."""
    sockets = [socket.socket(fileno=fd) for fd in fds]
    for sock in sockets:
        sock.setblocking(False)
    return sockets


def die_with_parent(parent: int) -> bool:
    """Ask the kernel to stop this process when the supervisor dies; False if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == parent


def hold_reloads() -> None:
    """Keep SIGHUP pending until the event loop handles it (``Daemon.serve`` lets it through):
    a reload asked for during start-up must neither kill the process nor be lost. Forked and
    spawned workers start with it held too."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})


def settings_blob(settings: Settings) -> bytes:
    """The settings a worker must run with, secret included, for a pipe to it."""

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    return json.dumps(plain(settings.model_dump())).encode()


def read_settings(fd: int) -> Settings:
    """The settings the supervisor wrote to the pipe ``fd``."""
    with os.fdopen(fd, "rb") as pipe:
        data = json.loads(pipe.read())
    return Settings(**data)


def shared_metrics_dir() -> str:
    """A fresh folder for the workers' metric values, named in the environment before
    prometheus-client is imported (it decides its storage at import)."""
    path = tempfile.mkdtemp(prefix="mailhook-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def remove_metrics_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def fork_workers(count: int, serve: Callable[[int], int]) -> list[int]:
    """Start workers 1..count as forks of this process, which has loaded mailhook but has no
    thread or event loop yet: they share its memory pages until they write to them."""
    pids = []
    for number in range(1, count + 1):
        pid = os.fork()
        if pid == 0:  # the worker (SIGHUP is held: see hold_reloads)
            status = 1
            try:
                status = serve(number)
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            except BaseException:
                log.exception("worker %d failed", number)
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        pids.append(pid)
    return pids


class Workers:
    """The supervisor's worker processes: watched, restarted, signalled and stopped.

    They start as forks (``fork_workers``); one that exits unexpectedly is started again as a
    new ``mailhook serve`` process given the listening sockets and, through a pipe, the
    supervisor's settings as they are now (so it runs like the others even if the config file
    changed since), since the supervisor, by then running threads, must not fork itself.
    """

    def __init__(
        self,
        pids: list[int],
        config_file: Path,
        sockets: list[socket.socket],
        settings: Callable[[], Settings],
        log_level: str | None,
        drain_timeout: float,
    ) -> None:
        self._pids: dict[int, int | None] = dict(enumerate(pids, start=1))  # None: not running
        self._config_file = config_file
        self._sockets = sockets
        self._fds = [sock.fileno() for sock in sockets]
        self._settings = settings
        self._log_level = log_level
        self._drain_timeout = drain_timeout
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @property
    def pids(self) -> list[int]:
        return [pid for pid in self._pids.values() if pid is not None]

    def start(self) -> None:
        """Begin watching the workers."""
        loop = asyncio.get_running_loop()
        for number in self._pids:
            self._watchers.append(loop.create_task(self._watch(number)))
        log.info("%d worker process(es): %s", len(self._pids),
                 " ".join(str(pid) for pid in self.pids))

    async def _spawn(self, number: int) -> int:
        blob = settings_blob(self._settings())
        reader, writer = os.pipe()
        try:
            os.set_inheritable(reader, True)
            argv = [sys.executable, "-m", "mailhook", "serve", "--config", str(self._config_file),
                    "--listen-fds", ",".join(map(str, self._fds)), "--settings-fd", str(reader),
                    "--parent", str(os.getpid()), "--worker", str(number)]
            if self._log_level:
                argv += ["--log-level", self._log_level]
            env = {key: value for key, value in os.environ.items()
                   if key not in SUPERVISOR_ONLY_ENV}
            # The listening sockets and the pipe are inheritable; every other descriptor is
            # close-on-exec. SIGHUP starts held, as in the first workers.
            pid = os.posix_spawn(sys.executable, argv, env, setsigmask={signal.SIGHUP})
        finally:
            os.close(reader)
        # Written after the start: the child reads it while it starts up.
        await asyncio.to_thread(_write_all, writer, blob)
        return pid

    async def _exit_status(self, pid: int) -> int:
        """Wait for a worker to exit and reap it; its exit status."""
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            fd = -1  # no pidfd (old kernel): look now and then instead
        if fd >= 0:
            exited = loop.create_future()
            loop.add_reader(fd, lambda: None if exited.done() else exited.set_result(None))
            try:
                await exited
            finally:
                loop.remove_reader(fd)
                os.close(fd)
        while True:
            try:
                reaped, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return -1  # reaped elsewhere: its status is unknown
            if reaped:
                return os.waitstatus_to_exitcode(status)
            await asyncio.sleep(0.5)

    async def _watch(self, number: int) -> None:
        from mailhook.metrics import process_gone

        delay = RESTART_DELAY
        started = time.monotonic()
        while True:
            pid = self._pids[number]
            if pid is not None:
                status = await self._exit_status(pid)
                self._pids[number] = None  # reaped: its pid may belong to another process now
                process_gone(pid)
                if self._stopping.is_set():
                    return
                if time.monotonic() - started > RESTART_DELAY_MAX:
                    delay = RESTART_DELAY  # it ran well for a while: not a crash loop
                log.error("worker %d (pid %d) exited with status %s; starting it again in %.0f s",
                          number, pid, status, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            delay = min(delay * 2, RESTART_DELAY_MAX)
            started = time.monotonic()
            try:
                self._pids[number] = await self._spawn(number)
            except Exception as exc:  # noqa: BLE001 - the supervisor goes on whatever happened
                log.error("cannot start worker %d: %s; trying again in %.0f s", number, exc, delay)

    def signal(self, signum: int) -> None:
        """Pass a signal on to every running worker."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    async def stop(self) -> None:
        """SIGTERM every worker and wait until each has finished its messages."""
        self._stopping.set()
        # The supervisor's copies of the listening sockets go first: once the workers close
        # theirs the port is free, and a client is refused (and retries) instead of waiting
        # in a queue nobody reads.
        for sock in self._sockets:
            sock.close()
        self.signal(signal.SIGTERM)
        watching = [task for task in self._watchers if not task.done()]
        if not watching:
            return
        _, pending = await asyncio.wait(watching, timeout=self._drain_timeout + STOP_GRACE)
        if pending:
            log.warning("a worker did not stop in time; killing it")
            self.signal(signal.SIGKILL)
            await asyncio.wait(pending)


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        pass  # the worker died before reading: its watcher starts another
    finally:
        os.close(fd)
