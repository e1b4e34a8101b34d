"""Upkeep of the store: forgetting events whose conference is long gone. The periodic pass
of the daemon runs it, and ``mailhook store prune``."""

from __future__ import annotations

import logging

from mailhook.store.base import Store

log = logging.getLogger("mailhook.store")
DAY = 86_400.0


async def prune(store: Store, keep_deleted_days: float, now: float) -> int:
    """Forget events whose conference was deleted more than ``keep_deleted_days`` ago (none
    when it is 0); the number forgotten."""
    if keep_deleted_days <= 0:
        return 0
    pruned = await store.prune_deleted(now - keep_deleted_days * DAY)
    if pruned:
        log.info("store: forgot %d event(s) whose conference was deleted over %g day(s) ago",
                 pruned, keep_deleted_days)
    return pruned
