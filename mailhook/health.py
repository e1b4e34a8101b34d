"""Health checks that ping each dependency: the store, TrueConf's token endpoint, the next hop.

Used by ``/healthz`` and by ``mailhook check``. The TrueConf check asks for a fresh token, so
its result is reused for a few seconds: frequent probes must not hammer TrueConf.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mailhook.errors import MailhookError
from mailhook.relay import NextHop

CHECK_TIMEOUT = 15.0  # seconds any one check may take


@dataclass(frozen=True, slots=True)
class Check:
    """The result of checking one dependency."""

    name: str
    ok: bool
    detail: str


class Pingable(Protocol):
    async def ping(self) -> None: ...


class Health:
    """Checks the daemon's dependencies."""

    def __init__(
        self,
        store: Pingable,
        trueconf: Any,
        next_hop: NextHop,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._trueconf = trueconf  # anything with ``async check()`` (the API client)
        self._next_hop = next_hop
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cached: tuple[float, Check] | None = None
        self._token_lock = asyncio.Lock()

    async def run(self) -> list[Check]:
        """Every check, run at once."""
        return list(await asyncio.gather(self.store(), self.trueconf(), self.next_hop()))

    async def store(self) -> Check:
        """The store answers a query, its file is still the one it opened and writable, and
        its last write worked."""
        return await _checked("store", self._store.ping(), lambda _: "answers")

    async def trueconf(self) -> Check:
        """TrueConf issues a token for our credentials (reused for ``cache_seconds``)."""
        async with self._token_lock:  # concurrent probes share one token request
            cached = self._cached
            if cached is not None and self._clock() - cached[0] < self._cache_seconds:
                return cached[1]
            check = await _checked("trueconf", self._trueconf.check(), lambda _: "token issued")
            self._cached = (self._clock(), check)
            return check

    async def next_hop(self) -> Check:
        """The next hop greets and answers EHLO."""
        try:
            reply = await asyncio.wait_for(self._next_hop.probe(), CHECK_TIMEOUT)
        except TimeoutError:
            return Check("next_hop", False, "no answer in time")
        return Check("next_hop", reply.ok, str(reply))

    def forget(self) -> None:
        """Drop the cached TrueConf result (its client or credentials changed)."""
        self._cached = None


async def _checked(name: str, call: Awaitable[Any], describe: Callable[[Any], str]) -> Check:
    try:
        result = await asyncio.wait_for(call, CHECK_TIMEOUT)
    except TimeoutError:
        return Check(name, False, "no answer in time")
    except MailhookError as exc:
        return Check(name, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - a health check reports, it never raises
        return Check(name, False, f"{type(exc).__name__}: {exc}")
    return Check(name, True, describe(result))
