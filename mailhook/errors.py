"""The error hierarchy that every adapter translates its own failures into.

    MailhookError
    ├── TemporaryError        the message may succeed later: the SMTP reply is 451
    │   ├── TrueConfUnavailable   network error, timeout, 5xx, 429 from TrueConf
    │   └── StoreUnavailable      the store cannot be read or written (disk full, file gone)
    ├── PermanentError        retrying the same request cannot help
    │   ├── TrueConfRejected      TrueConf refused the request (4xx other than auth)
    │   └── TrueConfAuthError     TrueConf refused the client credentials
    └── InvitationError       the message is not an invitation mailhook can act on:
                              it is forwarded unchanged

Adapters raise these with ``raise ... from exc`` so the cause stays in the logs.
"""

from __future__ import annotations


class MailhookError(Exception):
    """Base of every error mailhook raises on purpose."""


class TemporaryError(MailhookError):
    """A failure that may go away: the MTA should retry the message."""


class PermanentError(MailhookError):
    """A failure that retrying the same request cannot fix."""


class InvitationError(MailhookError):
    """The message cannot be handled as an invitation; it passes through unchanged."""


class StoreUnavailable(TemporaryError):
    """The store cannot be read or written: the disk is full, the file is gone or read-only."""


class TrueConfError(MailhookError):
    """Base for errors from the TrueConf Server API."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class TrueConfUnavailable(TrueConfError, TemporaryError):
    """TrueConf could not be reached, timed out, or answered 5xx/429."""


class TrueConfRejected(TrueConfError, PermanentError):
    """TrueConf answered a 4xx that retrying will not change."""


class TrueConfAuthError(TrueConfError, PermanentError):
    """TrueConf refused the OAuth client credentials."""
