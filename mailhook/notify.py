"""systemd's notify protocol: READY, RELOADING, STOPPING, STATUS and WATCHDOG datagrams.

Sent over the Unix datagram socket named by ``$NOTIFY_SOCKET`` (a leading '@' names an
abstract socket). Without that variable, outside systemd, every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("mailhook.notify")


class Notifier:
    """Tells the service manager how mailhook is doing."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _watchdog_usec(env)
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half the manager's timeout), or None when unasked."""
        if not self.enabled or not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *_status(status))

    def reloading(self) -> None:
        # MONOTONIC_USEC lets newer systemd match the later READY=1 to this reload.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=Stopping: finishing messages in flight")

    def status(self, text: str) -> None:
        self.send(*_status(text))

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def send(self, *assignments: str) -> bool:
        """Send one datagram of ``KEY=value`` lines; True when it was sent."""
        if self._address is None or not assignments:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Called from the event loop: a manager that stopped reading must not block it.
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(assignments).encode("utf-8"), self._address)
        except BlockingIOError:
            log.debug("service manager not reading notifications; dropped %s", assignments[0])
            return False
        except OSError as exc:
            # The service manager going away must not stop mail.
            log.warning("cannot notify the service manager: %s", exc.strerror or exc)
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode("utf-8")
    if value.startswith("/"):
        return value
    log.warning("ignoring NOTIFY_SOCKET that is neither a path nor abstract: %r", value)
    return None


def _watchdog_usec(env: dict[str, str] | os._Environ[str]) -> int:
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return 0  # the watchdog is meant for another process (e.g. ExecStartPre)
    try:
        return max(0, int(env.get("WATCHDOG_USEC", "0")))
    except ValueError:
        return 0


def _status(text: str) -> tuple[str, ...]:
    return (f"STATUS={text.replace(chr(10), ' ')}",) if text else ()
