"""Resource limits of the listener through the real daemon: command line length, message size
counted as relayed, concurrent connections, and the open-files limit."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from mailhook.relay import wire_form
from mailhook.testing.sink import Sink
from tests.support import reliability
from tests.support.daemon import invitations
from tests.support.invites import plain_mail
from tests.support.process import ROOT, free_port, wait_for_port, write_config
from tests.support.rawsmtp import RawClient
from tests.support.trace import untraced

MiB = 1024 * 1024


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Log records that carry a traceback."""
    return [record for record in caplog.records if record.exc_info or record.stack_info]


async def flood_one_command_line(port: int, size: int) -> str:
    """Send ``size`` octets of one command line without its CRLF; the reply that came."""
    client = await RawClient.connect(port)
    piece = b"x" * (64 * 1024)
    client.writer.write(b"MAIL FROM:<")
    for _ in range(size // len(piece)):
        client.writer.write(piece)
        await client.writer.drain()
    reply = await client.reply()
    # The line ends at last; the session goes on as if it had never been sent.
    client.writer.write(b"\r\n")
    noop = await client.command("NOOP")
    await client.close()
    return reply + noop


async def test_overlong_command_lines_get_500_at_once_and_are_not_buffered(daemon, caplog):
    """20 clients each sending 2 MiB of one command line get 500 before the line ends, the
    session goes on, and the daemon's memory grows by far less than what they sent."""
    reliability.hostile("2 MiB command line without CRLF")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        replies = await asyncio.wait_for(
            asyncio.gather(*(flood_one_command_line(daemon.port, 2 * MiB) for _ in range(20))),
            120)
        growth = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert replies == ["500 5.5.2 Line too long\r\n250 OK\r\n"] * 20  # then NOOP's answer
    assert growth < 30 * MiB, f"{growth / MiB:.1f} MiB"
    assert tracebacks(caplog) == []


async def test_command_lines_may_exceed_512_octets_up_to_the_cap(daemon, sink):
    """A 1,500-octet command (XFORWARD with long values) is taken: extensions need the room."""
    client = await RawClient.connect(daemon.port)
    attributes = " ".join(f"{name}={'a' * 250}" for name in ("NAME", "HELO", "IDENT", "SOURCE"))
    line = f"XFORWARD {attributes} PROTO=ESMTP"
    assert 1000 < len(line) < 2048
    assert (await client.command(line)).startswith("250")
    await client.close()


async def test_long_message_lines_are_relayed_intact(daemon, sink):
    """Lines of 100 KB and 1 MB inside DATA (one starting with a dot) are taken and reach the
    next hop whole, folded for the wire the way Postfix folds long lines."""
    reliability.hostile("100 KB and 1 MB lines in a message")
    content = (plain_mail().replace(b"Hello.\r\n", b"")
               + b"y" * 100_000 + b"\r\n" + b"." + b"z" * MiB + b"\r\n.\r\n..\r\nend\r\n")
    client = await RawClient.connect(daemon.port)
    assert (await client.command("MAIL FROM:<alice@example.com>")).startswith("250")
    assert (await client.command("RCPT TO:<bob@example.com>")).startswith("250")
    reply = await client.message(content)
    await client.close()
    assert reply.startswith("250"), reply
    delivered = untraced(invitations(sink)[0].content)
    assert delivered == wire_form(content) and delivered.replace(b"\r\n ", b"") == content


def dotted_message(size: int) -> bytes:
    """A message of exactly ``size`` octets (as relayed) where most lines start with a dot."""
    head = b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: dots\r\nX-Pad: "
    body = (b"." + b"d" * 60 + b"\r\n") * ((size - 200) // 63)
    return head + b"p" * (size - len(head) - 4 - len(body)) + b"\r\n\r\n" + body


async def test_message_size_limit_counts_the_message_as_relayed_not_dot_stuffed(start_daemon, sink):
    """A message exactly at smtp.max_message_size with many dot lines is taken; one octet more
    gets 552 (the dots SMTP adds in transit are not counted)."""
    reliability.hostile("message at the size limit made of dot lines")
    limit = 100_000
    daemon = await start_daemon(smtp={"max_message_size": limit})
    exact = dotted_message(limit)
    assert len(exact) == limit and exact.count(b"\r\n.") > 1000
    client = await RawClient.connect(daemon.port)
    for content, expected in ((exact, "250"), (dotted_message(limit + 1), "552")):
        assert (await client.command("MAIL FROM:<alice@example.com>")).startswith("250")
        assert (await client.command("RCPT TO:<bob@example.com>")).startswith("250")
        reply = await client.message(content)
        assert reply.startswith(expected), reply
    await client.close()
    assert [untraced(m.content) for m in invitations(sink)] == [exact]


async def test_size_parameter_over_the_limit_is_refused_at_mail(start_daemon, sink):
    """MAIL FROM with SIZE= above smtp.max_message_size gets 552 before any data is sent."""
    daemon = await start_daemon(smtp={"max_message_size": 100_000})
    client = await RawClient.connect(daemon.port)
    assert (await client.command("MAIL FROM:<alice@example.com> SIZE=100001")).startswith("552")
    assert (await client.command("MAIL FROM:<alice@example.com> SIZE=100000")).startswith("250")
    await client.close()


async def test_connections_over_max_connections_get_421_and_the_others_are_served(
    start_daemon, sink, caplog
):
    """With smtp.max_connections = 5, further clients get 421 and are closed, with one warning
    line and no traceback; the five are served, and a freed place is taken again."""
    reliability.hostile("connections over smtp.max_connections")
    daemon = await start_daemon(smtp={"max_connections": 5})
    admitted = [await RawClient.connect(daemon.port, ehlo=False) for _ in range(5)]
    refused = []
    for _ in range(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        greeting = (await asyncio.wait_for(reader.readline(), 30)).decode()
        closed = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        refused.append((greeting, closed))
    assert refused == [("421 4.7.0 Too many connections, try again later\r\n", b"")] * 10
    first = admitted[0]
    assert (await first.command("EHLO client.test")).startswith("250")
    assert (await first.command("MAIL FROM:<alice@example.com>")).startswith("250")
    assert (await first.command("RCPT TO:<bob@example.com>")).startswith("250")
    assert (await first.message(plain_mail())).startswith("250")
    await admitted.pop().close()
    for _ in range(100):  # the server sees the close a moment later
        again = await asyncio.open_connection("127.0.0.1", daemon.port)
        greeting = (await asyncio.wait_for(again[0].readline(), 30)).decode()
        again[1].close()
        if greeting.startswith("220"):
            break
        await asyncio.sleep(0.05)
    assert greeting.startswith("220"), greeting
    for client in admitted:
        await client.close()
    warnings = [r.getMessage() for r in caplog.records if "max_connections" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert tracebacks(caplog) == []
    assert len(invitations(sink)) == 1


# --- the open-files limit, with the daemon as its own process ---------------------------------


def serve_with_open_files(tmp_path: Path, sink: Sink, standin_url: str, files: int,
                          extra_config: str = "", hold: int = 0) -> tuple[subprocess.Popen[str], int]:
    """`mailhook serve` with RLIMIT_NOFILE at ``files`` (soft and hard), holding ``hold``
    extra open files from the start (as other work of the process would); and its port."""
    port = free_port()
    config = write_config(tmp_path, standin_url, sink.port, port)
    config.write_text(config.read_text().replace("[smtp]\n", f"[smtp]\n{extra_config}")
                      + "[metrics]\nenabled = false\n[notice]\nenabled = false\n")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    # The files are opened in the new process itself, so they take its lowest descriptor
    # numbers: the limit counts numbers, and ones inherited from a busy test run could lie
    # above it and leave the daemon its whole allowance.
    command = [sys.executable, "-m", "mailhook", "serve", "--config", str(config)]
    opener = ("import os, sys\n"
              f"for _ in range({hold}): os.set_inheritable(os.open(os.devnull, os.O_RDONLY), True)\n"
              f"os.execv(sys.executable, {command!r})\n")
    process = subprocess.Popen(
        [sys.executable, "-c", opener],
        cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("MAILHOOK_")},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=limit,
    )
    wait_for_port(port, process, timeout=30)
    return process, port


def stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


def idle_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that say nothing."""
    opened = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        opened.append(client)
    return opened


def greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        return client.recv(200)


def test_max_connections_is_lowered_to_what_the_open_files_limit_holds(tmp_path, sink, standin):
    """Under a 300-file limit, max_connections = 1000 is lowered with one warning at start-up;
    connections past the lowered cap get 421 and nothing logs a traceback."""
    reliability.hostile("idle connections past the open-files limit")
    process, port = serve_with_open_files(tmp_path, sink, standin.url, 300, "max_connections = 1000\n")
    try:
        opened = idle_connections(port, 400)
        replies = [client.recv(200) for client in opened]
        for client in opened:
            client.close()
        time.sleep(0.5)
        after = greeting(port)
    finally:
        log = stop(process)
    admitted = sum(reply.startswith(b"220") for reply in replies)
    assert 0 < admitted < 150, admitted
    assert all(r.startswith(b"421 4.7.0") for r in replies if not r.startswith(b"220")), replies
    assert after.startswith(b"220")
    assert log.count("smtp.max_connections") >= 1
    assert "lowered to" in log and log.count("lowered to") == 1, log
    assert "Traceback" not in log, log[-3000:]


def test_accept_errors_at_the_open_files_limit_log_no_traceback_flood(tmp_path, sink, standin):
    """When the process runs out of files anyway (here: files held by something else), failed
    accepts are logged in a few lines, not one traceback each, and serving resumes after."""
    reliability.hostile("connections while the process is out of files")
    process, port = serve_with_open_files(tmp_path, sink, standin.url, 512, hold=400)
    try:
        opened = idle_connections(port, 150)
        time.sleep(3)  # asyncio retries accept() every second while files are short
        for client in opened:
            client.close()
        time.sleep(1.5)
        after = greeting(port)
    finally:
        log = stop(process)
    assert after.startswith(b"220")
    assert "Traceback" not in log, log[-3000:]
    assert 1 <= log.count("out of files") <= 3, log[-3000:]
