"""Which credentials a source's auth scheme gets: the one place that knows every scheme, so the
schemes' own modules (`auth`, `refresh`) need not know each other's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from apilake.fetch.auth import Credentials, HeaderCredentials, OAuth2Credentials, QueryKeyCredentials
from apilake.fetch.refresh import RefreshTokenCredentials
from apilake.jobfile import ApiKeyAuth, BasicAuth, BearerAuth, OAuth2ClientCredentials, OAuth2RefreshToken, Source
from apilake.redact import Redactor

if TYPE_CHECKING:
    import httpx

    from apilake.destinations import Destination


def credentials_for(source: Source, http: httpx.AsyncClient | None, redact: Redactor, tokens: Destination | None = None) -> Credentials:
    """The credentials of a source's auth scheme (`token:` is bearer), with its own `headers:`;
    `http` asks an OAuth2 token endpoint (None: a client of its own, made when first needed);
    `tokens` keeps rotated refresh tokens (`fetch.refresh.token_store`)."""
    headers = dict(source.headers)
    scheme = source.credentials
    if isinstance(scheme, BearerAuth):
        return HeaderCredentials(headers, "Authorization", f"Bearer {scheme.token}")
    if isinstance(scheme, BasicAuth):
        return HeaderCredentials(headers, "Authorization", scheme.header)
    if isinstance(scheme, ApiKeyAuth):
        if scheme.location == "query":
            return QueryKeyCredentials(headers, scheme.name, scheme.value)
        return HeaderCredentials(headers, scheme.name, scheme.value)
    if isinstance(scheme, OAuth2ClientCredentials):
        return OAuth2Credentials(headers, scheme, http, redact, source.timeouts)
    if isinstance(scheme, OAuth2RefreshToken):
        if tokens is None:
            raise ValueError("an oauth2_refresh_token source needs a token store")
        return RefreshTokenCredentials(headers, source, scheme, http, redact, tokens)
    return Credentials(headers)
