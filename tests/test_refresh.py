"""OAuth2 refresh tokens kept in a token store: which token is spent, claims, sealing (httpx
MockTransport for the token endpoint, a local folder for the store)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from apilake.destinations.local import LocalDestination
from apilake.errors import TransferError
from apilake.fetch.auth import AccessToken, forget_tokens
from apilake.fetch.credentials import credentials_for
from apilake.fetch.refresh import Chain, Seal, token_key
from apilake.jobfile import OAuth2RefreshToken, Source
from apilake.redact import Redactor

TOKEN_URL = "https://auth.test/oauth/token"
SPEC = OAuth2RefreshToken(type="oauth2_refresh_token", token_url=TOKEN_URL, client_id="id", client_secret="s3cret-client", refresh_token="rt-0")


@pytest.fixture(autouse=True)
def no_cached_tokens() -> None:
    forget_tokens()


@pytest.mark.parametrize(
    "issued_ago, lifetime, margin, fresh",
    [(0, 3600, 60, True), (3500, 3600, 60, True), (3550, 3600, 60, False), (0.6, 1, 60, False), (0.4, 1, 60, True), (10**6, 0, 60, True)],
)
def test_an_access_token_is_fresh_until_its_margin(issued_ago: float, lifetime: float, margin: float, fresh: bool) -> None:
    now = 1_000_000_000.0
    assert AccessToken("at", now - issued_ago, lifetime).fresh(margin, now) is fresh


SEAL = Seal(SPEC)


@pytest.mark.parametrize(
    "stored, spent, configured, expected",
    [
        (None, [], "rt-0", ("rt-0", True)),  # nothing stored: the job file's token starts the chain
        ("rt-5", ["rt-0", "rt-4"], "rt-0", ("rt-5", False)),  # the job file's token was spent: the newest stored one
        ("rt-5", [], "rt-5", ("rt-5", False)),  # a vendor that does not rotate
        ("rt-5", ["rt-0", "rt-4"], "rt-new", ("rt-new", True)),  # the user set a new token: a new chain
    ],
)
def test_which_refresh_token_is_spent(stored: str | None, spent: list[str], configured: str, expected: tuple[str, bool]) -> None:
    chain = Chain(refresh_token=stored, spent=[SEAL.fingerprint(s) for s in spent])
    assert chain.to_spend(configured, SEAL) == expected


def test_sealed_tokens_open_only_with_the_client_secret() -> None:
    sealed = SEAL.seal({"refresh_token": "rt-9"}, "k")
    assert "rt-9" not in sealed and SEAL.open(sealed, "k") == {"refresh_token": "rt-9"}
    assert SEAL.open(sealed, "another key") is None  # bound to its object's key
    assert Seal(SPEC.model_copy(update={"client_secret": "other"})).open(sealed, "k") is None
    assert SEAL.open("not base64!", "k") is None


class Vendor:
    """A token endpoint with single-use, rotating refresh tokens (or, `rotate=False`, one for ever)."""

    def __init__(self, live: str = "rt-0", rotate: bool = True, delay: float = 0.0) -> None:
        self.live, self.rotate, self.delay, self.n, self.forms = {live}, rotate, delay, 0, []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        self.forms.append(form)
        await asyncio.sleep(self.delay)
        token = form.get("refresh_token", "")
        if token not in self.live:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": f"no such token {token}"})
        self.n += 1
        answer = {"access_token": f"at-{self.n}", "expires_in": 3600}
        if self.rotate:
            self.live = {f"rt-{self.n}"}
            answer["refresh_token"] = f"rt-{self.n}"
        return httpx.Response(200, json=answer)


def credentials(vendor: Vendor, store: LocalDestination, refresh_token: str = "rt-0") -> Any:
    source = Source.model_validate(
        {
            "name": "s",
            "base_url": "https://api.test",
            "auth": SPEC.model_dump() | {"refresh_token": refresh_token},
            "endpoints": [{"name": "e", "kind": "json", "path": "/x"}],
        }
    )
    return credentials_for(source, httpx.AsyncClient(transport=httpx.MockTransport(vendor)), Redactor(source.secrets()), store)


async def bearer(creds: Any) -> str:
    return (await creds.headers())["Authorization"]


def test_each_process_spends_the_token_the_one_before_stored(tmp_path: Path) -> None:
    vendor, store = Vendor(), LocalDestination(tmp_path)

    async def main() -> list[str]:
        seen = []
        for _ in range(3):  # three runs: each a new process (no cache), whose first token is refused
            forget_tokens()
            creds = credentials(vendor, store)
            first = await creds.headers()
            await creds.renew(first)
            seen.append(await bearer(creds))
        return seen

    assert asyncio.run(main()) == ["Bearer at-2", "Bearer at-3", "Bearer at-4"]
    assert [f["refresh_token"] for f in vendor.forms] == ["rt-0", "rt-1", "rt-2", "rt-3"]
    assert "rt-4" not in (tmp_path / token_key(credentials(vendor, store).source, SPEC)).read_text()
    assert Redactor()("rotated rt-4, access at-4") == "rotated ***, access ***"  # every redactor learnt them


def test_concurrent_processes_spend_one_token_once(tmp_path: Path) -> None:
    """Separate credentials stand for processes (or Dask workers) with a store in common."""
    vendor, store = Vendor(delay=0.2), LocalDestination(tmp_path)

    async def main() -> set[str]:
        return set(await asyncio.gather(*(bearer(credentials(vendor, store)) for _ in range(5))))

    assert asyncio.run(main()) == {"Bearer at-1"}
    assert vendor.n == 1 and len(vendor.forms) == 1


def test_a_vendor_that_does_not_rotate_keeps_its_token(tmp_path: Path) -> None:
    vendor, store = Vendor(rotate=False), LocalDestination(tmp_path)

    async def main() -> None:
        for _ in range(2):
            creds = credentials(vendor, store)
            await creds.renew(await creds.headers())
            await bearer(creds)

    asyncio.run(main())
    assert [f["refresh_token"] for f in vendor.forms] == ["rt-0"] * 3


def test_a_claim_whose_holder_died_is_taken_over(tmp_path: Path) -> None:
    vendor, store = Vendor(), LocalDestination(tmp_path)
    key = token_key(credentials(vendor, store).source, SPEC)
    dead = {"claim": {"id": "dead", "until": time.time() + 0.3, "by": "a killed run"}, "spent": [], "sealed": None}
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_text(json.dumps(dead))
    started = time.monotonic()
    assert asyncio.run(bearer(credentials(vendor, store))) == "Bearer at-1"
    assert time.monotonic() - started >= 0.25 and vendor.n == 1


def test_invalid_grant_names_the_source_and_is_asked_once(tmp_path: Path) -> None:
    vendor, store = Vendor(live="rt-other"), LocalDestination(tmp_path)
    creds = credentials(vendor, store)

    async def main() -> list[str]:
        errors = []
        for _ in range(3):
            with pytest.raises(TransferError) as info:
                await creds.headers()
            errors.append(str(info.value))
        return errors

    errors = asyncio.run(main())
    assert len(vendor.forms) == 1 and len(set(errors)) == 1
    assert "source 's'" in errors[0] and "invalid_grant" in errors[0] and "rt-0" not in errors[0]
    assert not errors[0].startswith("Traceback")
    assert json.loads((tmp_path / creds.key).read_text())["claim"] is None  # the claim is given back


@pytest.mark.parametrize(
    "stored",
    [
        b"not json",
        b"[1, 2]",
        b'{"spent": "rt-0", "claim": "mine", "sealed": "garbage"}',
        b'{"sealed": 42, "spent": [1]}',
        b'{"claim": {"id": "x", "until": "forever"}}',
    ],
)
def test_a_damaged_token_object_is_read_as_no_chain(tmp_path: Path, stored: bytes) -> None:
    vendor, store = Vendor(), LocalDestination(tmp_path)
    creds = credentials(vendor, store)
    (tmp_path / creds.key).parent.mkdir(parents=True)
    (tmp_path / creds.key).write_bytes(stored)
    assert asyncio.run(bearer(creds)) == "Bearer at-1"
    assert [f["refresh_token"] for f in vendor.forms] == ["rt-0"]


@pytest.mark.parametrize(
    "settings, where",
    [
        ({}, "lake"),
        ({"token_store": "{tmp}/shared"}, "shared"),
        ({"lease": {"mode": "off"}}, "host"),
        ({"lease": {"mode": "off"}, "token_store": "{tmp}/shared"}, "shared"),
    ],
)
def test_where_refresh_tokens_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], where: str) -> None:
    from apilake.fetch.refresh import token_store
    from apilake.jobfile import Job

    monkeypatch.setenv("APILAKE_TOKEN_DIR", str(tmp_path / "host"))
    settings = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in settings.items()}
    job = Job.model_validate(
        {
            "destination": str(tmp_path / "lake"),
            **settings,
            "sources": [{"name": "s", "base_url": "https://api.test", "auth": SPEC.model_dump(), "endpoints": [{"name": "e", "kind": "json", "path": "/x"}]}],
        }
    )
    dest = LocalDestination(tmp_path / "lake")
    store = token_store(job, dest)
    assert store is dest if where == "lake" else store.url == str(tmp_path / where)


class SpendsOnReceipt(Vendor):
    """Spends the refresh token as the request arrives and answers later, as real servers do."""

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        self.forms.append(form)
        if form.get("refresh_token") not in self.live:
            return httpx.Response(400, json={"error": "invalid_grant"})
        self.n += 1
        self.live = {f"rt-{self.n}"}
        await asyncio.sleep(self.delay)
        return httpx.Response(200, json={"access_token": f"at-{self.n}", "expires_in": 3600, "refresh_token": f"rt-{self.n}"})


def test_a_request_cancelled_while_it_refreshes_loses_no_rotated_token(tmp_path: Path) -> None:
    """A page fetched ahead finds the token stale, starts the refresh and is cancelled (paging
    ended): the refresh goes on, the page that waited gets its token, and the next run too."""
    forget_tokens()
    vendor, store = SpendsOnReceipt(delay=0.3), LocalDestination(tmp_path)

    async def run() -> str:
        creds = credentials(vendor, store)
        ahead = asyncio.ensure_future(bearer(creds))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(bearer(creds))
        await asyncio.sleep(0.05)
        ahead.cancel()
        return await waiting

    assert asyncio.run(run()) == "Bearer at-1"
    forget_tokens()
    assert asyncio.run(bearer(credentials(vendor, store))) == "Bearer at-1"  # the next run: the kept access token, nothing spent
    assert [f["refresh_token"] for f in vendor.forms] == ["rt-0"]
