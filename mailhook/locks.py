"""One lock per (organizer, UID), so copies of one invitation on parallel connections are
handled one after the other and never create two conferences.

``KeyedLocks`` serialises tasks of one process. ``EventLocks`` adds a lock that holds across
processes: the worker processes of one daemon and the admin commands share the store, so they
take a POSIX record lock on one byte of a lock file beside it. The byte is chosen by hashing
the key ("striping"); two events that happen to share a byte only wait for each other. The
kernel drops such locks when their process dies, so a crash never leaves one behind.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar

# Bytes of the lock file that keys are spread over.
STRIPES = 1 << 20
# How long to wait between attempts while another process holds the lock (seconds).
POLL_FIRST, POLL_MAX = 0.001, 0.05


class KeyedLocks:
    """Locks created on demand and dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


def stripe_of(key: Hashable) -> int:
    """The byte of the lock file that stands for ``key`` (the same in every process)."""
    digest = hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % STRIPES


class EventLocks:
    """Per-event locks that exclude other tasks of this process and other processes.

    Record locks belong to the process, not to a task, and closing any descriptor of the file
    drops all of the process's locks on it. So each process keeps one descriptor per lock
    file (``for_path``), and within the process a stripe is taken by one task at a time.
    """

    _shared: ClassVar[dict[str, EventLocks]] = {}
    _shared_guard = threading.Lock()

    def __init__(self, path: str, create: bool = True) -> None:
        self.path = path
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        self._fd = os.open(path, flags, 0o600)
        self._local = KeyedLocks()

    @classmethod
    def for_path(cls, path: str, create: bool = True) -> EventLocks:
        """This process's locks on the lock file at ``path`` (one object per file).

        Raises OSError when the file cannot be opened (or, without ``create``, does not exist).
        """
        real = os.path.realpath(path)
        with cls._shared_guard:
            locks = cls._shared.get(real)
            if locks is None:
                locks = cls._shared[real] = cls(real, create)
            return locks

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        stripe = stripe_of(key)
        async with self._local.hold(stripe):
            await self._acquire(stripe)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, stripe)

    async def _acquire(self, stripe: int) -> None:
        delay = POLL_FIRST
        while True:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, stripe)
                return
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
            # Another process handles this event now; it is done in milliseconds.
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX)

    def __len__(self) -> int:
        return len(self._local)


def lock_path(store_path: str) -> str:
    """The lock file that goes with a store."""
    return f"{store_path}.locks"


class StoreLocks:
    """The store's own per-event lock (held in the database when several instances share one),
    in the shape of ``KeyedLocks``."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def hold(self, key: tuple[str, str]) -> AbstractAsyncContextManager[None]:
        organizer, uid = key
        return self._store.event_lock(organizer, uid)  # type: ignore[no-any-return]
