"""What one organizer notice costs to build: 1000 notices per case, best of five rounds.

Cases: English and Russian, an ASCII and a non-ASCII topic. Prints milliseconds per notice and
the machine's load average, for benchmarks/README.md. Run:
``.venv/bin/python benchmarks/notice_cost.py``.
"""

from __future__ import annotations

import os
import timeit
from datetime import UTC, datetime

from mailhook.core.notice import NoticeFacts, build_notice

NOW = datetime(2030, 1, 1, tzinfo=UTC)
TOPICS = {"ASCII": "Quarterly planning", "non-ASCII": "Планирование на квартал — Q3"}
NOTICES = 1000
ROUNDS = 5


def facts(topic: str) -> NoticeFacts:
    """A notice's facts as an Outlook-shaped invitation with two attendees gives them."""
    return NoticeFacts("alice@example.com", topic, 1900000000, 3600, 180,
                       "https://video.example.com/c/4000000001", ("Bob Baker",),
                       ("zoe@example.net",))


def per_notice_ms(language: str, topic: str) -> float:
    """The best round's milliseconds per notice."""
    given = facts(topic)
    rounds = timeit.repeat(lambda: build_notice(given, "noreply@example.com", language, NOW),
                           number=NOTICES, repeat=ROUNDS)
    return min(rounds) / NOTICES * 1000


def main() -> None:
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for language in ("en", "ru"):
        for kind, topic in TOPICS.items():
            print(f"{language} {kind:9} {per_notice_ms(language, topic):.3f} ms per notice")
    print(f"load average after:  {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
