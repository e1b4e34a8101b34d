"""OAuth2 client-credentials tokens for one TrueConf Server: fetched when first needed, renewed
a little before they expire, shared by concurrent requests, and dropped when the server refuses
one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from mailhook.errors import TrueConfAuthError, TrueConfRejected, TrueConfUnavailable
from mailhook.trueconf.answers import describe_failure, error, ok_json
from mailhook.trueconf.payload import is_v4

TOKEN_PATH = "/oauth2/v1/token"  # noqa: S105 - a path, not a secret
# Used when the token answer has no usable "expires_in" (the official MCP server does the same).
DEFAULT_TOKEN_LIFETIME = 3600.0
# Renew a little early so a token does not expire between our check and the server's.
TOKEN_MARGIN = 30.0


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float  # on the injected clock


class Tokens:
    """The current token of one TrueConf client, fetched over that client's connection pool."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        client_id: str,
        client_secret: str,
        api_version: str,
        clock: Callable[[], float],
    ) -> None:
        self._http = http
        self._client_id = client_id
        self._client_secret = client_secret
        self._api_version = api_version
        self._v4 = is_v4(api_version)
        self._clock = clock
        self._token: _Token | None = None
        self._token_as_json = False  # the token endpoint refused a form and took JSON
        self._token_path = TOKEN_PATH
        self._token_lock = asyncio.Lock()

    async def value(self) -> str:
        """A token that has not expired, fetching one when needed."""
        token = self._token
        if token is not None and self._clock() < token.expires_at:
            return token.value
        async with self._token_lock:
            # Another task may have fetched a token while this one waited for the lock.
            token = self._token
            if token is None or self._clock() >= token.expires_at:
                token = self._token = await self._fetch_token()
            return token.value

    async def renew(self) -> None:
        """Fetch a fresh token now, whatever the one held."""
        async with self._token_lock:
            self._token = await self._fetch_token()

    def forget(self, value: str) -> None:
        """Drop a token the server refused."""
        # Only drop the token the server refused, not a newer one another task already fetched.
        if self._token is not None and self._token.value == value:
            self._token = None

    def scrub(self, text: str) -> str:
        """The text without the secret or the token in it."""
        # A server echoing what it received must not carry the secret or a token into the logs.
        secrets = [self._client_secret, self._token.value if self._token else ""]
        for secret in filter(None, secrets):
            text = text.replace(secret, "***")
        return text

    async def _post_token(self, form: dict[str, str], as_json: bool = False) -> httpx.Response:
        response = await self._post_token_to(self._token_path, form, as_json)
        if response.status_code == 404 and self._v4 and self._token_path == TOKEN_PATH:
            # Servers of the v4 generation may serve tokens under the API path only.
            v4_path = f"/api/{self._api_version}/oauth2/token"
            retry = await self._post_token_to(v4_path, form, as_json)
            if retry.status_code != 404:
                self._token_path = v4_path
                return retry
        return response

    async def _post_token_to(
        self, path: str, form: dict[str, str], as_json: bool
    ) -> httpx.Response:
        as_json = as_json or self._token_as_json
        try:
            if as_json:
                return await self._http.post(path, json=form)
            return await self._http.post(path, data=form)
        except httpx.HTTPError as exc:
            raise TrueConfUnavailable(
                f"TrueConf token endpoint unreachable: {describe_failure(exc)}"
            ) from exc

    async def _fetch_token(self) -> _Token:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        response = await self._post_token(form)
        if response.status_code in (400, 401, 415) and not self._token_as_json:
            # The documented example sends JSON, the official samples a form; servers take
            # both, but a proxy or an older server may take only one. Try the other once.
            retry = await self._post_token(form, as_json=True)
            if retry.status_code < 400:
                self._token_as_json = True
                response = retry
        if response.status_code in (400, 401, 415):
            raise error(TrueConfAuthError, response, "accept the client credentials", self.scrub)
        body = ok_json(response, "issue a token", self.scrub)
        return self._token_from(body)

    def _token_from(self, body: Any) -> _Token:
        value = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise TrueConfRejected(
                "TrueConf token answer has no access_token", reason="badResponse"
            )
        lifetime = body.get("expires_in")
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        margin = min(TOKEN_MARGIN, lifetime / 10)
        return _Token(value=value, expires_at=self._clock() + lifetime - margin)
