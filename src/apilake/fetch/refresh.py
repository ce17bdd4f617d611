"""OAuth2 refresh tokens (RFC 6749 section 6), kept across runs, jobs and hosts.

A vendor that rotates refresh tokens hands out a new one with each access token and honours
each only once (OAuth 2.1 section 4.3.1; some revoke the whole chain when a used one comes
back). So the newest refresh token, not the one in the job file, is what the next run, another
job with this source or another host must spend. It is kept in one small object of the token
store, `_apilake/tokens/<source>-<client>.json` in the destination (or under `token_store:`),
written by compare-and-swap like the quota ledgers (`Destination.put_if`).

Writing the new token after the refresh is not enough: two runs that read the same token would
both spend it, and the second would be refused (or get the chain revoked). So a spend is
claimed first: a process that finds no fresh access token in the store writes a claim (who,
until when) by compare-and-swap, refreshes, then writes the new refresh token and the access
token over its claim. A process that meets a live claim waits for the claimer's answer and
uses its access token. A claim whose holder died (its `until` passed) is taken over; had the
holder spent the token, the token endpoint answers `invalid_grant` and the run fails naming the
source, asking for a new refresh token.

The job file's refresh token starts the chain. The store keeps fingerprints of the tokens the
chain has spent: a job file still holding one of them (every run after the first, a host with
an older copy) uses the stored token; one the chain has never seen is the user's new token
(after a revocation) and starts the chain anew.

Stored tokens are secrets: sealed (AES-GCM) with a key derived from the client secret, so a
reader of the lake without the job's secrets learns neither token; written 0600 in a local
folder; under `_apilake/` (not the landed zone; no command lists them); and taught to the
redactor as soon as they are read or received.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from apilake.destinations import OWN_PREFIX, Destination, host_state_folder, shared_store
from apilake.errors import TransferError
from apilake.fetch.auth import AccessToken, OAuth2Credentials, TokenEndpointError
from apilake.jobfile import Job, OAuth2RefreshToken, Source
from apilake.redact import Redactor, learn

if TYPE_CHECKING:
    from collections.abc import Mapping

    import httpx

log = logging.getLogger("apilake")

TOKENS_PREFIX = f"{OWN_PREFIX}tokens/"
SPENT_KEPT = 32  # fingerprints of spent refresh tokens a chain remembers
CAS_TRIES = 30  # reads and compare-and-swaps before giving up (heavy contention)
CLAIM_SLACK = 10.0  # seconds a claim outlives the token request's own timeouts


def token_store(job: Job, dest: Destination) -> Destination:
    """Where the job's refresh tokens are kept: `token_store:`, else the destination (`shared_store`)."""
    return shared_store(job.token_store, job, dest, host_token_folder())


def host_token_folder() -> Path:
    """Where this host keeps refresh tokens for jobs without a lease; `$APILAKE_TOKEN_DIR` moves it."""
    return host_state_folder("tokens", "APILAKE_TOKEN_DIR")


def token_key(source: Source, spec: OAuth2RefreshToken) -> str:
    """One chain per source and client: the same source in two jobs shares it; two sources (two
    accounts of one app) each have their own."""
    client = hashlib.sha256(json.dumps([spec.token_url, spec.client_id]).encode()).hexdigest()[:20]
    return f"{TOKENS_PREFIX}{source.name}-{client}.json"


@functools.lru_cache(maxsize=16)
def _keys(secret: str, token_url: str, client_id: str) -> bytes:
    """64 bytes from the client secret: a sealing key and a fingerprinting key (PBKDF2, so a
    weak secret is not found again cheaply by guessing)."""
    salt = json.dumps(["apilake refresh tokens v1", token_url, client_id]).encode()
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, 100_000, dklen=64)


