"""The ``mailhook`` command as an admin meets it: real processes, real signals."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest

from mailhook.testing.sink import Sink
from mailhook.testing.standin import StandIn
from tests.integration.conftest import USERS
from tests.support.invites import Event, thunderbird
from tests.support.process import ROOT, SECRET, free_port, mailhook, wait_for_port, write_config


def test_bad_config_exits_2_with_one_line(tmp_path):
    """A bad setting prints one line naming the key, exits 2, and shows no traceback."""
    config = tmp_path / "bad.toml"
    config.write_text(f'[trueconf]\nserver_url = "x"\nclient_id = "a"\nclient_secret = "{SECRET}"\n'
                      '[policy]\nlocal_domains = ["example.com"]\n')
    for command in ("serve", "check-config"):
        result = mailhook(command, "--config", str(config))
        assert result.returncode == 2
        assert "trueconf.server_url" in result.stderr
        assert "Traceback" not in result.stderr and SECRET not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("variable", "value"), [
    ("MAILHOOK_POLICY__DELEGATES", "boss@example.com"),
    ("MAILHOOK_POLICY__LOCAL_DOMAINS", '["example.com"'),
    ("MAILHOOK_SMTP__LISTEN_PORT", "many"),
])
def test_bad_environment_value_exits_2_with_one_line(tmp_path, variable, value):
    """A bad setting from the environment is one line naming the variable and exit 2, like one
    in the file, never a traceback."""
    config = write_config(tmp_path, "http://127.0.0.1:9", 10026, 10025)
    for command in ("serve", "check-config"):
        result = mailhook(command, "--config", str(config), env={variable: value})
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert variable in line and "Traceback" not in result.stderr and SECRET not in line


def test_list_settings_from_the_environment_may_be_comma_separated(tmp_path):
    """MAILHOOK_POLICY__LOCAL_DOMAINS=a,b is two domains, not an error."""
    config = write_config(tmp_path, "http://127.0.0.1:9", 10026, 10025)
    result = mailhook("check-config", "--config", str(config),
                      env={"MAILHOOK_POLICY__LOCAL_DOMAINS": "example.com,example.org"})
    assert result.returncode == 0, result.stderr
    assert 'local_domains = ["example.com", "example.org"]' in result.stdout


@pytest.mark.parametrize(("listen_host", "relay_host"), [
    ("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "localhost"), ("0.0.0.0", "127.0.0.1"),
    ("::", "localhost"),
])
def test_check_config_refuses_a_relay_back_to_mailhook(tmp_path, listen_host, relay_host):
    """check-config exits 2 with one line when relay is mailhook's own listener."""
    config = write_config(tmp_path, "http://127.0.0.1:9", 10025, 10025)
    result = mailhook("check-config", "--config", str(config),
                      env={"MAILHOOK_SMTP__LISTEN_HOST": listen_host,
                           "MAILHOOK_RELAY__HOST": relay_host})
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert f"relay {relay_host}:10025 is mailhook's own listener" in line


@pytest.mark.parametrize(("env", "named"), [
    ({"MAILHOOK_SMTP__ENABLED": "false"}, "smtp.enabled is false and milter.listen is empty"),
    ({"MAILHOOK_MILTER__LISTEN": "inet:127.0.0.1:8891", "MAILHOOK_SMTP__WORKERS": "2"},
     "bad value for smtp.workers"),
])
def test_check_config_refuses_front_ends_that_cannot_work(tmp_path, env, named):
    """A config where nothing takes mail in, or where worker processes would leave the
    milter socket unserved, exits 2 with one line naming the keys."""
    config = write_config(tmp_path, "http://127.0.0.1:9", 10025, 10026)
    for command in ("check-config", "serve"):
        result = mailhook(command, "--config", str(config), env=env)
        assert result.returncode == 2 and result.stdout == ""
        [line] = result.stderr.strip().splitlines()
        assert named in line and "Traceback" not in result.stderr


