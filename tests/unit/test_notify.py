"""systemd's notify protocol over a real Unix datagram socket."""

from __future__ import annotations

import os
import socket
import uuid

from mailhook.notify import Notifier


def test_notifications_reach_a_path_socket(tmp_path):
    """READY, STATUS, WATCHDOG, RELOADING and STOPPING arrive as KEY=value datagrams."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        notifier = Notifier({"NOTIFY_SOCKET": path})
        notifier.ready("serving")
        notifier.watchdog()
        notifier.reloading()
        notifier.stopping()
        notifier.close()
        got = [manager.recv(4096).decode() for _ in range(4)]
    assert got[0] == "READY=1\nSTATUS=serving"
    assert got[1] == "WATCHDOG=1"
    assert got[2].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert got[3].startswith("STOPPING=1")


def test_abstract_namespace_socket():
    """A NOTIFY_SOCKET starting with '@' names an abstract socket."""
    name = f"mailhook-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        Notifier({"NOTIFY_SOCKET": "@" + name}).status("3 message(s)")
        assert manager.recv(4096) == b"STATUS=3 message(s)"


def test_without_notify_socket_nothing_is_sent():
    """Outside systemd every call is a no-op and no watchdog is asked for."""
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.send("READY=1") is False


def test_watchdog_interval_is_half_the_timeout_and_only_for_this_process(tmp_path):
    """Pings come every WATCHDOG_USEC/2, unless WATCHDOG_PID names another process."""
    env = {"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": "30000000"}
    assert Notifier(env).watchdog_interval == 15.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15.0
    assert Notifier({**env, "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_a_manager_that_stops_reading_does_not_block(tmp_path):
    """When the manager's queue is full the notification is dropped instead of blocking."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        notifier = Notifier({"NOTIFY_SOCKET": path})
        sent = [notifier.watchdog() for _ in range(5000)]
        assert sent  # returned at all: nothing blocked
        assert notifier.send("WATCHDOG=1") is False
