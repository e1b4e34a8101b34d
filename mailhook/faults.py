"""Named points in the pipeline where a crash test can freeze mailhook and kill it.

When ``MAILHOOK_PAUSE_AT`` names a point, the process writes ``MAILHOOK_PAUSE_FILE`` on
reaching it and then waits forever, so that a test can SIGKILL it at exactly that step. Unset
(always, in production), a checkpoint costs one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


async def checkpoint(name: str) -> None:
    """Pause here forever if a crash test asked for this point."""
    if os.environ.get("MAILHOOK_PAUSE_AT") != name:
        return
    marker = os.environ.get("MAILHOOK_PAUSE_FILE")
    if marker:
        Path(marker).write_text(name)
    await asyncio.Event().wait()
