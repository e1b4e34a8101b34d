"""TrueConf's HTTP answers read and their failures mapped onto mailhook's error hierarchy (the
mapping is drawn in trueconf/client.py's docstring). ``scrub`` removes the client secret and the
current token from any text the server sent back before it reaches an error message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from mailhook.errors import TrueConfError, TrueConfRejected, TrueConfUnavailable
from mailhook.trueconf.payload import parse_error

Scrub = Callable[[str], str]


def ok_json(response: httpx.Response, action: str, scrub: Scrub) -> Any:
    """Return the decoded body of a successful answer, or raise the mapped error."""
    raise_for_status(response, action, scrub)
    try:
        return response.json()
    except ValueError as exc:
        raise TrueConfUnavailable(
            f"TrueConf could not {action}: the answer is not JSON",
            status=response.status_code,
            reason="badResponse",
        ) from exc


def raise_for_status(response: httpx.Response, action: str, scrub: Scrub) -> None:
    if response.is_success:
        return
    status = response.status_code
    if status >= 500 or status == 429:
        raise error(TrueConfUnavailable, response, action, scrub)
    raise error(TrueConfRejected, response, action, scrub)


def error(
    kind: type[TrueConfError], response: httpx.Response, action: str, scrub: Scrub
) -> TrueConfError:
    found = parse_error(answer_body(response))
    parts = [f"TrueConf could not {action}: HTTP {response.status_code}"]
    if found.reason:
        parts.append(f" {found.reason}")
    if found.message:
        parts.append(f" ({found.message})")
    message = scrub("".join(parts))
    return kind(message, status=response.status_code, reason=found.reason)


def answer_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def token_refused(response: httpx.Response) -> bool:
    """Tell whether the server refused the token: v4 says 401, v3 says 403 accessTokenInvalid."""
    if response.status_code == 401:
        return True
    return (
        response.status_code == 403
        and parse_error(answer_body(response)).reason == "accessTokenInvalid"
    )


def conference_missing(response: httpx.Response) -> bool:
    # A 404 for an unknown route means a wrong API version, not a deleted conference.
    if response.status_code != 404:
        return False
    return parse_error(answer_body(response)).reason != "routeNotFound"


def describe_failure(exc: Exception) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