def test_serve_names_the_milter_socket_it_cannot_take(tmp_path):
    """A milter socket already taken stops serve with exit 1 and one error line naming that
    socket (not the SMTP listener)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"inet:127.0.0.1:{taken.getsockname()[1]}"
        config = write_config(tmp_path, "http://127.0.0.1:9", 10025, free_port())
        result = subprocess.run([sys.executable, "-m", "mailhook", "serve", "--config",
                                 str(config)], cwd=ROOT, capture_output=True, text=True,
                                timeout=60, env={**os.environ, "MAILHOOK_MILTER__LISTEN": listen})
    assert result.returncode == 1
    [error] = [line for line in result.stderr.splitlines() if "cannot listen" in line]
    assert f"cannot listen on the milter socket {listen}: " in error, error


def test_config_from_environment_variable(tmp_path):
    """MAILHOOK_CONFIG names the file when --config is not given."""
    config = write_config(tmp_path, "http://127.0.0.1:9", 10026, 10025)
    result = mailhook("check-config", env={"MAILHOOK_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr


def test_check_config_masks_the_secret(tmp_path):
    """check-config prints the effective settings with the secret masked."""
    config = write_config(tmp_path, "http://127.0.0.1:9", 10026, 10025)
    result = mailhook("check-config", "--config", str(config),
                      env={"MAILHOOK_RELAY__PORT": "2626"})
    assert result.returncode == 0
    assert SECRET not in result.stdout + result.stderr
    assert 'client_secret = "********"' in result.stdout
    assert "port = 2626" in result.stdout


def test_example_config_checks():
    """The shipped example config is valid as it is."""
    result = mailhook("check-config", "--config", "config/mailhook.toml")
    assert result.returncode == 0, result.stderr


def test_version_and_help():
    """version prints the version; every command has --help."""
    assert mailhook("version").stdout.startswith("mailhook ")
    for command in ("serve", "check-config", "explain", "version"):
        result = mailhook(command, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout


def test_explain_says_what_would_happen(tmp_path):
    """explain names method, UID, organizer, decision and participants, touching nothing."""
    config = write_config(tmp_path, "http://127.0.0.1:9", 10026, 10025)
    message = tmp_path / "invite.eml"
    message.write_bytes(thunderbird(Event()))
    result = mailhook("explain", "--config", str(config), str(message))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "method: REQUEST" in out and "organizer: alice@example.com" in out
    assert "decision: create" in out and "participant: bob@example.com" in out
    assert "mode: all on screen" in out
    assert not (tmp_path / "state.sqlite3").exists()
    spoofed = mailhook("explain", "--config", str(config), str(message), "--sender", "eve@example.com")
    assert "decision: pass" in spoofed.stdout and "not the organizer" in spoofed.stdout


def test_standin_command_serves(tmp_path):
    """`mailhook standin` starts the API stand-in on the given port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailhook", "standin", "--port", str(port),
         "--users", "config/standin-users.json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port(port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def test_serve_finishes_message_in_flight_on_sigterm(tmp_path):
    """SIGTERM during a slow TrueConf call lets the message finish with 250, then exits 0."""
    with StandIn(users=USERS, client_id="mailhook", client_secret=SECRET) as standin, Sink() as sink:
        port = free_port()
        config = write_config(tmp_path, standin.url, sink.port, port)
        process = subprocess.Popen(
            [sys.executable, "-m", "mailhook", "serve", "--config", str(config)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            wait_for_port(port, process)
            standin.set_latency(1.0)
            result: dict[str, object] = {}

            def submit() -> None:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    result["refused"] = client.sendmail("alice@example.com", ["bob@example.com"],
                                                        thunderbird(Event()))

            sender = threading.Thread(target=submit)
            sender.start()
            deadline = time.monotonic() + 10
            while not standin.requests and time.monotonic() < deadline:
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            sender.join(timeout=30)
            assert result.get("refused") == {}
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
        stderr = process.stderr.read() if process.stderr else ""
        assert SECRET not in stderr
        assert "decision=create" in stderr
        assert len(sink.messages) >= 1 and b"/c/" in sink.messages[0].content


@pytest.mark.parametrize("entry", [["-m", "mailhook"], ["-m", "mailhook.cli"]])
def test_module_entry_points(entry):
    """python -m mailhook works like the console script."""
    result = subprocess.run([sys.executable, *entry, "version"], capture_output=True, text=True,
                            cwd=ROOT, timeout=30)
    assert result.returncode == 0 and "mailhook" in result.stdout


def test_explain_says_when_sent_by_is_not_trusted(tmp_path):
    """explain shows an ORGANIZER's SENT-BY and says it is not trusted without policy.delegates."""
    config = write_config(tmp_path, "http://127.0.0.1:9", 10026, 10025)
    message = tmp_path / "forged.eml"
    message.write_bytes(thunderbird(Event()).replace(
        b"ORGANIZER;CN=Alice Example:",
        b'ORGANIZER;CN=Alice Example;SENT-BY="mailto:mallory@example.com":'))
    forged = ("explain", "--config", str(config), str(message), "--sender", "mallory@example.com")
    result = mailhook(*forged)
    out = result.stdout
    assert "sent-by: mallory@example.com (NOT trusted" in out
    assert "decision: pass" in out and "not a trusted delegate of alice@example.com" in out
    config.write_text(config.read_text().replace(
        "[policy]", '[policy]\ndelegates = { "alice@example.com" = ["mallory@example.com"] }'))
    trusted = mailhook(*forged)
    assert trusted.returncode == 0, trusted.stderr
    assert "sent-by: mallory@example.com (a trusted delegate" in trusted.stdout
    assert "decision: create" in trusted.stdout
