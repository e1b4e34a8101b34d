"""Due work taken from the store under a claim, so that of several instances sharing one store
each piece is done by one of them (see ``mailhook.store.base``).

A claim lasts a lease; the lease of an instance that died runs out and another takes the work.
The holder writes the row when it is done (that ends the claim). Taking a row whose lease ran
out while its holder was still at it only repeats a check: the work is checked against the
stored event first.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from mailhook.store.base import CLAIM_BATCH

T = TypeVar("T")
# Claims one pass makes at most (CLAIM_BATCH rows each); the rest waits for the next pass.
MAX_BATCHES = 20

Claim = Callable[[float, str, float, int], Awaitable[list[T]]]


def claimant() -> str:
    """This process, as written into the rows it claims (host and process id)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease(trueconf_timeout: float, retry_interval: float) -> float:
    """Seconds a claim lasts: long enough for the calls one piece of work makes to TrueConf
    (a read, then the change) to time out, and a pass to come round."""
    return 3 * trueconf_timeout + retry_interval


async def claimed(claim: Claim[T], now: float, seconds: float) -> AsyncIterator[T]:
    """The work due at ``now`` that this process claimed, batch after batch, until a batch
    comes back short (nothing more is due) or MAX_BATCHES were taken."""
    for _ in range(MAX_BATCHES):
        batch = await claim(now, claimant(), seconds, CLAIM_BATCH)
        for item in batch:
            yield item
        if len(batch) < CLAIM_BATCH:
            return
