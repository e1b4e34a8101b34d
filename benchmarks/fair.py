"""The fair comparison of benchmarks/run.py: CPU per message against a pooled relay.

What it measures, on the servers ``run.Bench`` starts:

- **comparison**: Outlook-shaped invitations (benchmarks/outlook.py, each a new event, so each
  creates a conference; the organizer notice on as shipped) and ordinary 4 KB mail, through
  four paths: direct to the sink, the new-connection relay, the pooled relay (the fair peer:
  it keeps its next-hop sessions open, like mailhook) and mailhook. The relays run as many
  processes as mailhook has workers. Each round sends every path the same messages, the paths
  taking turns in a rotating order; there are ``rounds`` (at least 3) rounds, so every figure
  is a min / median / max over rounds. Each round also times the TrueConf call alone: as
  many ``create_conference`` calls as invitations, through mailhook's own TrueConfClient and
  httpx's transport, at the same concurrency as in one mailhook worker (the sessions shared
  among the workers: 20 / 2 = 10 calls under way), against the same stand-in, in this
  process (``benchmarks/http_bench.py``'s method). mailhook's CPU per invitation minus that
  is the CPU "besides the HTTP call".
- **growth**: mailhook's CPU per invitation as one thing grows with the rest fixed: attendees
  (2, 26, 50; every message padded to the same size) and size (4, 52, 100 KB). Linear cost
  gives the same slope over both halves of each range; the target bounds the second half's
  slope at twice the first's (a cost quadratic in the quantity would give about 3x).

Targets are judged on the median over rounds; min and max are printed beside it.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import http_bench  # noqa: E402  (benchmarks/http_bench.py)
import load  # noqa: E402
import outlook  # noqa: E402
from load import Message  # noqa: E402

SESSIONS = 20
HTTP_PATH = "TrueConf call alone"


@dataclass
class Spread:
    """One figure over the rounds."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    def text(self, digits: int = 2) -> str:
        """"min / median / max"."""
        if not self.values:
            return "—"
        return " / ".join(f"{v:.{digits}f}" for v in (min(self.values), self.median, max(self.values)))


@dataclass
class PathFigures:
    """What one path did in every round of one workload."""

    workload: str
    path: str
    processes: int
    messages: int = 0
    rate: Spread = field(default_factory=Spread)
    cpu_ms: Spread = field(default_factory=Spread)
    refused: int = 0
    note: str = ""


def spread_of(pairs: Sequence[tuple[float, float]], combine: Callable[[float, float], float]) -> Spread:
    """A spread of ``combine(a, b)`` over rounds (a ratio or a difference of two figures)."""
    return Spread([combine(a, b) for a, b in pairs])


def _target(scenario: str, target: str, measured: str, ratio: float, needs: str,
            note: str = "") -> dict[str, Any]:
    return {"scenario": scenario, "target": target, "measured": measured, "ratio": ratio,
            "needs": needs, "note": note}


