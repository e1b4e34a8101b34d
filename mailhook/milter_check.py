"""``mailhook check``'s look at the milter socket (``[milter] listen``).

A milter answering there (a running ``mailhook serve``) passes, after the protocol's own
opening: the negotiation an MTA starts every connection with. A socket nobody answers on
passes when ``mailhook serve`` could take it; something else answering there, or a socket
that cannot be made, fails, with what is in the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
from pathlib import Path

from kilter.protocol.messages import ActionFlags, Negotiate, ProtocolFlags

from mailhook.config import milter_socket
from mailhook.frontends.milter_packets import ProtocolError, decode, encode
from mailhook.health import Check

TIMEOUT = 5.0
RUNTIME_DIRECTORY = Path("/run/mailhook")  # systemd/mailhook.service's RuntimeDirectory
# What an MTA offers: protocol 6, every action and step (Postfix 3.x's offer).
_OFFER = Negotiate(6, ActionFlags(0x1FF), ProtocolFlags(0x1FFFFF))


async def check_milter(listen: str) -> Check:
    """The verdict on the milter socket ``listen`` (Postfix's notation)."""
    kind, where, port = milter_socket(listen)
    try:
        if kind == "unix":
            opened = asyncio.open_unix_connection(where)
        else:
            opened = asyncio.open_connection(where, port)
        reader, writer = await asyncio.wait_for(opened, TIMEOUT)
    except (ConnectionRefusedError, FileNotFoundError):
        return _unanswered(listen, kind, where, port)
    except TimeoutError:
        return Check("milter", False, f"{listen}: no answer to a connection in {TIMEOUT:.0f} s")
    except OSError as exc:
        return Check("milter", False, f"{listen}: cannot connect ({exc.strerror or exc})")
    try:
        version = await asyncio.wait_for(_negotiate(reader, writer), TIMEOUT)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ProtocolError):
        version = None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if version is None:
        return Check("milter", False, f"{listen}: something answers there, but not as a milter")
    return Check("milter", True, f"{listen}: a milter answers (protocol version {version})")


async def _negotiate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int | None:
    """Open the milter protocol as an MTA does; the version the milter answers with (None
    when the answer is some other packet; ProtocolError when it is no milter packet at all)."""
    writer.write(encode(_OFFER))
    await writer.drain()
    size = struct.unpack("!L", await reader.readexactly(4))[0]
    if not 1 <= size <= 4096:
        raise ProtocolError("not a milter packet")
    message = decode(struct.pack("!L", size) + await reader.readexactly(size))
    return message.version if isinstance(message, Negotiate) else None


def _unanswered(listen: str, kind: str, where: str, port: int) -> Check:
    """Nobody answers on the socket: can ``mailhook serve`` take it?"""
    if kind == "unix":
        return _unix_socket_free(listen, Path(where))
    try:
        for family, kind_, proto, _, address in socket.getaddrinfo(
                where, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            with socket.socket(family, kind_, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        return Check("milter", False, f"{listen}: nothing answers there and mailhook serve "
                                      f"cannot listen there ({exc.strerror or exc})")
    return Check("milter", True, f"{listen}: not answering yet; mailhook serve will listen there")


def _unix_socket_free(listen: str, path: Path) -> Check:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISSOCK(mode):
        return Check("milter", False, f"{listen}: {path} exists and is not a socket; "
                                      "mailhook serve will not replace it")
    directory = path.parent
    if not directory.is_dir():
        if directory == RUNTIME_DIRECTORY:
            return Check("milter", True, f"{listen}: not answering yet; the unit's "
                                         f"RuntimeDirectory creates {directory}")
        return Check("milter", False, f"{listen}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        return Check("milter", False, f"{listen}: cannot create a socket in {directory} "
                                      "(permission denied)")
    left = " (a socket left by an earlier run)" if mode is not None else ""
    return Check("milter", True, f"{listen}: not answering yet{left}; mailhook serve will "
                                 "listen there")
