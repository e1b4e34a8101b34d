"""`mailhook explain` says what the daemon does: every fixture and corpus message goes through
explain and then through the real daemon (same settings, stored state and clock), and both name
the same decision."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailhook.app import open_store
from mailhook.core.mime import parse_message
from mailhook.explain import explain
from tests.fixtures.checks import CORPUS_MISSING, MESSAGES, as_message, corpus_files, on_the_wire
from tests.integration.conftest import send
from tests.support.clock import Clock

# The real time when the suite runs: most samples' events are over by then.
TODAY = datetime.now(UTC).replace(microsecond=0)
_DECISION_FIELD = re.compile(r"\bdecision=(\S+)")


def _samples(paths: list[Path]) -> list[tuple[str, bytes, str, datetime]]:
    """(name, bytes on the wire, organizer as envelope sender, a day before the event)."""
    samples = []
    for path in paths:
        parsed = parse_message(as_message(path))
        events = parsed.calendar.events if parsed.calendar else ()
        organizer = next((e.organizer for e in events if "@" in e.organizer), parsed.from_address)
        organizer = organizer or "organizer@example.com"
        starts = [e.start for e in events if e.start is not None]
        before = min(starts) - timedelta(days=1) if starts else TODAY
        raw = on_the_wire(as_message(path, sender=organizer))
        samples.append((path.name, raw if raw.endswith(b"\r\n") else raw + b"\r\n", organizer,
                        before))
    return samples


def _explained(lines: list[str]) -> str:
    decision = next(line for line in lines if line.startswith("decision: "))
    return decision.removeprefix("decision: ").split()[0]


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    lines = [r.getMessage() for r in caplog.records
             if r.name == "mailhook" and r.getMessage().startswith("queue_id=")]
    found = _DECISION_FIELD.search(lines[-1])
    assert found, lines[-1]
    return found.group(1)


async def _disagreements(start_daemon: Callable[..., Any], caplog: pytest.LogCaptureFixture,
                         samples: list[tuple[str, bytes, str, datetime]],
                         before_the_event: bool) -> tuple[list[str], int]:
    """Run every sample through explain, then the daemon; the ones they disagree on."""
    domains = sorted({organizer.rpartition("@")[2] for _, _, organizer, _ in samples})
    clock = Clock(TODAY)
    daemon = await start_daemon(
        clock=clock,
        policy={"trigger": "always", "local_domains": domains},
        trueconf={"user_mapping": "local_part"},
        notice={"enabled": False},
    )
    wrong, acted = [], 0
    # What `mailhook explain` reads: the daemon's store, opened read-only beside it.
    store = open_store(daemon.settings, read_only=True)
    try:
        for name, raw, organizer, before in samples:
            clock.set(before if before_the_event else TODAY)
            said = _explained(await explain(raw, daemon.settings, organizer, store, clock()))
            caplog.clear()
            await send(daemon, raw, sender=organizer, rcpts=("attendee@corpus.example",))
            done = _logged(caplog)
            acted += done != "pass"
            if said != done:
                wrong.append(f"{name}: explain says {said}, the daemon did {done}")
    finally:
        await store.close()
    return wrong, acted


@pytest.mark.parametrize("before_the_event", [False, True], ids=["today", "before-the-event"])
async def test_explain_agrees_with_the_daemon_on_every_fixture(start_daemon, caplog,
                                                               before_the_event):
    """For each fixture message, explain's decision is the decision the daemon logs, both with
    the clock at today's date (most events over) and a day before each event."""
    caplog.set_level(logging.INFO, logger="mailhook")
    samples = _samples(sorted(MESSAGES.glob("*.eml")))
    wrong, acted = await _disagreements(start_daemon, caplog, samples, before_the_event)
    assert not wrong, "\n".join(wrong)
    assert acted >= (20 if before_the_event else 0)


@pytest.mark.corpus
@pytest.mark.parametrize("before_the_event", [False, True], ids=["today", "before-the-event"])
async def test_explain_agrees_with_the_daemon_on_the_corpus(start_daemon, caplog,
                                                            before_the_event):
    """For each public corpus message, explain's decision is the decision the daemon logs."""
    paths = corpus_files()
    if not paths:
        pytest.skip(CORPUS_MISSING)
    caplog.set_level(logging.INFO, logger="mailhook")
    wrong, acted = await _disagreements(start_daemon, caplog, _samples(paths), before_the_event)
    assert not wrong, "\n".join(wrong)
    assert acted >= (30 if before_the_event else 0)
