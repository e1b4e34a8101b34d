#!/usr/bin/env python3
"""CPU cost of one TrueConf API call through TrueConfClient and httpx's own transport.

    .venv/bin/python benchmarks/http_bench.py                # 2000 calls per transport
    .venv/bin/python benchmarks/http_bench.py --calls 500 --concurrency 20

Starts the TrueConf API stand-in as its own process on loopback, then makes
``create_conference`` calls (one after another, or ``--concurrency`` at a time as from that many
SMTP sessions) through ``TrueConfClient`` with its default transport (httpx's
``AsyncHTTPTransport``, httpcore over anyio, with the client's pool limits). A second row,
``httpx.MockTransport``, answers in-process without any socket: the floor set by TrueConfClient
and httpx.AsyncClient themselves, so the difference is what the HTTP exchange costs. The calls
go in alternating slices so drift in the machine's speed hits both alike. Reported per call:
CPU time of this process (time.process_time(), the stand-in excluded) and wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailhook.core.model import ConferenceSpec, Invitee  # noqa: E402
from mailhook.trueconf.client import TrueConfClient  # noqa: E402

SECRET = "bench-only-client-secret"  # the stand-in's, never a real one
SPEC = ConferenceSpec(
    topic="Benchmark",
    owner="alice",
    invitees=(Invitee("bob", "Bob Baker"), Invitee("carol")),
    start=1767261600,
    duration=3600,
    role_based=False,
    max_participants=36,
    tag="mailhook-bench",
    description="",
    utc_offset_minutes=0,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_standin(port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "mailhook.testing.standin", "--port", str(port),
            "--users", str(ROOT / "config" / "standin-users.json"), "--client-secret", SECRET]
    process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the stand-in exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError("the stand-in did not come up")


def reset_standin(port: int) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/_standin/reset", data=b"{}",
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30):
        pass


def mock_transport(url: str) -> httpx.MockTransport:
    conference = {"conference": {"id": "4000000001", "url": f"{url}/c/4000000001",
                                 "topic": SPEC.topic, "tags": [SPEC.tag]}}
    token = {"access_token": "t", "token_type": "bearer", "expires_in": 3600}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json=token)
        return httpx.Response(200, json=conference)

    return httpx.MockTransport(answer)


TRANSPORTS: dict[str, Callable[[str], httpx.AsyncBaseTransport | None]] = {
    "client default (httpx transport)": lambda url: None,
    "MockTransport (no socket, floor)": mock_transport,
}


async def one_slice(url: str, make: Callable[[str], httpx.AsyncBaseTransport | None],
                    calls: int, concurrency: int = 1) -> tuple[float, float]:
    """Make ``calls`` creates, ``concurrency`` at a time (as that many SMTP sessions would);
    return (CPU seconds, wall seconds) spent in them."""
    transport = make(url)
    async with TrueConfClient(url, "mailhook", SECRET, transport=transport) as client:
        if transport is None:
            assert isinstance(client._http._transport, httpx.AsyncHTTPTransport)
        await client.create_conference(SPEC)  # token, connection and imports out of the timing
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()

        async def session(count: int) -> None:
            for _ in range(count):
                await client.create_conference(SPEC)

        await asyncio.gather(*(session(calls // concurrency) for _ in range(concurrency)))
        return time.process_time() - cpu, time.perf_counter() - wall


async def bench(port: int, calls: int, slices: int,
                concurrency: int = 1) -> dict[str, tuple[float, float]]:
    url = f"http://127.0.0.1:{port}"
    totals = {name: [0.0, 0.0] for name in TRANSPORTS}
    per_slice = calls // slices
    names = list(TRANSPORTS)
    for index in range(slices):
        for name in names[index % len(names):] + names[:index % len(names)]:
            reset_standin(port)
            cpu, wall = await one_slice(url, TRANSPORTS[name], per_slice, concurrency)
            totals[name][0] += cpu
            totals[name][1] += wall
    done = per_slice // concurrency * concurrency * slices
    return {name: (cpu / done, wall / done) for name, (cpu, wall) in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per transport (2000)")
    parser.add_argument("--slices", type=int, default=4, help="alternating slices (4)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="calls under way at once, as from that many SMTP sessions (1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    port = free_port()
    standin = start_standin(port)
    try:
        figures = asyncio.run(bench(port, args.calls, args.slices, max(1, args.concurrency)))
    finally:
        standin.terminate()
        standin.wait(timeout=10)
    if args.json:
        print(json.dumps({name: {"cpu_ms": cpu * 1e3, "wall_ms": wall * 1e3}
                          for name, (cpu, wall) in figures.items()}, indent=2))
        return
    print(f"{args.calls} create_conference calls per transport, {args.concurrency} at a time, "
          "stand-in on loopback")
    print(f"{'transport':<34} {'CPU ms/call':>12} {'wall ms/call':>13}")
    for name, (cpu, wall) in figures.items():
        print(f"{name:<34} {cpu * 1e3:>12.3f} {wall * 1e3:>13.3f}")
    default_cpu = figures["client default (httpx transport)"][0]
    floor = figures["MockTransport (no socket, floor)"][0]
    print(f"HTTP exchange above the floor: {(default_cpu - floor) * 1e3:.3f} ms of CPU per call")

if __name__ == "__main__":
    main()
