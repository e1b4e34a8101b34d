"""``mailhook reschedule``: one pass moving conferences of recurring events to their next
occurrence, for cron and for admins. The daemon runs the same pass periodically."""

from __future__ import annotations

from datetime import datetime

from mailhook.app import App
from mailhook.config import Settings


async def reschedule_once(settings: Settings, now: datetime | None = None) -> int:
    """Run one pass against the configured store and TrueConf; the number of conferences moved."""
    app = App.for_tools(settings, (lambda: now) if now is not None else None)
    try:
        return await app.rescheduler.run_once()
    finally:
        await app.aclose()