class Fair:
    """Runs the comparison and the growth checks on a ``run.Bench`` (servers, sink, stand-in)."""

    def __init__(self, bench: Any, *, invitations: int, ordinary: int, growth: int,
                 rounds: int) -> None:
        self.bench = bench
        self.invitations, self.ordinary, self.growth = invitations, ordinary, growth
        self.rounds = max(3, rounds)
        self.http_concurrency = max(1, SESSIONS // max(1, bench.workers))
        self.rows: list[PathFigures] = []
        self.targets: list[dict[str, Any]] = []

    # --- the comparison -----------------------------------------------------------------------

    def comparison(self) -> None:
        bench = self.bench
        workers = bench.workers
        bench.say(f"fair comparison: {self.rounds} rounds of {self.invitations} Outlook invitations "
                  f"and {self.ordinary} ordinary 4 KB messages through 4 paths, {SESSIONS} sessions")
        servers = [("direct to sink", bench.sink),
                   ("new-connection relay", bench.start_relay(pooled=False)),
                   ("pooled relay", bench.start_relay(pooled=True)),
                   ("mailhook", bench.start_mailhook())]
        warm = [Message.of(outlook.invitation(i, "fair-warm")) for i in range(min(100, self.invitations))]
        for _, server in servers[1:]:
            bench.warm(server.port, warm)
        figures = {(w, p): PathFigures(w, p, 1 if p == "direct to sink" else workers)
                   for w in ("Outlook invitation", "ordinary 4 KB") for p, _ in servers}
        http = PathFigures("Outlook invitation", HTTP_PATH, 1)
        created = 0
        for number in range(self.rounds):
            invites = [Message.of(outlook.invitation(i, f"fair-{number}")) for i in range(self.invitations)]
            plain = (None if bench.use_source else
                     [Message.of(load.ordinary(4096, i)) for i in range(self.ordinary)])
            before = bench.conference_count()
            for turn in range(len(servers)):
                path, server = servers[(number + turn) % len(servers)]
                self._one(figures["Outlook invitation", path], server, invites, 0)
                self._one(figures["ordinary 4 KB", path], server, plain, 4096)
            created += bench.conference_count() - before
            self._http_alone(http, self.invitations)
        for _, server in servers[1:]:
            bench.stop(server)
        mine = figures["Outlook invitation", "mailhook"]
        if created != mine.messages:
            mine.note = f"only {created} of {mine.messages} got a conference"
        self.rows += [*figures.values(), http]
        self._comparison_targets(figures, http)

    def _one(self, figure: PathFigures, server: Any, messages: Sequence[Message] | None,
             size: int) -> None:
        """One loaded run of one path: its CPU per message and its rate into ``figure``."""
        bench = self.bench
        cpu = server.cpu()
        if messages is None:
            run = bench.source(server.port, SESSIONS, self.ordinary, size)
        else:
            run = bench.drive(server.port, messages, SESSIONS)
        used = server.cpu() - cpu
        figure.messages += run.sent
        figure.refused += sum(run.failures.values())
        if run.accepted:
            figure.cpu_ms.add(used * 1000 / run.accepted)
            figure.rate.add(run.rate)

    def _http_alone(self, figure: PathFigures, calls: int) -> None:
        """CPU of this process per create_conference, with as many calls under way at once as
        one mailhook worker has sessions (its pool, and so its cost, grows with them)."""
        url = f"http://127.0.0.1:{self.bench.standin.port}"
        concurrency = self.http_concurrency
        calls = max(concurrency, calls // concurrency * concurrency)
        transport = http_bench.TRANSPORTS["client default (httpx transport)"]
        cpu, wall = asyncio.run(http_bench.one_slice(url, transport, calls, concurrency))
        figure.messages += calls
        figure.cpu_ms.add(cpu * 1000 / calls)
        figure.rate.add(calls / wall)

    def _comparison_targets(self, figures: dict[tuple[str, str], PathFigures],
                            http: PathFigures) -> None:
        invite = figures["Outlook invitation", "mailhook"]
        pooled_invite = figures["Outlook invitation", "pooled relay"]
        plain = figures["ordinary 4 KB", "mailhook"]
        pooled_plain = figures["ordinary 4 KB", "pooled relay"]
        note = invite.note or _refused(invite, pooled_invite)
        pairs = list(zip(invite.cpu_ms.values, http.cpu_ms.values))
        besides = spread_of(pairs, lambda total, call: total - call)
        self.targets.append(_target(
            "Outlook invitation (new conference): CPU besides the TrueConf call",
            "≤ 3 ms (mailhook's CPU minus the call's alone)",
            f"{besides.text()} ms (min/median/max; the call alone {http.cpu_ms.text()} ms)",
            besides.median / 3.0, "<= 1.00", note))
        self.targets.append(_target(
            "Outlook invitation (new conference): CPU in all",
            "≤ 4.5 ms with httpx's own transport",
            f"{invite.cpu_ms.text()} ms (min/median/max)", invite.cpu_ms.median / 4.5, "<= 1.00", note))
        for label, mine, peer, factor in (
            ("Outlook invitations (distinct) vs pooled relay", invite, pooled_invite, 0.5),
            ("ordinary 4 KB vs pooled relay", plain, pooled_plain, 1.5),
        ):
            ratio = spread_of(list(zip(mine.rate.values, peer.rate.values)), lambda a, b: a / b)
            self.targets.append(_target(
                f"{label}, 20 sessions: msg/s",
                f"≥ {factor}× the pooled relay's rate (same bytes, same processes)",
                f"{ratio.text()}× (min/median/max; {mine.rate.median:.0f} vs "
                f"{peer.rate.median:.0f} msg/s)",
                ratio.median, f">= {factor:.2f}", mine.note or _refused(mine, peer)))
            # What the rate would be with the CPU alone the limit: steadier on a busy machine.
            capacity = spread_of(list(zip(peer.cpu_ms.values, mine.cpu_ms.values)), lambda a, b: a / b)
            self.targets.append(_target(
                f"{label}: messages per CPU second",
                f"(not a target) the same factor on CPU per message, ≥ {factor}×",
                f"{capacity.text()}× (min/median/max; {peer.cpu_ms.median:.2f} vs "
                f"{mine.cpu_ms.median:.2f} ms)",
                capacity.median, f">= {factor:.2f}", "informative"))

    # --- growth ---------------------------------------------------------------------------------

    def growth_checks(self) -> None:
        bench = self.bench
        bench.say(f"growth: {self.rounds} rounds of {self.growth} Outlook invitations for each of "
                  "2/26/50 attendees and 4/52/100 KB, one mailhook")
        points = {"attendees": [(2, 12288), (26, 12288), (50, 12288)],
                  "size": [(3, 4096), (3, 53248), (3, 102400)]}
        server = bench.start_mailhook()
        bench.warm(server.port, [Message.of(outlook.invitation(i, "growth-warm", guests=50))
                                 for i in range(min(50, self.growth))])
        figures = {(kind, point): PathFigures(f"growth: {kind}", _point_label(kind, point), bench.workers)
                   for kind, chosen in points.items() for point in chosen}
        keys = list(figures)
        for number in range(self.rounds):
            for turn in range(len(keys)):
                kind, (guests, size) = key = keys[(number + turn) % len(keys)]
                messages = [Message.of(outlook.invitation(i, f"g{number}-{kind}-{guests}-{size}",
                                                          guests=guests, pad_to=size))
                            for i in range(self.growth)]
                self._one(figures[key], server, messages, 0)
        bench.stop(server)
        self.rows += figures.values()
        for kind, chosen in points.items():
            low, mid, high = (figures[kind, point] for point in chosen)
            quantity = [p[0] if kind == "attendees" else p[1] for p in chosen]
            unit, per = ("attendee", 1) if kind == "attendees" else ("KB", 1024)
            rounds = spread_of([(slope_ratio(quantity, (lo, m, h)), 0.0) for lo, m, h in
                                zip(low.cpu_ms.values, mid.cpu_ms.values, high.cpu_ms.values)],
                               lambda ratio, _: ratio)
            medians = (low.cpu_ms.median, mid.cpu_ms.median, high.cpu_ms.median)
            first = (medians[1] - medians[0]) / (quantity[1] - quantity[0]) * per * 1000
            second = (medians[2] - medians[1]) / (quantity[2] - quantity[1]) * per * 1000
            self.targets.append(_target(
                f"CPU per invitation against {kind}: not superlinear",
                "slope over the upper half ≤ 2× the lower half's (median CPU of each point)",
                f"{low.path} {medians[0]:.2f}, {mid.path} {medians[1]:.2f}, "
                f"{high.path} {medians[2]:.2f} ms; {first:.0f} then {second:.0f} µs per "
                f"{unit}; per round {rounds.text()}",
                slope_ratio(quantity, medians), "<= 2.00", _refused(low, mid, high)))


def slope_ratio(quantity: Sequence[int], cpu: Sequence[float]) -> float:
    """How much steeper CPU grows over the upper half of the range than over the lower half:
    1 for linear growth, about 3 for growth with the square of 2, 26, 50. When the lower half
    shows no growth (noise on a cost too small to see), the whole range's slope stands in for
    it; when neither does, the cost is flat: 0."""
    tiny = 1e-9  # ms per unit: below it a slope is rounding, not growth
    first = (cpu[1] - cpu[0]) / (quantity[1] - quantity[0])
    second = max(0.0, (cpu[2] - cpu[1]) / (quantity[2] - quantity[1]))  # falling: not superlinear
    overall = (cpu[2] - cpu[0]) / (quantity[2] - quantity[0])
    base = first if first > tiny else overall
    return second / base if base > tiny else 0.0


def _point_label(kind: str, point: tuple[int, int]) -> str:
    guests, size = point
    return f"{guests} attendees" if kind == "attendees" else f"{size // 1024} KB"


def _refused(*figures: PathFigures) -> str:
    refused = sum(f.refused for f in figures)
    return f"{refused} refused" if refused else ""


def table(rows: Sequence[PathFigures], markdown: Callable[[Sequence[str], Sequence[Sequence[str]]], str]) -> str:
    """The comparison's figures: min / median / max over rounds, per path."""
    header = ["workload", "path", "procs", "msgs", "msg/s min / med / max", "CPU ms/msg min / med / max"]
    body = [[r.workload, r.path, str(r.processes), str(r.messages), r.rate.text(0), r.cpu_ms.text(2)]
            for r in rows]
    return markdown(header, body)
