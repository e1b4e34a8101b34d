"""SMTP replies: every text mailhook answers with about a message, defined once, and the one
function that chooses a message's final reply.

mailhook never answers 5xx for trouble of its own: what it cannot do now is a 451 the MTA
retries. A front end that does not speak SMTP (a milter) maps these replies to its own
protocol: 2xx accepts, 4xx is a temporary failure, 5xx a rejection.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply."""

    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        """The reply as sent: a multi-line reply gets "code-" continuation lines."""
        lines = self.text.replace("\r\n", "\n").split("\n") or [""]
        head = "".join(f"{self.code}-{line}\r\n" for line in lines[:-1])
        return f"{head}{self.code} {lines[-1]}"

    @classmethod
    def parse(cls, line: str) -> Reply:
        """A reply from its one-line form "451 4.3.0 text"."""
        return cls(int(line[:3]), line[4:])


# --- mailhook's own trouble: always temporary -------------------------------------------------
TRUECONF_UNAVAILABLE = Reply(451, "4.3.0 TrueConf Server is not available, please try again later")
STORE_UNAVAILABLE = Reply(451, "4.3.0 Cannot record the conference now, please try again later")
INTERNAL_ERROR = Reply(451, "4.3.0 Temporary local problem, please try again later")
SHUTTING_DOWN = Reply(421, "4.3.2 Shutting down, please try again later")
TRANSACTION_LOST = Reply(451, "4.3.0 Next hop transaction lost, please try again")
NEXT_HOP_UNREACHABLE = Reply(451, "4.4.1 Next hop unavailable, try again later")
# relay.host/relay.port lead back to mailhook itself: a configuration error, so the MTA keeps
# the mail until it is fixed (RFC 3463: X.4.6 is "useful only as a persistent transient error").
NEXT_HOP_IS_MAILHOOK = Reply(451, "4.4.6 Routing loop: the next hop is mailhook itself, "
                                  "please try again later")

# --- what the message or its envelope cannot be ----------------------------------------------
# The message already went round through this mailhook smtp.max_own_hops times.
ROUTING_LOOP = Reply(554, "5.4.6 Routing loop detected")
BAD_SENDER = Reply(553, "5.1.7 Bad sender address syntax")
BAD_RECIPIENT = Reply(553, "5.1.3 Bad recipient address syntax")
# RFC 6531 3.5: a UTF-8 address in a transaction begun without the SMTPUTF8 parameter.
UTF8_WITHOUT_SMTPUTF8 = Reply(553, "5.6.7 Non-ASCII address needs the SMTPUTF8 parameter")
# RFC 6531 3.2: a UTF-8 address must not go to a server that does not announce SMTPUTF8.
UTF8_SENDER_NOT_RELAYABLE = Reply(553, "5.6.7 Non-ASCII sender address and the next hop does "
                                       "not support SMTPUTF8")
UTF8_RECIPIENT_NOT_RELAYABLE = Reply(553, "5.6.7 Non-ASCII recipient address and the next hop "
                                          "does not support SMTPUTF8")
# RFC 6531 3.2 and 4 (X.6.9): a UTF-8 header section must not go to a server without SMTPUTF8.
UTF8_HEADER_NOT_RELAYABLE = Reply(550, "5.6.9 Message has a UTF-8 header section and the next "
                                       "hop does not support SMTPUTF8")


def client_reply(reply: Reply) -> Reply:
    """The reply mailhook gives its client for a next-hop reply: 4xx becomes 451, 5xx passes."""
    if reply.temporary and reply.code != 451:
        return Reply(451, reply.text)
    return reply


def final_reply(refusal: Reply | None, next_hop: Reply | None) -> Reply:
    """A message's reply: mailhook's own refusal when it kept the message back, else the next
    hop's answer to it (as ``client_reply`` passes it on)."""
    if refusal is not None:
        return refusal
    if next_hop is None:
        return INTERNAL_ERROR  # neither refused nor relayed: never leave the client without one
    return client_reply(next_hop)
