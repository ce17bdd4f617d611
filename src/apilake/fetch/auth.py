"""Credentials of a source: one class per auth scheme, applied to requests for its origin only.

`SourceClient` asks `headers` and `url` for every request to the source's own origin (never for a
redirect to another host) and `renew` once after a 401. Only OAuth2 has anything to renew: its access token
is fetched from the token endpoint (which may be on another origin and gets the client secret,
never the access token), shared by all concurrent units of the source (one request in flight at
a time), cached until shortly before it expires, and taught to every redactor as a secret. The
cache is per process, so the tasks of one Dask worker share a token too. The refresh token
grant, whose tokens outlive a process, has a room of its own (`fetch.refresh`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apilake import __version__
from apilake.errors import TransferError, is_transient
from apilake.jobfile import OAuth2Client, Timeouts
from apilake.redact import ERROR_DETAIL_CHARS, Redactor, learn

if TYPE_CHECKING:
    import httpx


class Credentials:
    """No auth scheme: only the source's own `headers:` go with its requests."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    async def headers(self) -> dict[str, str]:
        """The headers a request to the source's origin carries."""
        return dict(self._headers)

    def url(self, url: str) -> str:
        """The URL as sent to the source's origin (a query API key is added here, and only here)."""
        return url

    async def renew(self, sent: Mapping[str, str]) -> bool:
        """After a 401 to a request sent with headers `sent`: True when fresh credentials may help."""
        return False

    async def aclose(self) -> None:
        """Release what fetching credentials needed (an OAuth2 token endpoint's connections)."""


class HeaderCredentials(Credentials):
    """Bearer, Basic and header API keys: a fixed header beside the source's own."""

    def __init__(self, headers: dict[str, str], name: str, value: str) -> None:
        super().__init__({**headers, name: value})


