"""What every front end applies to its clients before serving them: a cap on open connections
(lowered to what the open-files limit holds), the trusted networks, and a quiet log when the
process runs out of files.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("mailhook.frontends")

FILES_PER_CONNECTION = 2  # the client's socket and, during a transaction, the next hop's
# Open files a process needs besides its connections: standard streams, the event loop, the
# listening and metrics sockets, the store and its lock file, and up to 100 connections to
# TrueConf Server (the API client's pool); the next hop's idle sessions are added to these.
FILES_RESERVED = 160
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ThrottledWarning:
    """One warning line per interval for something that can happen in floods (a line per
    occurrence would bury the journal); the next line says how many were left out."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._left_out = 0

    def warn(self, message: str, *args: object) -> None:
        now = self._clock()
        if now < self._next:
            self._left_out += 1
            return
        if self._left_out:
            message += f" ({self._left_out} more since the last such line)"
        self._log.warning(message, *args)
        self._left_out = 0
        self._next = now + self._interval


class ConnectionLimit:
    """The open client connections of this process, at most ``maximum`` (smtp.max_connections,
    as lowered to what the open-files limit holds)."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.open = 0
        self._warning = ThrottledWarning(log)

    def admit(self) -> bool:
        """Count one more connection, or say it is over the limit (and warn, now and then)."""
        if self.open >= self.maximum:
            self._warning.warn("refusing connections with 421: %d open, smtp.max_connections "
                               "reached", self.open)
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1


def connection_cap(max_connections: int, pool_size: int, warn: bool = True) -> int:
    """smtp.max_connections, or fewer when the open-files limit cannot hold that many.

    The soft limit is first raised as far as needed and the hard limit allows (what systemd
    advises programs that need many files to do); a client turned away with 421 comes back
    later, while one accepted past the limit would fail in the middle of its transaction.
    """
    wanted = max_connections * FILES_PER_CONNECTION + FILES_RESERVED + pool_size
    files = _raise_open_files(wanted)
    if files is None:
        return max_connections
    ceiling = max(1, (files - FILES_RESERVED - pool_size) // FILES_PER_CONNECTION)
    if max_connections <= ceiling:
        return max_connections
    if warn:
        log.warning("smtp.max_connections = %d needs about %d open files but the limit is %d "
                    "(LimitNOFILE); lowered to %d connections", max_connections, wanted,
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


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Make asyncio's report of a failed accept() for want of files or memory one warning line
    a minute; returns the undo.

    asyncio logs a traceback for every attempt, and it makes many attempts a second while the
    shortage lasts (tens of thousands of tracebacks in a minute of overload). The clients wait
    in the listen queue meanwhile and are taken when files are free again.
    """
    previous = loop.get_exception_handler()
    warning = ThrottledWarning(log)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if "socket" in context and isinstance(error, OSError) and error.errno in _OUT_OF_RESOURCES:
            warning.warn("cannot accept connections: out of files or memory (%s); clients wait "
                         "until some are free (see smtp.max_connections and LimitNOFILE)",
                         error.strerror)
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
    return lambda: loop.set_exception_handler(previous)


def is_trusted(peer: Any, trusted: tuple[Network, ...]) -> bool:
    """Is the client at ``peer`` (a socket address) in the trusted networks (any, when none
    are configured; a Unix socket's file permissions decide for it)?"""
    if not trusted:
        return True
    if not isinstance(peer, tuple) or not peer:
        return True  # a Unix socket: the file permissions decide
    try:
        address = ipaddress.ip_address(peer[0].split("%")[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def trusted_networks(networks: tuple[str, ...]) -> tuple[Network, ...]:
    """Parse the configured networks once."""
    return tuple(ipaddress.ip_network(network, strict=False) for network in networks)
