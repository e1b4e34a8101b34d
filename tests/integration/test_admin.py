"""The admin commands as a mail admin runs them: check, conferences, reschedule, reload."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS
from tests.support.invites import Event, thunderbird
from tests.support.process import (
    ROOT,
    SECRET,
    free_port,
    mailhook,
    serve,
    serving,
    submit,
    wait_for_port,
    write_config,
)


def state_change(manager: socket.socket) -> bytes:
    """The next notification other than a STATUS update or a watchdog ping."""
    while True:
        datagram = manager.recv(4096)
        if not datagram.startswith((b"STATUS=", b"WATCHDOG=")):
            return datagram


def test_check_passes_with_a_verdict_per_line(tmp_path):
    """`mailhook check` says ok for config, store, TrueConf and next hop, and exits 0."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin, Sink() as sink:
        result = mailhook("check", "--config", str(write_config(tmp_path, standin.url, sink.port, 0)))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in ("config", "store", "trueconf", "trueconf api", "trueconf users", "next hop"):
        assert any(line.startswith("ok") and f"  {name}  " in line for line in lines), name
    assert "users API answers: 7 account(s), 7 with an e-mail address" in result.stdout
    assert lines[-1] == "mailhook check: all 6 checks passed"


def test_check_fails_when_the_application_may_not_read_users(tmp_path):
    """A token that works for conferences but not for the users API is a FAIL line naming the
    missing permission: check asks the users API, not only for a token."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET,
                 scopes=("conferences",)) as standin, Sink() as sink:
        config = write_config(tmp_path, standin.url, sink.port, 0)
        result = mailhook("check", "--config", str(config))
        local_part = mailhook("check", "--config", str(write_config(tmp_path, standin.url,
                                                                    sink.port, 0)),
                              env={"MAILHOOK_TRUECONF__USER_MAPPING": "local_part"})
    assert result.returncode == 1
    [failed] = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert "  trueconf users  " in failed and "HTTP 403 forbidden" in failed
    assert "users read permission" in failed
    assert any(line.startswith("ok    trueconf api") for line in result.stdout.splitlines())
    assert local_part.returncode == 0, local_part.stdout
    assert "not used (trueconf.user_mapping = 'local_part')" in local_part.stdout


def test_check_fails_on_bad_credentials_and_dead_next_hop(tmp_path):
    """Wrong credentials and an unreachable next hop are FAIL lines and exit 1, secret unshown."""
    with StandIn(users=USERS, client_id="mailhook", client_secret="another-secret") as standin:
        config = write_config(tmp_path, standin.url, free_port(), 0)
        result = mailhook("check", "--config", str(config))
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert any(" trueconf " in line for line in failed) and any(" next hop " in line for line in failed)
    assert "2 of 4 checks FAILED" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def milter_verdict(tmp_path, listen: str, running: bool = False) -> tuple[int, str]:
    """`mailhook check`'s exit status and its milter line with ``[milter] listen`` set, while
    a `mailhook serve` runs: a milter-only one on that socket when ``running``, else one that
    serves SMTP alone."""
    served = {"MAILHOOK_MILTER__LISTEN": listen, "MAILHOOK_SMTP__ENABLED": "false"} \
        if running else {}
    ready = int(listen.rsplit(":", 1)[1]) if running else None
    with serving(tmp_path, served, ready_port=ready) as daemon:
        result = mailhook("check", "--config", str(daemon.config),
                          env={"MAILHOOK_MILTER__LISTEN": listen})
    [line] = [line for line in result.stdout.splitlines() if "  milter  " in line]
    return result.returncode, line


def test_check_looks_at_the_milter_socket(tmp_path):
    """With [milter] listen set, `mailhook check` has a milter line: ok when mailhook's milter
    answers the protocol's negotiation, ok when the socket is free to take, FAIL when
    something else answers there or a file is in the way, naming what."""
    port = free_port()
    status, line = milter_verdict(tmp_path, f"inet:127.0.0.1:{port}", running=True)
    assert status == 0 and line.startswith("ok") and "a milter answers (protocol version 6)" in line
    status, line = milter_verdict(tmp_path, f"inet:127.0.0.1:{free_port()}")
    assert status == 0 and line.startswith("ok") and "mailhook serve will listen there" in line
    with Sink() as other:  # an SMTP server where the milter should be
        status, line = milter_verdict(tmp_path, f"inet:127.0.0.1:{other.port}")
    assert status == 1 and line.startswith("FAIL") and "not as a milter" in line
    in_the_way = tmp_path / "milter.sock"
    in_the_way.write_text("not a socket\n")
    status, line = milter_verdict(tmp_path, f"unix:{in_the_way}")
    assert status == 1 and line.startswith("FAIL") and "is not a socket" in line
    assert in_the_way.read_text() == "not a socket\n"


def test_check_fails_for_a_store_that_went_missing(tmp_path):
    """A store file gone after mailhook made it is a FAIL line, not "serve creates it"."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin, Sink() as sink:
        config = write_config(tmp_path, standin.url, sink.port, 0)
        (tmp_path / "state.sqlite3.created").write_text("made before\n")
        result = mailhook("check", "--config", str(config))
    assert result.returncode == 1
    [failed] = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert " store " in failed and "missing" in failed
    assert not (tmp_path / "state.sqlite3").exists()


