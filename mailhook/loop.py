"""Whether ``[relay]`` points back at mailhook's own listener, which would loop every message.

Addresses are compared, not names: ``localhost``, ``127.0.0.1`` and ``::1`` are the same
listener when mailhook listens on the wildcard (``0.0.0.0``, ``::``), and a name is resolved.
A name that does not resolve is not a loop (the next hop check reports it).
"""

from __future__ import annotations

import ipaddress
import socket

from mailhook.config import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

WILDCARD_V4 = ("0.0.0.0", "")  # noqa: S104 - "" is every address too, for asyncio's create_server
WILDCARD_V6 = ("::",)  # an IPv6 wildcard socket also takes IPv4 connections on Linux


def relay_loop(settings: Settings) -> str:
    """Why mail relayed to ``relay`` would come back to mailhook itself, or ""."""
    smtp, relay = settings.smtp, settings.relay
    if smtp.listen_port == 0 or smtp.listen_port != relay.port:
        return ""
    if not _reaches_listener(smtp.listen_host, addresses(relay.host)):
        return ""
    return (f"relay {relay.host}:{relay.port} is mailhook's own listener (smtp.listen_host "
            f"{smtp.listen_host!r}, smtp.listen_port {smtp.listen_port}): every message would "
            "come back to mailhook; set relay.host and relay.port to the MTA's re-injection "
            "service (e.g. 127.0.0.1:10026)")


def _reaches_listener(listen_host: str, targets: set[Address]) -> bool:
    host = listen_host.strip().strip("[]")
    if host in WILDCARD_V4:
        return any(ip.version == 4 and is_local(ip) for ip in targets)
    if host in WILDCARD_V6:
        return any(is_local(ip) for ip in targets)
    return bool(targets & addresses(host))


def addresses(host: str) -> set[Address]:
    """The IP addresses a host name or literal stands for (IPv4-mapped ones as IPv4)."""
    host = host.strip().strip("[]")
    try:
        found = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return set()
        found = {ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos}
    return {_unmapped(ip) for ip in found}


def is_local(ip: Address) -> bool:
    """Does this machine own the address (loopback, or one a socket can be bound to)?"""
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


def _unmapped(ip: Address) -> Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
