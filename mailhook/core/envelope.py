"""A message as the MTA handed it over: envelope, bytes, and what the MTA told about where it
came from (upstream queue id and client, for the log line)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# "Received: by host (Postfix, from userid 0) id 4Xb2Jt1Q2Zz9sWQ; ..." (also Exim's "id 1r...-0004...")
_RECEIVED_ID = re.compile(r"\bid\s+([A-Za-z0-9][A-Za-z0-9.-]{4,63})(?=[\s;]|$)")
_XTEXT_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")
# An address in the shape nearly every envelope and From field carries: a dot-atom local part
# at a domain of letters, digits and hyphens. Read as written, it needs none of the email
# package's address parsing; no quantifier nests in another, so matching stays linear.
ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_ADDRESS = rf"{ATOM}(?:\.{ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as the client handed it over."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


@dataclass(frozen=True, slots=True)
class Upstream:
    """What the MTA told about a message: its queue id and original client."""

    queue_id: str = ""
    client: str = ""

    @classmethod
    def from_xforward(cls, attributes: Mapping[str, str]) -> Upstream:
        """Read the (xtext-encoded) XFORWARD attributes of one transaction."""
        values = {name: xtext_decode(value) for name, value in attributes.items()}
        name, addr = values.get("NAME", ""), values.get("ADDR", "")
        client = f"{name or 'unknown'}[{addr}]" if addr else name
        return cls(queue_id=values.get("IDENT", ""), client=client)

    def or_received(self, received: str) -> Upstream:
        """This, with the queue id of the topmost Received header when none was told.

        Postfix forwards IDENT only when it knows one to pass on (not for local submissions
        through sendmail), but it always stamps its queue id into the Received header it adds.
        """
        if self.queue_id:
            return self
        found = _RECEIVED_ID.search(" ".join(received.split()))
        return Upstream(found.group(1), self.client) if found else self


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext ("+2B" is "+"), with anything unprintable replaced."""
    decoded = _XTEXT_HEX.sub(lambda match: chr(int(match.group(1), 16)), value)
    return "".join(ch if " " < ch < "\x7f" else "?" for ch in decoded)
