"""The settings of mailhook's optional parts, the milter front end and the CalDAV
write-back, and the base every settings section shares (``mailhook.config`` reads them)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """A table of the config file: unknown keys are errors, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MilterSettings(Section):
    """[milter]: the milter front end (Postfix smtpd_milters/non_smtpd_milters, Sendmail)."""

    # Postfix's notation: "inet:127.0.0.1:8891" or "unix:/run/mailhook/milter.sock"; "" is off.
    listen: str = ""
    socket_mode: str = "0660"  # permissions of a unix socket (octal)

    @field_validator("listen")
    @classmethod
    def _socket_notation(cls, value: str) -> str:
        if value:
            milter_socket(value)
        return value

    @field_validator("socket_mode")
    @classmethod
    def _octal_mode(cls, value: str) -> str:
        if not (value.isdigit() and len(value) in (3, 4) and set(value) <= set("01234567")):
            raise ValueError(f"socket_mode must be an octal mode such as 0660, not {value!r}")
        return value


def milter_socket(listen: str) -> tuple[str, str, int]:
    """("inet", host, port) or ("unix", path, 0) from Postfix's notation for a milter socket
    ("inet:127.0.0.1:8891", "inet:[::1]:8891", "unix:/run/mailhook/milter.sock")."""
    kind, _, where = listen.partition(":")
    if kind == "unix" and where.startswith("/"):
        return "unix", where, 0
    if kind == "inet":
        host, _, port = where.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if host and port.isdigit() and 0 <= int(port) <= 65535:
            return "inet", host, int(port)
    raise ValueError(f"milter listen must be 'inet:HOST:PORT' or 'unix:/absolute/path', "
                     f"not {listen!r}")


class CalDAVSettings(Section):
    """Writing the link back into the organizer's own event on a CalDAV server."""

    enabled: bool = False
    url: str = ""  # the server's base URL
    username: str = ""  # a service account that may write every organizer's calendars
    password_file: str = ""  # its password, in a file (e.g. a systemd credential)
    calendar_home: str = "/{user}/"  # under url; {user}: the organizer's local part, {email}
    timeout: float = Field(10.0, gt=0)  # seconds per request
    retries: int = Field(3, ge=0, le=10)  # after a failure, and after a concurrent edit

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http://)")
        return value.rstrip("/")

    def password(self) -> str:
        """The service account's password, read from its file."""
        if not self.password_file:
            return ""
        return Path(self.password_file).read_text(encoding="utf-8").strip()
