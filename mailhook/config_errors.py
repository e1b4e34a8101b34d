"""Configuration errors in a mail admin's words, and the environment as a settings source.

Each problem pydantic finds becomes one line naming the key (and the environment variable, when
one set it) and what the setting expects; MAILHOOK_SECTION__KEY variables may write a list
comma-separated.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

ENV_PREFIX = "MAILHOOK_"

# What a list setting holds, for "expected a list of ...".
LIST_ITEMS = {
    "smtp.trusted_networks": 'IP networks, e.g. ["127.0.0.0/8", "::1/128"]',
    "policy.local_domains": 'domains, e.g. ["example.com"]',
    "policy.keywords": 'words, e.g. ["TrueConf"]',
    "policy.calendar_senders": 'e-mail addresses, e.g. ["invitations-noreply@cloud.example.com"]',
}
TABLES = {
    "policy.delegates": 'a table of organizer = [delegates], e.g. '
                        '{ "boss@example.com" = ["assistant@example.com"] }',
}
# pydantic's error type -> what the setting expects, in a mail admin's words.
EXPECTED = {
    "int_parsing": "a whole number", "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "text", "string_too_short": "a value (it must not be empty)",
}


def describe(exc: ValidationError, path: Path, settings: type[BaseSettings]) -> str:
    """One line for the first problem, unknown sections and keys first (a misspelt section is
    also a missing one: the misspelling is what the admin has to fix)."""
    errors = exc.errors()
    error = min(errors, key=lambda e: (e["type"] != "extra_forbidden", len(e["loc"])))
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc[:2])
    variable = _variable_for(loc[:2])
    where = variable or str(path)
    if error["type"] == "extra_forbidden":
        return f"{where}: {_unknown(loc, settings)}"
    if error["type"] == "missing":
        return f"{path}: {_missing(loc, settings)}"
    if error["type"] == "value_error":  # a validator of ours: its message says it all
        return f"{where}: bad value for {key}: {str(error['msg']).removeprefix('Value error, ')}"
    shown = "" if "secret" in key else f", got {_shown(error.get('input'))}"
    return f"{where}: bad value for {key}: expected {_expected(error, loc)}{shown}"


def _unknown(loc: tuple[str, ...], settings: type[BaseSettings]) -> str:
    if len(loc) == 1:
        return f"unknown section [{loc[0]}]{_suggest(loc[0], settings.model_fields, '[{}]')}"
    section = settings.model_fields.get(loc[0])
    known = _section_model(section).model_fields if section else {}
    return f"unknown setting {'.'.join(loc)}{_suggest(loc[-1], known, '{}')}"


def _suggest(word: str, known: Any, form: str) -> str:
    close = difflib.get_close_matches(word.lower(), list(known), n=1)
    return f" (did you mean {form.format(close[0])}?)" if close else ""


def _missing(loc: tuple[str, ...], settings: type[BaseSettings]) -> str:
    if len(loc) == 1:
        needed = [name for name, field in _section_model(settings.model_fields[loc[0]])
                  .model_fields.items() if field.is_required()]
        return f"missing section [{loc[0]}] (it needs {', '.join(needed)})"
    key = ".".join(loc)
    return f"missing setting {key} (in the file or as {_variable_name(loc)})"


def _expected(error: Any, loc: tuple[str, ...]) -> str:
    key = ".".join(loc[:2])
    kind = error["type"]
    context = error.get("ctx") or {}
    if key in LIST_ITEMS:
        at_least = " (at least one)" if kind == "too_short" else ""
        return f"a list of {LIST_ITEMS[key]}{at_least}"
    if key in TABLES:
        return TABLES[key]
    if len(loc) == 1 or kind in ("model_type", "model_attributes_type"):
        return f"a section [{loc[0]}] of settings"
    if kind == "literal_error":
        return "one of " + str(context.get("expected", "")).replace("'", '"')
    bounds = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
    for name, words in bounds.items():
        if name in context:
            return f"a number {words} {context[name]}"
    return EXPECTED.get(kind, str(error["msg"]).lower())


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:59] + "\u2026"


def _section_model(field: FieldInfo | None) -> type[BaseModel]:
    return field.annotation if field is not None else BaseModel  # type: ignore[return-value]


def _variable_name(loc: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(part.upper() for part in loc)


def _variable_for(loc: tuple[str, ...]) -> str:
    """The environment variable that set this key, or "" when the file did."""
    wanted = _variable_name(loc)
    return next((name for name in os.environ if name.upper() == wanted), "")


class _EnvironmentValueError(ValueError):
    """A value in the environment that is neither JSON nor a comma-separated list."""


class Environment(EnvSettingsSource):
    """MAILHOOK_SECTION__KEY variables; a list setting may also be written comma-separated
    (MAILHOOK_POLICY__LOCAL_DOMAINS=example.com,example.org), since JSON is awkward in a
    unit file or a shell."""

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        try:
            return json.loads(value)
        except ValueError:
            pass
        key = _field_keys(self.settings_cls).get(id(field), field_name)
        if key in LIST_ITEMS and not value.lstrip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        raise _EnvironmentValueError(f"{_variable_name(tuple(key.split('.')))}: bad value for "
                                     f"{key}: expected {_complex_expected(key)}")


def _complex_expected(key: str) -> str:
    if key in LIST_ITEMS:
        return f"a list of {LIST_ITEMS[key]} as JSON, or comma-separated"
    if key in TABLES:
        return "JSON: " + TABLES[key].replace(" = ", ": ").replace("{ ", "{").replace(" }", "}")
    return (f"a JSON object holding the [{key}] section; set one setting with "
            f"{ENV_PREFIX}{key.upper()}__KEY instead")


def environment_problem(exc: SettingsError) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, _EnvironmentValueError):
            return str(cause)
        cause = cause.__cause__
    return f"the environment: {exc}"


@functools.cache
def _field_keys(settings: type[BaseSettings]) -> dict[int, str]:
    """Each setting's field, by identity, and its dotted key (the environment source is handed
    the field, not where it sits)."""
    keys: dict[int, str] = {}
    for section, field in settings.model_fields.items():
        keys[id(field)] = section
        for name, inner in _section_model(field).model_fields.items():
            keys[id(inner)] = f"{section}.{name}"
    return keys
