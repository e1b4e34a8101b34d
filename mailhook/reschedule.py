"""``mailhook reschedule``: one pass moving conferences of recurring events to their next
occurrence, for cron and for admins. The daemon runs the same pass periodically."""

from __future__ import annotations

from datetime import datetime, timezone

from mailhook.config import Settings


async def reschedule_once(settings: Settings, now: datetime | None = None) -> int:
    """Run one pass against the configured store and TrueConf; the number of conferences moved."""
    from mailhook.daemon import build_client, build_directory, event_locks, pipeline_config
    from mailhook.locks import StoreLocks
    from mailhook.pipeline import Pipeline
    from mailhook.store import build_store

    store = build_store(settings.store)
    locks = StoreLocks(store) if settings.store.url else event_locks(settings, create=False)
    client = build_client(settings)
    moment = now or datetime.now(timezone.utc)
    pipeline = Pipeline(
        pipeline_config(settings), store, client, build_directory(settings, client),
        clock=lambda: moment, locks=locks,
    )
    try:
        return await pipeline.reschedule_due()
    finally:
        await client.aclose()
        await store.close()
