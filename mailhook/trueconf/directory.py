"""Who has a TrueConf account: e-mail address → TrueConf id.

Either the server's user list (paged through the users API and cached for a while), or, for
servers whose TrueConf ids are the mailbox names, the local part of local-domain addresses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from mailhook.errors import TrueConfError
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
    """The server's user list, matched by e-mail case-insensitively, cached for ``ttl`` seconds."""

    def __init__(
        self, source: UserSource, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._source = source
        self._ttl = ttl
        self._clock = clock
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
            if not self._fresh():
                await self._reload()
            assert self._accounts is not None
            return self._accounts

    def _fresh(self) -> bool:
        return self._accounts is not None and self._clock() - self._loaded_at < self._ttl

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