class Seal:
    """Seals what the store keeps with a key only the job's secrets give."""

    def __init__(self, spec: OAuth2RefreshToken) -> None:
        keys = _keys(spec.client_secret, spec.token_url, spec.client_id)
        self._aead = AESGCM(keys[:32])
        self._mac = keys[32:]

    def seal(self, doc: dict[str, Any], key: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, json.dumps(doc).encode(), key.encode())).decode()

    def open(self, sealed: object, key: str) -> dict[str, Any] | None:
        """The sealed document, or None when it cannot be opened (another client secret, damage)."""
        try:
            raw = base64.b64decode(str(sealed), validate=True)
            doc = json.loads(self._aead.decrypt(raw[:12], raw[12:], key.encode()))
        except (InvalidTag, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def fingerprint(self, token: str) -> str:
        return hmac.new(self._mac, token.encode(), hashlib.sha256).hexdigest()[:24]


@dataclass
class Chain:
    """The token store's object as read: the newest refresh token and access token, the spent
    tokens' fingerprints, a claim on the next spend, and the version for compare-and-swap."""

    version: str | None = None
    refresh_token: str | None = None
    access: AccessToken | None = None
    spent: list[str] = field(default_factory=list)
    claim: dict[str, Any] | None = None

    def to_spend(self, configured: str, seal: Seal) -> tuple[str, bool]:
        """The refresh token to spend next, and whether it starts a new chain: the stored one,
        unless the job file's is one this chain has never seen (the user's new token)."""
        if self.refresh_token is None:
            return configured, True
        if configured != self.refresh_token and seal.fingerprint(configured) not in self.spent:
            return configured, True
        return self.refresh_token, False

    @property
    def claim_until(self) -> float:
        """When the claim runs out (0: no claim, or one that says no time)."""
        until = (self.claim or {}).get("until")
        return float(until) if isinstance(until, (int, float)) else 0.0

    def claimed_by_other(self, me: str, now: float) -> bool:
        return bool(self.claim and self.claim.get("id") != me and self.claim_until > now)


class RefreshTokenCredentials(OAuth2Credentials):
    """An access token from the refresh token grant, the refresh token kept in the token store."""

    spec: OAuth2RefreshToken

    def __init__(
        self,
        headers: dict[str, str],
        source: Source,
        spec: OAuth2RefreshToken,
        http: httpx.AsyncClient | None,
        redact: Redactor,
        store: Destination,
    ) -> None:
        super().__init__(headers, spec, http, redact, source.timeouts)
        self.source = source
        self.store = store
        self.key = token_key(source, spec)
        self.seal = Seal(spec)
        self._client = (*self._client, source.name, spec.refresh_token)
        self._me = uuid.uuid4().hex
        self._claim_seconds = source.timeouts.connect + source.timeouts.read + CLAIM_SLACK
        self._refused: set[str] = set()  # access tokens the API answered 401 to
        self._revoked: tuple[str, str] | None = None  # (refresh token, message): not sent again

    async def renew(self, sent: Mapping[str, str]) -> bool:
        self._refused.add(sent.get("Authorization", "").removeprefix("Bearer "))
        return await super().renew(sent)

    async def _fetch(self) -> AccessToken:
        """A fresh access token from the store, else one from spending the newest refresh token
        under a claim; a live claim of another process is waited for."""
        configured = self.spec.refresh_token
        for _ in range(CAS_TRIES):
            chain = await self._read()
            refresh, new = chain.to_spend(configured, self.seal)
            if self._revoked and self._revoked[0] == refresh:
                raise TransferError(self._revoked[1])
            access = None if new else chain.access
            if access is not None and access.value not in self._refused and access.fresh(self.spec.expiry_margin_seconds):
                return access
            if chain.claimed_by_other(self._me, time.time()):
                await self._wait_for_change(chain)
                continue
            claim = {"id": self._me, "until": time.time() + self._claim_seconds, "by": f"{socket.gethostname()} pid {os.getpid()}"}
            claimed = await self._write(chain, chain.refresh_token, chain.access, chain.spent, claim)
            if claimed is not None:
                return await self._spend(refresh, chain, claimed)
        raise TransferError(self._contention(), transient=True)

    async def _spend(self, refresh: str, chain: Chain, claimed: str) -> AccessToken:
        """Refresh under our claim (at version `claimed`), then keep what the endpoint answered."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh}
        if self.spec.scope:
            form["scope"] = self.spec.scope
        try:
            answer = await self._token_request(form)
            token = self._access_token(answer)
        except BaseException as exc:
            await self._unclaim(chain, claimed)
            if isinstance(exc, TokenEndpointError) and exc.error == "invalid_grant":
                message = self._revoked_message(exc)
                self._revoked = (refresh, message)
                raise TransferError(message) from None
            raise
        rotated = answer.get("refresh_token")
        rotated = rotated if isinstance(rotated, str) and rotated else refresh  # a vendor that does not rotate
        learn(rotated)
        learn(token.value)
        spent = chain.spent if rotated == refresh else [*chain.spent, self.seal.fingerprint(refresh)][-SPENT_KEPT:]
        await self._keep(claimed, refresh, rotated, token, spent)
        return token

    async def _keep(self, version: str, spent_token: str, rotated: str, token: AccessToken, spent: list[str]) -> None:
        """Write the rotated token over our claim. Lost the claim meanwhile (we were slower than
        it lasts and another took it over)? While the store still holds the token we spent, ours
        is the only live one: write it anyway."""
        chain = Chain(version=version)
        for _ in range(CAS_TRIES):
            if await self._write(chain, rotated, token, spent, None) is not None:
                return
            chain = await self._read()
            if chain.refresh_token not in (None, spent_token, rotated):
                log.warning("source %r: another process stored a newer refresh token chain; this run keeps its access token", self.source.name)
                return
        raise TransferError(
            f"source {self.source.name!r}: could not keep the rotated refresh token in {self.store.url} ({CAS_TRIES} writers got "
            "there first); the next run may find the stored one spent and need a new refresh token"
        )

    async def _unclaim(self, chain: Chain, claimed: str) -> None:
        """Drop our claim (the spend failed): waiters go on at once. A failure to do so only
        makes them wait until the claim runs out."""
        try:
            await self._write(Chain(version=claimed), chain.refresh_token, chain.access, chain.spent, None)
        except Exception as exc:  # noqa: BLE001 - the refresh's own error is the one to report
            log.warning("source %r: could not release the claim on its refresh token: %s", self.source.name, exc)

    async def _wait_for_change(self, chain: Chain) -> None:
        """Poll the store until the claimer writes (or its claim runs out)."""
        by = (chain.claim or {}).get("by", "another process")
        log.info("source %r: %s is refreshing its access token; waiting for it", self.source.name, by)
        delay = 0.02
        while time.time() < chain.claim_until:
            await asyncio.sleep(min(delay, max(0.0, chain.claim_until - time.time())))
            delay = min(delay * 2, 1.0)
            found = await self.store.read_versioned(self.key)
            if (found.version if found else None) != chain.version:
                return

    async def _read(self) -> Chain:
        found = await self.store.read_versioned(self.key)
        if found is None:
            return Chain()
        try:
            doc = json.loads(found.data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return Chain(version=found.version)
        opened = self.seal.open(doc.get("sealed"), self.key) if doc.get("sealed") else None
        spent, claim = doc.get("spent"), doc.get("claim")
        chain = Chain(
            version=found.version,
            spent=[str(s) for s in spent] if isinstance(spent, list) else [],
            claim=claim if isinstance(claim, dict) else None,
        )
        if opened:
            chain.refresh_token = str(opened.get("refresh_token") or "") or None
            access = opened.get("access")
            if isinstance(access, dict) and access.get("value"):
                chain.access = AccessToken(str(access["value"]), float(access.get("issued_at") or 0), float(access.get("lifetime") or 0))
        for secret in (chain.refresh_token, chain.access and chain.access.value):
            if secret:
                learn(secret)
        return chain

    async def _write(self, chain: Chain, refresh: str | None, access: AccessToken | None, spent: list[str], claim: dict[str, Any] | None) -> str | None:
        """Compare-and-swap the chain's object at `chain.version`; its new version, or None."""
        sealed = {
            "refresh_token": refresh,
            "access": {"value": access.value, "issued_at": access.issued_at, "lifetime": access.lifetime} if access else None,
        }
        doc = {
            "source": self.source.name,
            "token_url": self.spec.token_url,
            "client_id": self.spec.client_id,
            "sealed": self.seal.seal(sealed, self.key) if refresh else None,
            "spent": spent,
            "claim": claim,
            "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        return await self.store.put_if(self.key, json.dumps(doc, indent=1).encode(), version=chain.version, private=True)

    def _revoked_message(self, exc: TokenEndpointError) -> str:
        return (
            f"source {self.source.name!r}: the token endpoint refused the refresh token ({exc}): it was revoked, has expired "
            "or was already spent. Authorize apilake with the vendor again and set the new refresh token as the source's "
            "auth.refresh_token (through its ${VAR}); the next run starts from it"
        )

    def _contention(self) -> str:
        return f"source {self.source.name!r}: could not update its refresh token in {self.store.url}: {CAS_TRIES} writers got there first; try again"
