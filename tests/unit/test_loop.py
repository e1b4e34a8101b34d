"""The loop guard: a relay that is mailhook's own listener is told apart from a real next hop."""

from __future__ import annotations

import pytest

from mailhook.config import Settings
from mailhook.loop import relay_loop


def settings(listen: str, relay: str, listen_port: int = 10025,
             relay_port: int = 10025) -> Settings:
    """Settings listening and relaying where given."""
    return Settings(
        smtp={"listen_host": listen, "listen_port": listen_port},
        relay={"host": relay, "port": relay_port},
        trueconf={"server_url": "https://video.example.com", "client_id": "m",
                  "client_secret": "s3cret"},
        policy={"local_domains": ["example.com"]},
    )


@pytest.mark.parametrize(("listen", "relay"), [
    ("127.0.0.1", "127.0.0.1"),
    ("127.0.0.1", "localhost"),
    ("0.0.0.0", "127.0.0.1"),
    ("0.0.0.0", "localhost"),
    ("::", "127.0.0.1"),
    ("::", "localhost"),
    ("::", "::ffff:127.0.0.1"),
    ("localhost", "127.0.0.1"),
])
def test_relay_to_own_listener_is_a_loop(listen, relay):
    """The same port on the listening address, a name for it or any local address under a
    wildcard listener is mailhook itself."""
    problem = relay_loop(settings(listen, relay))
    assert "is mailhook's own listener" in problem and f"relay {relay}:10025" in problem


@pytest.mark.parametrize(("listen", "relay", "listen_port", "relay_port"), [
    ("127.0.0.1", "127.0.0.1", 10025, 10026),  # the usual sandwich
    ("127.0.0.1", "127.0.0.2", 10025, 10025),  # another loopback address: another socket
    ("127.0.0.1", "192.0.2.1", 10025, 10025),  # a next hop elsewhere
    ("0.0.0.0", "192.0.2.1", 10025, 10025),
    ("127.0.0.1", "127.0.0.1", 0, 10025),  # any free port: never the relay's
    ("127.0.0.1", "name.invalid", 10025, 10025),  # does not resolve: the next hop check says so
])
def test_a_real_next_hop_is_no_loop(listen, relay, listen_port, relay_port):
    """A different port, another address or an address of another machine is a next hop."""
    assert relay_loop(settings(listen, relay, listen_port, relay_port)) == ""
