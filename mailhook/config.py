"""Settings: one TOML file, every key overridable by ``MAILHOOK_<SECTION>__<KEY>``.

The settings object is built once at start-up and each adapter is handed only its own section.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError

from mailhook.config_errors import Environment, describe, environment_problem
from mailhook.config_files import StoreSettings as StoreSettings  # noqa: PLC0414
from mailhook.config_files import (
    check_front_ends,
    check_store_password,
    check_tls_files,
    masked_url,
)

# Re-exported (the "X as X" form is how mypy --strict sees a re-export): they are settings too.
from mailhook.config_sections import CalDAVSettings as CalDAVSettings  # noqa: PLC0414
from mailhook.config_sections import MilterSettings as MilterSettings  # noqa: PLC0414
from mailhook.config_sections import Section as _Section
from mailhook.config_sections import milter_socket as milter_socket  # noqa: PLC0414

DEFAULT_CONFIG_PATH = "/etc/mailhook/mailhook.toml"

log = logging.getLogger("mailhook.config")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and what is wrong."""


class SmtpSettings(_Section):
    """The listening side: where the MTA hands mail to mailhook."""

    enabled: bool = True  # false: no SMTP listener (a milter-only site)
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(10025, ge=0, le=65535)  # 0: any free port
    hostname: str = ""  # the name in the greeting; "" means this machine's FQDN
    max_message_size: int = Field(64 * 1024 * 1024, ge=1024)
    timeout: float = Field(300.0, gt=0)  # seconds of silence before a client is dropped
    command_call_limit: int = Field(100, ge=1)  # NOOP, VRFY, HELP... per session
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    workers: int = Field(1, ge=1, le=64)  # processes serving SMTP; above 1 under a supervisor
    max_connections: int = Field(1000, ge=1)  # per process; more clients get 421
    # A message that already carries this many of this instance's trace fields is a routing
    # loop: refused with 554 5.4.6.
    max_own_hops: int = Field(3, ge=1, le=100)
    tls_cert_file: str = ""  # STARTTLS is offered when a certificate (PEM chain) is given
    tls_key_file: str = ""  # its private key; "" when it is in tls_cert_file
    require_tls: bool = False  # refuse mail from clients that did not STARTTLS first

    @model_validator(mode="after")
    def _tls(self) -> SmtpSettings:
        if self.tls_key_file and not self.tls_cert_file:
            raise ValueError("smtp.tls_key_file is set but smtp.tls_cert_file is not")
        if self.require_tls and not self.tls_cert_file:
            raise ValueError("smtp.require_tls needs smtp.tls_cert_file (and its key)")
        return self

    @field_validator("trusted_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"{network!r} is not an IP network") from exc
        return value


class RelaySettings(_Section):
    """The next hop: where mailhook hands every message on (Postfix's re-injection smtpd)."""

    host: str = "127.0.0.1"
    port: int = Field(10026, ge=1, le=65535)
    timeout: float = Field(60.0, gt=0)  # connect, commands, each piece of the message
    # RFC 5321 4.5.3.2.6: 10 minutes for the reply to the final dot. Giving up sooner answers
    # 451 for a message the next hop may still accept, and the MTA's retry duplicates it.
    data_timeout: float = Field(600.0, gt=0)
    helo_name: str = ""  # "" means this machine's FQDN
    pool_size: int = Field(16, ge=0)  # idle sessions kept open between messages
    # "opportunistic": STARTTLS when the next hop offers it, certificate not checked;
    # "required": STARTTLS always, certificate checked (against ca_file, else the system's CAs).
    tls: Literal["none", "opportunistic", "required"] = "none"
    ca_file: str = ""
    tls_name: str = ""  # the name the next hop's certificate must carry; "" means ``host``


class TrueConfSettings(_Section):
    """How to reach TrueConf Server's REST API."""

    server_url: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr = SecretStr("")
    client_secret_file: str = ""  # read the secret from this file (e.g. a systemd credential)
    api_version: str = "v3.11"
    timeout: float = Field(10.0, gt=0)
    verify_tls: bool = True
    ca_file: str = ""
    user_mapping: Literal["directory", "local_part"] = "directory"
    users_cache_ttl: float = Field(600.0, ge=0)
    # A TrueConf user id (a service account) that owns the conferences of organizers without
    # a TrueConf account; "" makes none for them (the organizer is told once why).
    fallback_owner: str = ""

    @field_validator("server_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http://)")
        return value.rstrip("/")

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not (value == "v4" or value.startswith(("v3.", "v4."))):
            raise ValueError('must be a v3.x version such as "v3.11", or "v4"')
        return value

    def secret(self) -> str:
        """The client secret, from the file when one is named."""
        if self.client_secret_file:
            return Path(self.client_secret_file).read_text(encoding="utf-8").strip()
        return self.client_secret.get_secret_value()


class PolicySettings(_Section):
    """Which invitations get a conference, and how it is set up."""

    local_domains: tuple[str, ...] = Field(min_length=1)
    trigger: Literal["keyword", "always"] = "keyword"
    keywords: tuple[str, ...] = ("TrueConf",)
    language: Literal["en", "ru"] = "en"
    all_on_screen_limit: int = Field(36, ge=2, le=49)
    max_participants: int = Field(250, ge=2)
    default_timezone: str = "UTC"
    calendar_senders: tuple[str, ...] = ()
    # organizer -> envelope senders trusted to send the organizer's invitations with SENT-BY;
    # "*@domain" on either side stands for every address of that domain.
    delegates: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("calendar_senders")
    @classmethod
    def _senders(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sender.strip().lower() for sender in value if sender.strip())

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known time zone (e.g. Europe/Moscow)") from None
        return value

    @field_validator("local_domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(domain.strip().lower().lstrip("@") for domain in value if domain.strip())

    @field_validator("delegates")
    @classmethod
    def _delegates(cls, value: dict[str, tuple[str, ...]], info: ValidationInfo
                   ) -> dict[str, tuple[str, ...]]:
        local = info.data.get("local_domains", ())
        trusted: dict[str, tuple[str, ...]] = {}
        for organizer, senders in value.items():
            key = address_pattern(organizer)
            if key.rpartition("@")[2] not in local:
                raise ValueError(f"organizer {organizer!r} is not in policy.local_domains")
            trusted[key] = trusted.get(key, ()) + tuple(address_pattern(s) for s in senders)
        return trusted

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(word.strip() for word in value if word.strip())
        if not cleaned:
            raise ValueError("needs at least one keyword")
        return cleaned


def address_pattern(value: str) -> str:
    """An address or "*@domain" from the config, lower-case; ValueError naming it otherwise."""
    pattern = value.strip().lower().removeprefix("mailto:")
    local, at, domain = pattern.rpartition("@")
    well_formed = (
        at and local and domain and "@" not in local and "*" not in domain
        and (local == "*" or "*" not in local)
        and not any(ch.isspace() or ch in '<>",;' for ch in pattern)
    )
    if not well_formed:
        raise ValueError(f'{value!r} is neither an e-mail address nor "*@domain"')
    return pattern


class NoticeSettings(_Section):
    """The short mail that tells the organizer the link."""

    enabled: bool = True  # false: no notice at all, whatever `when` says
    # "created": when a conference is made, and "action required" when one could not be;
    # "always": also when an update changes the conference's time, topic or participants;
    # "never": no notice (core/notice.should_send)
    when: Literal["created", "always", "never"] = "created"
    from_address: str = ""  # "" means noreply@<first local domain>

    @property
    def sent_when(self) -> Literal["created", "always", "never"]:
        """`when`, with `enabled = false` meaning "never": what the pipeline goes by."""
        return self.when if self.enabled else "never"
    @field_validator("from_address")
    @classmethod
    def _sender(cls, value: str) -> str:
        value = value.strip()
        if value and (any(ch in value for ch in "*()") or not _is_address(value)):
            raise ValueError(f"{value!r} is not an e-mail address (write it as local@domain, "
                             "e.g. noreply@example.com, without a name or <>)")
        return value


def _is_address(value: str) -> bool:
    try:
        address_pattern(value)
    except ValueError:
        return False
    return True


class RecurrenceSettings(_Section):
    """How conferences of recurring events follow their occurrences."""

    reschedule_interval: float = Field(300.0, ge=5)  # seconds between passes
    after_series_end: Literal["keep", "delete"] = "keep"


class LogSettings(_Section):
    """What mailhook writes to stderr (the journal, under systemd)."""

    level: Literal["debug", "info", "warning", "error"] = "info"


class MetricsSettings(_Section):
    """The HTTP endpoint for Prometheus (/metrics) and health probes (/healthz)."""

    enabled: bool = True
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(9425, ge=0, le=65535)  # 0: any free port
    health_cache: float = Field(5.0, ge=0)  # seconds a TrueConf token check is reused


class RetrySettings(_Section):
    """What mailhook does while TrueConf Server is unreachable or failing."""

    deadline: float = Field(1800.0, ge=0)  # seconds of 451 answers before giving up on a message
    interval: float = Field(15.0, ge=1)  # seconds between passes over pending deletions/updates
    backoff_initial: float = Field(30.0, ge=1)
    backoff_max: float = Field(3600.0, ge=1)


class Settings(BaseSettings):
    """Every setting of mailhook."""

    model_config = SettingsConfigDict(
        env_prefix="MAILHOOK_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    smtp: SmtpSettings = SmtpSettings()
    milter: MilterSettings = MilterSettings()
    relay: RelaySettings = RelaySettings()
    trueconf: TrueConfSettings
    policy: PolicySettings
    notice: NoticeSettings = NoticeSettings()
    recurrence: RecurrenceSettings = RecurrenceSettings()
    retry: RetrySettings = RetrySettings()
    store: StoreSettings = StoreSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    caldav: CalDAVSettings = CalDAVSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file is given at run time, so init values carry its parsed contents; the
        # environment comes first so that MAILHOOK_SECTION__KEY overrides the file.
        return (Environment(settings_cls), init_settings)

    def notice_sender(self) -> str:
        """The From address of organizer notices."""
        return self.notice.from_address or f"noreply@{self.policy.local_domains[0]}"


def config_path(explicit: str | None) -> Path:
    """The config file to read: --config, else $MAILHOOK_CONFIG, else the system default."""
    return Path(explicit or os.environ.get("MAILHOOK_CONFIG") or DEFAULT_CONFIG_PATH)


def load_settings(path: Path) -> Settings:
    """Read and validate the settings; raise ConfigError with one clear line on any problem."""
    data = _read_toml(path)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, path, Settings)) from None
    except SettingsError as exc:
        raise ConfigError(environment_problem(exc)) from None
    _check_secret(settings, path)
    check_store_password(settings.store, path)
    check_tls_files(settings.smtp, settings.relay, path)
    check_front_ends(settings.smtp, settings.milter, path)
    _warn_about_ignored_secret(settings)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _check_secret(settings: Settings, path: Path) -> None:
    try:
        secret = settings.trueconf.secret()
    except OSError as exc:
        raise ConfigError(
            f"{path}: bad value for trueconf.client_secret_file: cannot read it ({exc.strerror})"
        ) from None
    if not secret:
        raise ConfigError(
            f"{path}: missing setting trueconf.client_secret (or trueconf.client_secret_file)"
        )


def _warn_about_ignored_secret(settings: Settings) -> None:
    section = settings.trueconf
    if section.client_secret_file and section.client_secret.get_secret_value():
        log.warning("trueconf.client_secret is ignored: the secret is read from "
                    "trueconf.client_secret_file (%s); remove client_secret from the config",
                    section.client_secret_file)


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with the secret masked."""
    data = settings.model_dump(mode="json")
    data["trueconf"]["client_secret"] = "********" if settings.trueconf.secret() else ""
    data["store"]["url"] = masked_url(settings.store.url)
    return data

