"""The command-line conventions an admin expects: --version, a description in every --help,
asking before deleting, quiet in a closed pipe, and whose 451 it is."""

from __future__ import annotations

import argparse
import os
import pty
import socket
import subprocess
import sys
import threading

import pytest

from mailhook.cli import _parser
from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS
from tests.support.invites import Event, thunderbird
from tests.support.process import (
    ROOT,
    SECRET,
    free_port,
    mailhook,
    serving,
    submit,
    write_config,
)


def commands() -> dict[str, str]:
    """Every command and sub-command ("conferences delete") and its description."""
    found: dict[str, str] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[prefix + name] = sub.description or ""
                    walk(sub, f"{prefix}{name} ")

    walk(_parser(), "")
    return found


def test_version_option_prints_what_the_version_command_prints():
    """`mailhook --version` and `mailhook version` print the same line."""
    option, command = mailhook("--version"), mailhook("version")
    assert option.returncode == 0 and command.returncode == 0
    assert option.stdout == command.stdout and option.stdout.startswith("mailhook ")


def test_every_command_help_has_a_description():
    """Each command's --help says what the command does, not only its usage."""
    for command, description in commands().items():
        assert description, command
        if command == "standin":
            continue  # the stand-in's own parser; see the next test
        result = mailhook(*command.split(), "--help")
        assert result.returncode == 0, command
        assert " ".join(description.split()[:4]) in " ".join(result.stdout.split()), command


def test_standin_help_names_the_mailhook_command():
    """`mailhook standin --help` shows the command as `mailhook standin`."""
    result = mailhook("standin", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: mailhook standin ")


@pytest.fixture
def stored_conference(tmp_path):
    """A config whose store holds one event with a conference on the running stand-in."""
    with serving(tmp_path) as daemon:
        submit(daemon.port, thunderbird(Event(uid="weekly@example.com", summary="Weekly sync")))
        daemon.stop()
        assert len(daemon.standin.conferences) == 1
        yield daemon.config, daemon.standin


def delete_on_a_terminal(config, answer: bytes) -> tuple[int, str]:
    """Run `conferences delete` with a terminal as stdin, answer the question; the exit status
    and what the terminal showed."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailhook", "conferences", "delete", "weekly@example.com",
         "--config", str(config)],
        stdin=terminal, stdout=terminal, stderr=terminal, cwd=ROOT, close_fds=True,
    )
    os.close(terminal)
    os.write(controller, answer)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return process.wait(timeout=30), shown.decode(errors="replace")


def test_delete_asks_on_a_terminal(stored_conference):
    """On a terminal, delete asks first: "n" deletes nothing (exit 1), "y" deletes."""
    config, standin = stored_conference
    status, shown = delete_on_a_terminal(config, b"n\n")
    assert status == 1 and "[y/N]" in shown and "nothing deleted" in shown
    assert len(standin.conferences) == 1
    status, shown = delete_on_a_terminal(config, b"y\n")
    assert status == 0 and "deleted conference" in shown
    assert standin.conferences == {}


def test_delete_without_a_terminal_needs_yes(stored_conference):
    """Without a terminal to ask on, delete refuses unless --yes is given."""
    config, standin = stored_conference
    refused = mailhook("conferences", "delete", "weekly@example.com", "--config", str(config))
    assert refused.returncode == 1 and "add --yes" in refused.stderr
    assert len(standin.conferences) == 1
    done = mailhook("conferences", "delete", "weekly@example.com", "--yes", "--config", str(config))
    assert done.returncode == 0 and "deleted conference" in done.stdout
    assert standin.conferences == {}


@pytest.mark.parametrize("command", [("version",), ("--help",), ("check-config",),
                                     ("conferences", "list", "--all")])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, command):
    """A command writing into a pipe whose reader has gone (`| head -1`) stops without a
    traceback or message, with the status of a command ended by SIGPIPE."""
    config = write_config(tmp_path, "http://127.0.0.1:9", 10026, 10025)
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before anything is written
    options = ("--config", str(config)) if command[0] in ("check-config", "conferences") else ()
    try:
        result = subprocess.run([sys.executable, "-m", "mailhook", *command, *options],
                                stdout=writer, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                timeout=60)
    finally:
        os.close(writer)
    # argparse itself ignores a failed write of its help, and exits 0.
    assert result.returncode == (0 if command == ("--help",) else 141), result.stderr
    assert result.stderr == ""


def busy_next_hop() -> tuple[socket.socket, threading.Thread]:
    """A next hop that answers every connection "421 busy" and hangs up."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            with client:
                client.sendall(b"421 4.3.2 busy, come back later\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return server, thread


def test_check_tells_its_own_451_from_the_next_hops_answer(tmp_path):
    """An unreachable next hop is "mailhook answered 451 itself because it cannot reach …";
    a next hop that answers is quoted as its own answer."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin:
        unreachable = write_config(tmp_path, standin.url, free_port(), 0)
        dead = mailhook("check", "--config", str(unreachable))
        server, _ = busy_next_hop()
        try:
            port = server.getsockname()[1]
            busy = mailhook("check", "--config", str(write_config(tmp_path, standin.url, port, 0)))
        finally:
            server.close()
    [own] = [line for line in dead.stdout.splitlines() if " next hop " in line]
    assert own.startswith("FAIL") and "mailhook answered 451 itself because it cannot reach " \
                                        "127.0.0.1:" in own
    [theirs] = [line for line in busy.stdout.splitlines() if " next hop " in line]
    assert theirs.startswith("FAIL") and f"127.0.0.1:{port} answered 421 4.3.2 busy" in theirs
    assert "the next hop's own answer" in theirs and "itself" not in theirs
