"""Per-event locks: within a process, and across processes through the lock file."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

from mailhook.locks import STRIPES, EventLocks, stripe_of

HOLDER = textwrap.dedent("""
    import asyncio, sys
    from mailhook.locks import EventLocks

    async def main():
        locks = EventLocks(sys.argv[1])
        async with locks.hold(("alice@example.com", "uid-1")):
            print("held", flush=True)
            await asyncio.sleep(float(sys.argv[2]))

    asyncio.run(main())
""")


def test_stripes_are_stable_and_in_range() -> None:
    key = ("alice@example.com", "uid-1")
    assert stripe_of(key) == stripe_of(("alice@example.com", "uid-1"))
    assert 0 <= stripe_of(key) < STRIPES
    assert len({stripe_of(("alice@example.com", f"uid-{i}")) for i in range(1000)}) > 990


async def test_another_process_holding_the_event_makes_us_wait(tmp_path) -> None:
    path = str(tmp_path / "store.locks")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path, "0.8"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        locks = EventLocks(path)
        started = time.monotonic()
        async with locks.hold(("alice@example.com", "uid-2")):  # another event: no wait
            assert time.monotonic() - started < 0.3
        async with locks.hold(("alice@example.com", "uid-1")):
            waited = time.monotonic() - started
        assert waited > 0.4
    finally:
        holder.wait(timeout=10)


async def test_tasks_of_one_process_take_turns(tmp_path) -> None:
    locks = EventLocks.for_path(str(tmp_path / "store.locks"))
    assert EventLocks.for_path(str(tmp_path / "store.locks")) is locks
    order: list[str] = []

    async def worker(name: str) -> None:
        async with locks.hold(("alice@example.com", "uid-1")):
            order.append(f"{name} in")
            await asyncio.sleep(0.05)
            order.append(f"{name} out")

    await asyncio.gather(worker("a"), worker("b"))
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    assert len(locks) == 0
