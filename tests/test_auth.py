"""Auth schemes: what each adds to a request, and the OAuth2 token's life (httpx MockTransport)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from apilake.errors import TransferError
from apilake.fetch.auth import forget_tokens
from apilake.fetch.client import SourceClient
from apilake.fetch.credentials import credentials_for
from apilake.jobfile import Source
from apilake.redact import Redactor

TOKEN_URL = "https://auth.test/oauth/token"


@pytest.fixture(autouse=True)
def no_cached_tokens() -> None:
    forget_tokens()  # tokens are cached per process; each test starts without one


def source(auth: dict[str, Any] | None = None, **settings: Any) -> Source:
    return Source.model_validate(
        {"name": "s", "base_url": "https://api.test", "auth": auth, "endpoints": [{"name": "e", "kind": "json", "path": "/x"}], **settings}
    )


async def signed(src: Source) -> tuple[dict[str, str], str]:
    credentials = credentials_for(src, httpx.AsyncClient(), Redactor())
    return await credentials.headers(), credentials.url("https://api.test/x?a=1")


@pytest.mark.parametrize(
    "settings, header, value, url",
    [
        ({"token": "t0k"}, "Authorization", "Bearer t0k", "https://api.test/x?a=1"),
        ({"auth": {"type": "bearer", "token": "t0k"}}, "Authorization", "Bearer t0k", "https://api.test/x?a=1"),
        ({"auth": {"type": "basic", "username": "u", "password": "p"}}, "Authorization", "Basic dTpw", "https://api.test/x?a=1"),
        ({"auth": {"type": "api_key", "name": "X-Key", "value": "k1"}}, "X-Key", "k1", "https://api.test/x?a=1"),
        ({"auth": {"type": "api_key", "name": "key", "value": "k 1", "location": "query"}}, "Authorization", None, "https://api.test/x?a=1&key=k+1"),
        ({"headers": {"X-Team": "data"}}, "X-Team", "data", "https://api.test/x?a=1"),
    ],
)
def test_static_schemes(settings: dict, header: str, value: str | None, url: str) -> None:
    src = source(**{"auth": None, **settings})
    headers, sent_url = asyncio.run(signed(src))
    assert headers.get(header) == value
    assert sent_url == url


def test_every_credential_is_a_secret() -> None:
    oauth = {"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "id", "client_secret": "s3cret"}
    assert set(source(oauth).secrets()) == {"s3cret", "aWQ6czNjcmV0"}  # the secret, and id:secret as sent in Basic
    assert set(source({"type": "basic", "username": "u", "password": "pw1"}).secrets()) == {"pw1", "dTpwdzE="}
    assert source({"type": "api_key", "name": "k", "value": "v4lue"}).secrets() == ["v4lue"]


def test_token_and_auth_together_are_refused() -> None:
    with pytest.raises(ValueError, match="token: and auth: both given"):
        source({"type": "bearer", "token": "a"}, token="b")


class TokenServer:
    def __init__(self, expires_in: float | None = 3600, fail: int = 0) -> None:
        self.expires_in, self.fail, self.calls, self.forms, self.auths = expires_in, fail, 0, [], []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)  # concurrent callers overlap
        self.calls += 1
        self.forms.append(dict(httpx.QueryParams(request.content.decode())))
        self.auths.append(request.headers.get("authorization"))
        if self.fail:
            self.fail -= 1
            return httpx.Response(500, text="boom")
        doc = {"access_token": f"at-{self.calls}", "token_type": "bearer"}
        if self.expires_in is not None:
            doc["expires_in"] = self.expires_in
        return httpx.Response(200, content=json.dumps(doc))


def oauth(server: TokenServer, **extra: Any) -> tuple[Any, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    spec = {"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "id", "client_secret": "s3cret", **extra}
    return credentials_for(source(spec), http, Redactor()), http


def test_oauth2_one_token_request_for_many_concurrent_units() -> None:
    server = TokenServer()
    credentials, _ = oauth(server, scope="reports.read")

    async def main() -> list[str | None]:
        headers = await asyncio.gather(*(credentials.headers() for _ in range(20)))
        return [h.get("Authorization") for h in headers]

    assert set(asyncio.run(main())) == {"Bearer at-1"}
    assert server.calls == 1
    assert server.forms == [{"grant_type": "client_credentials", "scope": "reports.read"}]
    assert server.auths == ["Basic aWQ6czNjcmV0"]


def test_oauth2_body_client_auth_and_refresh_after_401() -> None:
    server = TokenServer()
    credentials, _ = oauth(server, client_auth="body")

    async def main() -> tuple[str | None, str | None]:
        first = await credentials.headers()
        assert await credentials.renew(first)
        again = await credentials.headers()
        return first.get("Authorization"), again.get("Authorization")

    assert asyncio.run(main()) == ("Bearer at-1", "Bearer at-2")
    assert server.forms[0] == {"grant_type": "client_credentials", "client_id": "id", "client_secret": "s3cret"}
    assert server.auths == [None, None]


@pytest.mark.parametrize("expires_in, margin, renewed", [(3600, 60, False), (0.2, 60, True), (None, 60, False)])
def test_oauth2_token_is_renewed_before_it_expires(expires_in: float | None, margin: float, renewed: bool) -> None:
    server = TokenServer(expires_in=expires_in)
    credentials, _ = oauth(server, expiry_margin_seconds=margin)

    async def main() -> None:
        await credentials.headers()
        await asyncio.sleep(0.12)  # past half of a 0.2 s lifetime: inside the margin
        await credentials.headers()

    asyncio.run(main())
    assert server.calls == (2 if renewed else 1)


def test_oauth2_clients_of_one_process_share_the_token() -> None:
    server = TokenServer()

    async def main() -> set[str | None]:
        seen = set()
        for _ in range(3):  # e.g. the tasks of one Dask worker, each with its own client
            credentials, _ = oauth(server)
            seen.add((await credentials.headers()).get("Authorization"))
        return seen

    assert asyncio.run(main()) == {"Bearer at-1"}
    assert server.calls == 1


def test_oauth2_a_5xx_from_the_token_endpoint_is_transient_and_names_no_secret() -> None:
    credentials, _ = oauth(TokenServer(fail=1))
    with pytest.raises(TransferError) as info:
        asyncio.run(credentials.headers())
    assert info.value.transient and "HTTP 500" in str(info.value) and "s3cret" not in str(info.value)


def test_an_access_token_that_would_start_another_header_is_never_sent() -> None:
    class Hostile(TokenServer):
        async def __call__(self, request: httpx.Request) -> httpx.Response:
            self.calls += 1
            return httpx.Response(200, content=json.dumps({"access_token": "at\r\nX-Injected: 1", "expires_in": 3600}))

    class Unlimited:
        def spent(self) -> bool:
            return False

        async def acquire(self) -> None:
            return None

    credentials, _ = oauth(Hostile())
    client = SourceClient(source(), Redactor(), Unlimited())
    client._credentials = credentials  # the token endpoint answers from the mock above

    async def main() -> None:
        try:
            await client._headers_for("https://api.test/x")
        finally:
            await client.close()

    with pytest.raises(TransferError, match="header Authorization: its value holds a control character") as info:
        asyncio.run(main())
    assert "X-Injected" not in str(info.value) and not info.value.transient
