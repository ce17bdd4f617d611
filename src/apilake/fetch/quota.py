"""Daily quotas across runs, processes and hosts: a ledger object per source credential.

Vendors count `requests_per_day` per API key per day, not per run. So every run, every Dask
worker and every job that uses the same credential draws from one ledger object,
`_apilake/quota/<source>-<fingerprint>.json` in the destination (or under `quota_ledger:`),
which counts the requests reserved per quota day (midnight to midnight in `quota_timezone`).

Requests are reserved in small blocks by compare-and-swap (`Destination.put_if`: S3 conditional
writes, a file lock in a local folder), spent locally, and what is left of a block goes back to
the ledger when the run ends. A process killed with `kill -9` cannot give its block back: those
requests stay counted, which errs on the safe side (the key is never over-spent). Jobs whose
store has no conditional writes (`lease: {mode: off}`) count in a folder of their host instead:
per host, not across hosts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import logging
import random
import zoneinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from apilake.destinations import OWN_PREFIX, Destination, host_state_folder, shared_store
from apilake.errors import TransferError
from apilake.jobfile import Job, Source

log = logging.getLogger("apilake")

LEDGER_PREFIX = f"{OWN_PREFIX}quota/"
MAX_BLOCK = 100  # requests reserved at once, at most
DAYS_KEPT = 8  # days of history a ledger keeps (for `apilake status`)
CAS_TRIES = 30  # compare-and-swap attempts before a reservation gives up (heavy contention)
_SALT = b"apilake quota ledger v1"


class DailyQuotaSpent(TransferError):
    """The source's `requests_per_day` is used up; the unit was not (fully) attempted."""

    @classmethod
    def of(cls, source: Source) -> DailyQuotaSpent:
        now = dt.datetime.now(dt.UTC)
        resets = resets_at(source, now)
        hours, minutes = divmod(max(0, int((resets - now).total_seconds())) // 60, 60)
        return cls(
            f"daily request quota of source {source.name!r} ({source.requests_per_day} requests_per_day, counted per "
            f"credential across runs) is spent; it resets at {resets:%Y-%m-%d %H:%M} {source.quota_timezone} "
            f"(in {hours} h {minutes:02d} min)"
        )


def credential_fingerprint(source: Source) -> str:
    """A stable, non-reversible name for the source's credential at its origin.

    Every secret the source sends (token, credential headers, whatever `Source.secrets()`
    knows) and the origin it goes to, through PBKDF2: the ledger's key and content never hold
    the credential, and a short token cannot be found again by hashing guesses cheaply. Same
    credential at the same origin, same fingerprint, on every host.
    """
    parts = urlsplit(source.base_url)
    material = json.dumps([parts.scheme, (parts.hostname or "").lower(), parts.port, sorted(source.secrets())])
    return _derive(material)


@functools.lru_cache(maxsize=64)
def _derive(material: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", material.encode(), _SALT, 50_000).hex()[:20]


def ledger_key(source: Source) -> str:
    return f"{LEDGER_PREFIX}{source.name}-{credential_fingerprint(source)}.json"


def quota_day(source: Source, now: dt.datetime | None = None) -> dt.date:
    """The vendor's quota day now: the date in `quota_timezone`."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(zoneinfo.ZoneInfo(source.quota_timezone)).date()


def resets_at(source: Source, now: dt.datetime | None = None) -> dt.datetime:
    """When the current quota day ends (next midnight in `quota_timezone`)."""
    zone = zoneinfo.ZoneInfo(source.quota_timezone)
    tomorrow = quota_day(source, now) + dt.timedelta(days=1)
    return dt.datetime.combine(tomorrow, dt.time(), tzinfo=zone)


def block_size(per_day: int) -> int:
    """Requests reserved at once: a twentieth of the quota (at most 100), so a handful of runs
    sharing a key each strand little when they end, and a busy run writes the ledger rarely."""
    return max(1, min(MAX_BLOCK, per_day // 20))


def parse_ledger(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("days"), dict):
        return {"days": {}}
    return doc


class DailyQuota:
    """One process's share of a source's daily quota: a reserved block, spent request by request.

    Bound to the event loop that first uses it (one per process; the Dask executor calls it on
    each worker's own loop).
    """

    def __init__(self, store: Destination, source: Source) -> None:
        if source.requests_per_day is None:
            raise ValueError("a DailyQuota needs requests_per_day")
        self.store = store
        self.source = source
        self.per_day = source.requests_per_day
        self.key = ledger_key(source)
        self.block = block_size(self.per_day)
        self.day: dt.date | None = None
        self.held = 0  # reserved for `day`, not yet sent
        self._spent_day: dt.date | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def spent(self) -> bool:
        return self._spent_day == quota_day(self.source)

    async def take(self) -> None:
        """Count one request, reserving a block from the ledger when none is held; raise
        `DailyQuotaSpent` when the ledger has nothing left for today."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            today = quota_day(self.source)
            if self.day != today:
                self.day, self.held = today, 0  # yesterday's leftovers stay counted there
            if self.held == 0:
                if self._spent_day == today:
                    raise DailyQuotaSpent.of(self.source)
                self.held = await self._change(today, self.block)
                if self.held == 0:
                    self._spent_day = today
                    raise DailyQuotaSpent.of(self.source)
            self.held -= 1

    async def give_back(self) -> None:
        """Return what is left of the block (the run is over); errors only warn: unreturned
        requests stay counted, the safe side."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self.held or self.day != quota_day(self.source):
                return
            held, self.held = self.held, 0
            try:
                await self._change(self.day, -held)
            except Exception as exc:  # noqa: BLE001 - the run's outcome does not depend on it
                log.warning("could not return %d unused requests to the quota ledger %s: %s", held, self.key, exc)

    async def _change(self, day: dt.date, wanted: int) -> int:
        """Reserve up to `wanted` requests of `day` (negative: return them) by compare-and-swap;
        returns how many were reserved (or returned)."""
        for attempt in range(CAS_TRIES):
            found = await self.store.read_versioned(self.key)
            doc = parse_ledger(found.data) if found else {"days": {}}
            entry = doc["days"].get(day.isoformat())
            used = int(entry.get("used", 0)) if isinstance(entry, dict) else 0
            change = min(wanted, self.per_day - used) if wanted > 0 else max(wanted, -used)
            if change == 0:
                return 0
            days = {d: v for d, v in sorted(doc["days"].items())[-(DAYS_KEPT - 1) :] if d != day.isoformat()}
            days[day.isoformat()] = {"used": used + change, "limit": self.per_day}
            doc.update(source=self.source.name, timezone=self.source.quota_timezone, days=dict(sorted(days.items())))
            data = json.dumps(doc, indent=1).encode()
            if await self.store.put_if(self.key, data, version=found.version if found else None) is not None:
                return abs(change)
            await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise TransferError(f"could not update the quota ledger {self.key} in {self.store.url}: {CAS_TRIES} writers got there first; try again")


class Quotas:
    """The daily quotas of a job's sources in one process, in their ledger store; `async with`
    gives unused reservations back (and closes a separate `quota_ledger:` store) at the end."""

    def __init__(self, job: Job, dest: Destination) -> None:
        self.job = job
        self.store = ledger_store(job, dest)
        self._own_store = self.store is not dest
        self._quotas: dict[str, DailyQuota] = {}

    def get(self, source: Source) -> DailyQuota | None:
        if source.requests_per_day is None:
            return None
        if source.name not in self._quotas:
            self._quotas[source.name] = DailyQuota(self.store, source)
        return self._quotas[source.name]

    async def __aenter__(self) -> Quotas:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for quota in self._quotas.values():
            await quota.give_back()
        if self._own_store:
            await self.store.close()


def ledger_store(job: Job, dest: Destination) -> Destination:
    """Where the job's quota ledgers live: `quota_ledger:`, else the destination (`shared_store`)."""
    return shared_store(job.quota_ledger, job, dest, host_ledger_folder())


def host_ledger_folder() -> Path:
    """Where this host counts daily quotas for jobs without a lease (a quota counted again from
    zero after a reboot would be over-spent); `$APILAKE_QUOTA_DIR` moves it."""
    return host_state_folder("quota", "APILAKE_QUOTA_DIR")


async def quota_use(store: Destination, sources: list[Source] | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(source, quota day, {used, limit}) of today for every ledger in `store`, or for each of
    `sources` with a daily quota (used 0 before its first request of the day)."""
    wanted: dict[str, Source | None]
    if sources is not None:
        wanted = {ledger_key(s): s for s in sources if s.requests_per_day}
    else:
        wanted = {info.key: None async for info in store.list(LEDGER_PREFIX) if info.key.endswith(".json")}
    found: list[tuple[str, str, dict[str, Any]]] = []
    for key, source in wanted.items():
        versioned = await store.read_versioned(key)
        if versioned is None and source is None:
            continue
        doc = parse_ledger(versioned.data) if versioned else {"days": {}}
        zone = source.quota_timezone if source else str(doc.get("timezone") or "UTC")
        try:
            today = dt.datetime.now(zoneinfo.ZoneInfo(zone)).date().isoformat()
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            continue
        entry = doc["days"].get(today)
        name = source.name if source else str(doc.get("source") or key.rsplit("/", 1)[1])
        unused = {"used": 0, "limit": source.requests_per_day if source else None}
        found.append((name, f"{today} {zone}", entry if isinstance(entry, dict) else unused))
    return found


async def job_quota_use(job: Job | None, dest: Destination) -> list[tuple[str, str, dict[str, Any]]]:
    """`quota_use` of the job's sources in its ledger store (opened and closed here when that is
    not `dest`); without a job, of every ledger in `dest`."""
    if job is None:
        return await quota_use(dest)
    store = ledger_store(job, dest)
    try:
        return await quota_use(store, job.sources)
    finally:
        if store is not dest:
            await store.close()