class QueryKeyCredentials(Credentials):
    """An API key in the query string, added as the request goes out: the unit's URL, its logs,
    records and keys never hold it."""

    def __init__(self, headers: dict[str, str], name: str, value: str) -> None:
        super().__init__(headers)
        self.name = name
        self.value = value

    def url(self, url: str) -> str:
        import httpx  # its URL model, loaded only by a source with a query key

        return str(httpx.URL(url).copy_set_param(self.name, self.value))


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access token and when it was issued, by the wall clock: another process or host that
    reads it from a token store (`fetch.refresh`) can tell whether it is still good."""

    value: str
    issued_at: float
    lifetime: float  # seconds, from `expires_in`; 0: the endpoint did not say

    def fresh(self, margin: float, now: float | None = None) -> bool:
        """Good for a while yet: not within `margin` (at most half its lifetime) of its expiry."""
        if not self.lifetime:
            return True
        return (time.time() if now is None else now) < self.issued_at + self.lifetime - min(margin, self.lifetime / 2)


class TokenEndpointError(TransferError):
    """The token endpoint refused: `error` is its RFC 6749 section 5.2 error code (`invalid_grant`)."""

    def __init__(self, message: str, *, status: int, transient: bool, error: str | None) -> None:
        super().__init__(message, status=status, transient=transient)
        self.error = error


#: Access tokens by client (token URL, id, secret, scope, and what else tells grants apart).
_TOKENS: dict[tuple[str | None, ...], AccessToken] = {}
_TOKENS_LOCK = threading.Lock()


def forget_tokens() -> None:
    """Drop every cached access token of this process."""
    with _TOKENS_LOCK:
        _TOKENS.clear()


class OAuth2Credentials(Credentials):
    """OAuth 2.0 client credentials (RFC 6749 section 4.4) with a token shared by all units.

    The base of every OAuth2 grant: a subclass says how a token is got (`_fetch`); the cache,
    the single flight, renewal after a 401 and the token endpoint's request and errors are here.
    The token endpoint is asked through httpx (a form POST an hour, where libcurl carries the
    source's own requests), with a client made on the first fetch unless one is given (tests
    give one with a mock transport)."""

    def __init__(self, headers: dict[str, str], spec: OAuth2Client, http: httpx.AsyncClient | None, redact: Redactor, timeouts: Timeouts) -> None:
        super().__init__(headers)
        self.spec = spec
        self.http = http
        self._own_http = http is None
        self.timeouts = timeouts
        self.redact = redact
        self._lock = asyncio.Lock()
        self._renewing: asyncio.Future[str] | None = None
        self._client: tuple[str | None, ...] = (spec.token_url, spec.client_id, spec.client_secret, spec.scope)

    async def headers(self) -> dict[str, str]:
        return {**self._headers, "Authorization": f"Bearer {await self._current()}"}

    async def renew(self, sent: Mapping[str, str]) -> bool:
        with _TOKENS_LOCK:
            cached = _TOKENS.get(self._client)
            if cached and sent.get("Authorization") == f"Bearer {cached.value}":
                del _TOKENS[self._client]  # the one that was refused; a concurrent unit may have renewed it already
        return True

    async def _current(self) -> str:
        async with self._lock:  # single flight: one token request however many units wait
            with _TOKENS_LOCK:
                cached = _TOKENS.get(self._client)
            if cached is not None and cached.fresh(self.spec.expiry_margin_seconds):
                return cached.value
            if self._renewing is None or self._renewing.done():
                self._renewing = asyncio.ensure_future(self._renew())
            # Shielded: the request that found the token stale may be cancelled (a page fetched
            # ahead that paging no longer needs, a timeout); the token request goes on, and the
            # next caller awaits it. Cancelled half-way, a spent refresh token's successor would
            # be lost with its answer.
            return await asyncio.shield(self._renewing)

    async def _renew(self) -> str:
        token = await self._fetch()
        learn(token.value)
        with _TOKENS_LOCK:
            _TOKENS[self._client] = token
        return token.value

    async def _fetch(self) -> AccessToken:
        form = {"grant_type": "client_credentials"}
        if self.spec.scope:
            form["scope"] = self.spec.scope
        return self._access_token(await self._token_request(form))

    async def aclose(self) -> None:
        if self._own_http and self.http is not None:
            await self.http.aclose()
            self.http = None

    def _token_http(self) -> httpx.AsyncClient:
        import httpx

        if self.http is None:
            t = self.timeouts
            self.http = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=None),
                headers={"User-Agent": f"apilake/{__version__}"},
                follow_redirects=False,
            )
        return self.http

    async def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        """POST `form` to the token endpoint with the client's credentials; its JSON answer.
        A refusal is a `TokenEndpointError` (transient as the API's own answers: `errors.is_transient`), its text redacted."""
        import httpx

        spec = self.spec
        headers = {"Accept": "application/json"}
        if spec.client_auth == "basic":
            headers["Authorization"] = spec.basic_header
        else:
            form = {**form, "client_id": spec.client_id, "client_secret": spec.client_secret}
        try:
            response = await self._token_http().post(spec.token_url, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise TransferError(self.redact(f"token endpoint {spec.token_url}: {type(exc).__name__}: {exc}"), transient=True) from None
        status = response.status_code
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if status != 200:
            detail = self.redact.cut(response.text.replace("\n", " "), ERROR_DETAIL_CHARS)
            error = doc.get("error") if isinstance(doc, dict) and isinstance(doc.get("error"), str) else None
            raise TokenEndpointError(
                f"token endpoint {spec.token_url} answered HTTP {status}: {detail}", status=status, transient=is_transient(status), error=error
            )
        if not isinstance(doc, dict):
            raise TransferError(f"token endpoint {spec.token_url}: the answer is not a JSON object (RFC 6749 5.1)")
        return doc

    def _access_token(self, doc: dict[str, Any]) -> AccessToken:
        """The access token of a token endpoint's answer (RFC 6749 section 5.1)."""
        url = self.spec.token_url
        try:
            token = doc["access_token"]
            lifetime = float(doc.get("expires_in") or 0)
        except (ValueError, KeyError, TypeError):
            raise TransferError(f"token endpoint {url}: the answer has no access_token (RFC 6749 5.1)") from None
        if not isinstance(token, str) or not token:
            raise TransferError(f"token endpoint {url}: access_token is empty")
        return AccessToken(token, time.time(), lifetime)