def test_admin_commands_refuse_a_store_that_went_missing(tmp_path):
    """conferences and reschedule name a lost store in one line and exit 1, never showing an
    empty list or a traceback."""
    config = write_config(tmp_path, "http://127.0.0.1:9", 10026, 0)
    (tmp_path / "state.sqlite3.created").write_text("made before\n")
    for command in (("conferences", "list"), ("conferences", "delete", "uid-1"), ("reschedule",)):
        result = mailhook(*command, "--config", str(config))
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "missing" in result.stderr and "Traceback" not in result.stderr
        assert "no conferences stored" not in result.stdout
    assert not (tmp_path / "state.sqlite3").exists()


def test_check_reports_a_bad_config(tmp_path):
    """A config that does not load is a FAIL line and exit status 2."""
    config = tmp_path / "bad.toml"
    config.write_text("[policy]\n")
    result = mailhook("check", "--config", str(config))
    assert result.returncode == 2 and result.stdout.startswith("FAIL  config")


def test_check_refuses_a_relay_back_to_mailhook(tmp_path):
    """check fails the config, exit 2, when relay is its own listener, even while a running
    mailhook answers on that port like a next hop would."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin, \
            Sink() as sink:
        config = write_config(tmp_path, standin.url, sink.port, sink.port)
        result = mailhook("check", "--config", str(config))
    assert result.returncode == 2
    [line] = result.stdout.splitlines()
    assert line.startswith("FAIL  config") and "is mailhook's own listener" in line


def test_conferences_list_show_delete(tmp_path):
    """list shows a table, show the details, delete removes it on TrueConf and in the store."""
    with serving(tmp_path) as daemon:
        submit(daemon.port, thunderbird(Event(uid="weekly@example.com", summary="Weekly sync")))
        daemon.stop()
        standin, config = daemon.standin, daemon.config
        [conference_id] = standin.conferences
        listing = mailhook("conferences", "list", "--config", str(config))
        shown = mailhook("conferences", "show", "weekly@example.com", "--config", str(config))
        deleted = mailhook("conferences", "delete", "weekly@example.com", "--yes",
                           "--config", str(config))
        assert standin.conferences == {}
        after = mailhook("conferences", "list", "--config", str(config))
        everything = mailhook("conferences", "list", "--all", "--config", str(config))
        missing = mailhook("conferences", "show", "nope@example.com", "--config", str(config))
    header, row = listing.stdout.splitlines()
    assert header.split()[:3] == ["UID", "ORGANIZER", "STATE"]
    assert row.split()[:4] == ["weekly@example.com", "alice@example.com", "active", conference_id]
    assert "topic:" in shown.stdout and "Weekly sync" in shown.stdout and "/c/" in shown.stdout
    assert deleted.returncode == 0 and conference_id in deleted.stdout
    assert "no conferences stored" in after.stdout
    assert "deleted" in everything.stdout.splitlines()[1]
    assert missing.returncode == 1 and "no stored event" in missing.stderr


def test_reschedule_command_runs_one_pass(tmp_path):
    """`mailhook reschedule` runs one pass and says how many conferences moved."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin:
        config = write_config(tmp_path, standin.url, free_port(), 0)
        result = mailhook("reschedule", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "moved 0 conference(s)" in result.stdout


def test_every_command_has_help():
    """--help works on every command and sub-command."""
    for command in (["serve"], ["check"], ["check-config"], ["explain"], ["conferences"],
                    ["conferences", "list"], ["conferences", "show"], ["conferences", "delete"],
                    ["reschedule"], ["version"]):
        result = mailhook(*command, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout, command


def test_log_level_option_quiets_info(tmp_path):
    """`serve --log-level warning` leaves out the INFO summary lines."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin, Sink() as sink:
        port = free_port()
        config = write_config(tmp_path, standin.url, sink.port, port)
        process = subprocess.Popen(
            [sys.executable, "-m", "mailhook", "serve", "--config", str(config), "--log-level",
             "warning"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_port(port, process)
            submit(port, thunderbird(Event()))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        assert len(sink.messages) >= 1
    assert "INFO" not in process.stderr.read()


def test_sighup_reloads_and_systemd_hears_of_it(tmp_path):
    """SIGHUP re-reads the config; the service manager gets READY, RELOADING, READY, STOPPING."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin, Sink() as sink, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(tmp_path / "notify"))
        manager.settimeout(15)
        port = free_port()
        config = write_config(tmp_path, standin.url, sink.port, port)
        process = serve(config, env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")})
        try:
            assert state_change(manager).startswith(b"READY=1")
            config.write_text(config.read_text().replace('local_domains = ["example.com"]',
                                                         'local_domains = ["example.org"]'))
            process.send_signal(signal.SIGHUP)
            assert state_change(manager).startswith(b"RELOADING=1")
            assert state_change(manager).startswith(b"READY=1")
            submit(port, thunderbird(Event()))  # alice@example.com is no longer served
            time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        assert state_change(manager).startswith(b"STOPPING=1")
        assert standin.conferences == {}
    stderr = process.stderr.read()
    assert "configuration reloaded" in stderr and "decision=pass" in stderr
