"""Settings that name files or carry a secret: the [store] section (a SQLite file, or a
PostgreSQL URL, checked and shown with any password masked, and its password file), and the
TLS certificate, key and CA files, which are loaded once when the config is read so that a
bad one is a one-line error at start-up; and the checks across sections of what takes mail in.
(``mailhook.config`` reads them.)
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from mailhook.config_sections import Section

if TYPE_CHECKING:
    from mailhook.config import RelaySettings, SmtpSettings
    from mailhook.config_sections import MilterSettings


class StoreSettings(Section):
    """Where mailhook keeps what it knows about each event."""

    path: str = "/var/lib/mailhook/mailhook.sqlite3"
    # "full": every change is on disk before the message is answered; "normal": a change
    # survives any crash of mailhook but may roll back on power loss or an OS crash.
    synchronous: Literal["full", "normal"] = "full"
    # A PostgreSQL database shared by several instances; when set, ``path`` is not used.
    url: str = ""
    password_file: str = ""  # the database password, e.g. a systemd credential
    pool_size: int = Field(10, ge=1, le=1000)  # connections per process for queries
    keep_deleted_days: float = Field(180.0, ge=0)  # 0: keep events of deleted conferences

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return database_url(value)

    def password(self) -> str:
        """The database password from ``password_file`` ("" when none is named)."""
        if not self.password_file:
            return ""
        return Path(self.password_file).read_text(encoding="utf-8").strip()



def database_url(value: str) -> str:
    """``store.url`` as given, or ValueError: a PostgreSQL URI libpq can read."""
    value = value.strip()
    if not value:
        return value
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a PostgreSQL URI: postgresql://user@host/database")
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        # libpq's own message may quote the URI, password and all.
        raise ValueError("is not a valid PostgreSQL URI") from None
    return value


def masked_url(url: str) -> str:
    """A database URI with any password in it (user:password@ or password=) masked."""
    url = re.sub(r"^([a-z]+://[^:/@?]*:)[^@/?]*@", r"\1********@", url)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1********", url)


def check_store_password(store: StoreSettings, path: Path) -> None:
    """The database password file reads (ConfigError naming it otherwise)."""
    try:
        store.password()
    except OSError as exc:
        raise _config_error(f"{path}: bad value for store.password_file: cannot read it "
                            f"({exc.strerror})") from None


def check_tls_files(smtp: SmtpSettings, relay: RelaySettings, path: Path) -> None:
    """The listener's certificate and key load, and the next hop's CA file reads."""
    if smtp.tls_cert_file:
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(smtp.tls_cert_file, smtp.tls_key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise _config_error(f"{path}: bad value for smtp.tls_cert_file/tls_key_file: "
                                f"cannot load the certificate and key ({_reason(exc)})") from None
    if relay.ca_file:
        try:
            ssl.create_default_context(cafile=relay.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise _config_error(f"{path}: bad value for relay.ca_file: cannot load it "
                                f"({_reason(exc)})") from None


def check_front_ends(smtp: SmtpSettings, milter: MilterSettings, path: Path) -> None:
    """Something takes mail in, and the milter has the one process that serves it."""
    if not smtp.enabled and not milter.listen:
        raise _config_error(f"{path}: smtp.enabled is false and milter.listen is empty: "
                            "nothing would take mail in; turn one of them on")
    if milter.listen and smtp.workers > 1:
        raise _config_error(f"{path}: bad value for smtp.workers: {smtp.workers} worker "
                            "processes cannot share the milter socket (milter.listen); "
                            "set smtp.workers = 1 with the milter")


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _config_error(message: str) -> Exception:
    from mailhook.config import ConfigError  # here: config.py imports this module

    return ConfigError(message)
