#!/usr/bin/env python3
"""Time the pure core path for one invitation: the fast-path test, the parse and the rewrite.

    .venv/bin/python benchmarks/core_bench.py              # 2000 messages, best of 5 rounds
    .venv/bin/python benchmarks/core_bench.py -n 500 -r 3
    .venv/bin/python benchmarks/core_bench.py --profile    # cProfile of parse + rewrite
    .venv/bin/python benchmarks/core_bench.py --shape thunderbird

The messages are, by default, benchmarks/outlook.py's Outlook-shaped invitations
(multipart/alternative with text/plain, text/html and a base64 text/calendar carrying a
VTIMEZONE, about 4 KB); with ``--shape thunderbird``, benchmarks/load.py's Thunderbird-style
ones (multipart/mixed with a text/plain body, a text/calendar part and the same object again
as an application/ics attachment). Each has a UID of its own. Figures are milliseconds per message,
the best round of each step.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import outlook  # noqa: E402  (benchmarks/outlook.py, next to this script)
from load import invitation  # noqa: E402  (benchmarks/load.py, next to this script)

from mailhook.config import PolicySettings  # noqa: E402
from mailhook.core.mime import may_contain_calendar, parse_message  # noqa: E402
from mailhook.core.model import LinkInsertion, ParsedMessage  # noqa: E402
from mailhook.core.rewrite import rewrite_message  # noqa: E402

URL = "https://video.example.com/c/0123456789"


def _insertion() -> LinkInsertion:
    """The insertion mailhook/handling.py builds, with the configuration's default keywords."""
    keywords = PolicySettings.model_fields["keywords"].default
    return LinkInsertion(url=URL, keywords=keywords, language="en")


def _best(rounds: int, step: Callable[[], None], setup: Callable[[], None] | None = None) -> float:
    """The shortest of ``rounds`` timed runs of ``step``, each after an untimed ``setup``."""
    best = float("inf")
    for _ in range(rounds):
        if setup is not None:
            setup()
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--messages", type=int, default=2000)
    parser.add_argument("-r", "--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile parse + rewrite")
    parser.add_argument("--sort", default="tottime", help="cProfile sort key (tottime, cumulative)")
    parser.add_argument("--shape", choices=("outlook", "thunderbird"), default="outlook")
    args = parser.parse_args()

    make = outlook.invitation if args.shape == "outlook" else invitation
    messages = [make(number, "bench") for number in range(args.messages)]
    insertion = _insertion()
    parsed: list[ParsedMessage] = [parse_message(raw) for raw in messages]
    assert all(not item.skip_reason for item in parsed), parsed[0].skip_reason

    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        for raw in messages:
            rewrite_message(parse_message(raw), insertion)
        profile.disable()
        pstats.Stats(profile).sort_stats(args.sort).print_stats(30)
        return

    def fast_path() -> None:
        for raw in messages:
            may_contain_calendar(raw)

    def parse() -> None:
        for raw in messages:
            parse_message(raw)

    def parse_again() -> None:
        # each round rewrites freshly parsed messages, as the daemon does
        parsed[:] = [parse_message(raw) for raw in messages]

    def rewrite() -> None:
        for item in parsed:
            rewrite_message(item, insertion)

    def both() -> None:
        for raw in messages:
            rewrite_message(parse_message(raw), insertion)

    size = sum(len(raw) for raw in messages) // len(messages)
    print(f"{len(messages)} invitations of {size} bytes, best of {args.rounds} rounds")
    for label, step, setup in (
        ("may_contain_calendar", fast_path, None),
        ("parse_message", parse, None),
        ("rewrite_message", rewrite, parse_again),
        ("parse + rewrite", both, None),
    ):
        seconds = _best(args.rounds, step, setup)
        print(f"  {label:<22}{seconds * 1000 / len(messages):8.4f} ms/message")


if __name__ == "__main__":
    main()
