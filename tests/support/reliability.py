"""Figures the test suite measures about reliability, printed at the end of the run.

Tests report what they injected and what they observed; ``tests/conftest.py`` prints the sums
(docs/reliability.md quotes them).
"""

from __future__ import annotations

from collections import Counter

FIGURES: Counter[str] = Counter()


def fault(kind: str) -> None:
    """A fault was injected (TrueConf down, next hop refusing, a process killed, ...)."""
    FIGURES["faults injected"] += 1
    FIGURES[f"fault: {kind}"] += 1


def bad_input(kind: str, count: int = 1) -> None:
    """A malformed or hostile input was tried."""
    FIGURES["bad inputs tried"] += count


def hostile(kind: str, count: int = 1) -> None:
    """An input built to attack the filter was tried (it also counts as a bad input)."""
    FIGURES["hostile inputs tried"] += count
    bad_input(kind, count)


def responsiveness(worst_seconds: float) -> None:
    """How long other connections waited for an answer while a hostile input was handled;
    a wait over 2 s counts as a stall of the daemon."""
    FIGURES["stall checks"] += 1
    FIGURES["daemon stalls over 2 s"] += int(worst_seconds > 2.0)


def survived(lost: int, duplicates: bool) -> None:
    """After a fault: how many messages were lost, and whether an event got two conferences."""
    FIGURES["faults survived"] += 1 if lost == 0 and not duplicates else 0
    FIGURES["messages lost"] += lost
    FIGURES["duplicate conferences"] += int(duplicates)


def summary() -> list[str]:
    """The lines to print."""
    keys = ("faults injected", "faults survived", "bad inputs tried", "hostile inputs tried",
            "messages lost", "duplicate conferences", "stall checks", "daemon stalls over 2 s")
    return [f"{key}: {FIGURES[key]}" for key in keys]
