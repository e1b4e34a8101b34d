"""Who has a TrueConf account: e-mail address → TrueConf id.

Either the server's user list (paged through the users API and cached for a while), or, for
servers whose TrueConf ids are the mailbox names, the local part of local-domain addresses.
The user list can also be kept in the store, so that a restarted mailhook knows the accounts
while TrueConf is away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from mailhook.errors import StoreUnavailable, TrueConfError
from mailhook.store.base import CachedUsers
from mailhook.trueconf.payload import TrueConfUser

log = logging.getLogger("mailhook.trueconf")
RETRY_AFTER = 60.0  # seconds before a failed refresh of the user list is tried again


@dataclass(frozen=True, slots=True)
class Account:
    """A TrueConf account found for an address."""

    id: str
    display_name: str = ""


class UserSource(Protocol):
    async def list_users(self) -> list[TrueConfUser]:
        ...


class UsersCache(Protocol):
    """Where the user list outlives the process (the store)."""

    async def load_users(self, server: str) -> CachedUsers | None: ...
    async def save_users(self, server: str, users: CachedUsers) -> None: ...


class Directory(Protocol):
    async def lookup(self, addresses: Iterable[str]) -> dict[str, Account]:
        """The accounts of those addresses that have one (keys are lower-case addresses)."""


class LocalPartDirectory:
    """TrueConf ids are the local parts of addresses in the local domains."""

    def __init__(self, local_domains: Iterable[str]) -> None:
        self._domains = {domain.lower() for domain in local_domains}

    async def lookup(self, addresses: Iterable[str]) -> dict[str, Account]:
        found = {}
        for address in addresses:
            local, _, domain = address.lower().rpartition("@")
            if local and domain in self._domains:
                found[address.lower()] = Account(local)
        return found


class UserListDirectory:
    """The server's user list, matched by e-mail case-insensitively, cached for ``ttl`` seconds.

    With a ``cache`` (the store) the list fetched last is kept there under ``server``: after a
    restart it is used while it is fresh, and for as long as TrueConf cannot give a new one.
    """

    def __init__(
        self, source: UserSource, ttl: float, clock: Callable[[], float] = time.monotonic,
        *, cache: UsersCache | None = None, server: str = "",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._ttl = ttl
        self._clock = clock
        self._cache = cache
        self._server = server
        self._wall_clock = wall_clock
        self._accounts: dict[str, Account] | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def lookup(self, addresses: Iterable[str]) -> dict[str, Account]:
        accounts = await self._current()
        return {a.lower(): accounts[a.lower()] for a in addresses if a.lower() in accounts}

    async def _current(self) -> dict[str, Account]:
        if self._fresh():
            assert self._accounts is not None
            return self._accounts
        async with self._lock:
            if self._accounts is None:
                await self._from_cache()
            if not self._fresh():
                await self._reload()
            assert self._accounts is not None
            return self._accounts

    def _fresh(self) -> bool:
        return self._accounts is not None and self._clock() - self._loaded_at < self._ttl

    async def _from_cache(self) -> None:
        """Take the list the store kept, as old as it is (a fresh one is then not fetched)."""
        if self._cache is None:
            return
        try:
            kept = await self._cache.load_users(self._server)
        except StoreUnavailable:
            return  # the store logs its own trouble; TrueConf is asked instead
        if kept is None:
            return
        self._accounts = {email: Account(user_id, name) for email, user_id, name in kept.users}
        age = max(0.0, self._wall_clock() - kept.fetched_at)
        self._loaded_at = self._clock() - age

    async def _reload(self) -> None:
        try:
            users = await self._source.list_users()
        except TrueConfError:
            if self._accounts is None:
                raise
            # A stale list is better than refusing mail while TrueConf's user API hiccups; try
            # again in a minute rather than on every message.
            log.warning("TrueConf user list could not be refreshed; using the cached one")
            self._loaded_at = self._clock() - self._ttl + min(self._ttl, RETRY_AFTER)
            return
        self._accounts = {
            user.email.strip().lower(): Account(str(user.id), user.display_name or "")
            for user in users
            if getattr(user, "email", "")
        }
        self._loaded_at = self._clock()
        await self._keep()

    async def _keep(self) -> None:
        """Save the list just fetched in the store (best effort: mail does not wait on it)."""
        if self._cache is None or self._accounts is None:
            return
        entries = tuple((email, a.id, a.display_name) for email, a in self._accounts.items())
        try:
            await self._cache.save_users(self._server, CachedUsers(self._wall_clock(), entries))
        except StoreUnavailable:
            pass  # the store logs its own trouble; the list is kept in memory all the same
