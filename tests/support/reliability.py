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


def survived(lost: int, duplicates: bool) -> None:
    """After a fault: how many messages were lost, and whether an event got two conferences."""
    FIGURES["faults survived"] += 1 if lost == 0 and not duplicates else 0
    FIGURES["messages lost"] += lost
    FIGURES["duplicate conferences"] += int(duplicates)


def summary() -> list[str]:
    """The lines to print."""
    keys = ("faults injected", "faults survived", "bad inputs tried", "messages lost",
            "duplicate conferences")
    return [f"{key}: {FIGURES[key]}" for key in keys]
