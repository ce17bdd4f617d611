"""Run records: what each run tried, landed, skipped and failed, kept in the destination.

One JSON document per run under `_apilake/runs/<run id>.json`. It is the evidence behind
`apilake status`, and it never holds a secret (every text in it went through the redactor).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import secrets
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import Any, Literal, ParamSpec, TypeVar

from apilake.destinations import RECORDS_PREFIX, Destination

Status = Literal["landed", "listed", "skipped", "ignored", "failed", "not_attempted", "interrupted"]  # ignored: done, by an on_response rule
DID_NOT_LAND = ("failed", "not_attempted", "interrupted")  # the statuses a summary must name
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


@dataclass(slots=True)
class LandedObject:
    """One object in a run record. `checksum` is `algorithm:hex` (`crc32c:…`, `sha256:…`);
    records written before it existed have only `sha256`, which stays filled for sha256."""

    key: str
    bytes: int
    sha256: str | None
    http_status: int | None = None
    attempts: int = 0
    seconds: float = 0.0
    checksum: str | None = None

    def __post_init__(self) -> None:
        if self.checksum is None and self.sha256 is not None:
            self.checksum = f"sha256:{self.sha256}"


@dataclass(slots=True)
class UnitResult:
    """The outcome of one unit: a JSON unit, a bulk listing, or one file of a listing."""

    unit: str
    source: str
    endpoint: str
    date: str
    kind: Literal["json", "listing", "file"]
    status: Status
    url: str = ""
    objects: list[LandedObject] = field(default_factory=list)
    error: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    listing: dict[str, Any] | None = None
    started: str | None = None  # UTC wall clock (ISO 8601) when the unit's work began and ended:
    finished: str | None = None  # an endpoint's wall time is its first start to its last end
    http: dict[str, int] = field(default_factory=dict)  # responses by HTTP status, every attempt and redirect
    requests: int = 0  # requests to the source's own origin: what its quota counts

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.objects if self.status == "landed")

    def entry(self) -> dict[str, Any]:
        """This result as its run record's entry: what `dataclasses.asdict` gives, without its
        deep copy of every value (a fifth of a small file's CPU when it ran per unit)."""
        entry = {name: getattr(self, name) for name in _RESULT_FIELDS}
        entry["objects"] = [{name: getattr(o, name) for name in _OBJECT_FIELDS} for o in self.objects]
        return entry


_RESULT_FIELDS = tuple(f.name for f in fields(UnitResult))
_OBJECT_FIELDS = tuple(f.name for f in fields(LandedObject))


@dataclass(slots=True)
class Traffic:
    """What one unit's requests met, counted where they are sent (see `observe`)."""

    started: dt.datetime
    requests: int = 0
    http: dict[str, int] = field(default_factory=dict)

    def stamp(self, result: UnitResult) -> UnitResult:
        result.started = self.started.isoformat()
        result.finished = dt.datetime.now(dt.timezone.utc).isoformat()
        result.http = dict(sorted(self.http.items()))
        result.requests = self.requests
        return result


_traffic: ContextVar[Traffic | None] = ContextVar("apilake_traffic", default=None)


@contextmanager
def observe() -> Iterator[Traffic]:
    """Count the requests and HTTP statuses of the unit run inside this block (one asyncio task)."""
    traffic = Traffic(dt.datetime.now(dt.timezone.utc))
    token = _traffic.set(traffic)
    try:
        yield traffic
    finally:
        _traffic.reset(token)


def observed(work: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run a unit's work (returning its `UnitResult`, or that and the files it lists) under `observe`, and stamp the result."""

    @functools.wraps(work)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with observe() as traffic:
            outcome = await work(*args, **kwargs)
        traffic.stamp(outcome[0] if isinstance(outcome, tuple) else outcome)  # type: ignore[arg-type]
        return outcome

    return run


def count_request() -> None:
    """One request to a source's own origin (counted against its quota)."""
    if (traffic := _traffic.get()) is not None:
        traffic.requests += 1


def count_response(status: int) -> None:
    if (traffic := _traffic.get()) is not None:
        traffic.http[str(status)] = traffic.http.get(str(status), 0) + 1


def new_run_id(now: dt.datetime) -> str:
    """Sortable by time (to the microsecond), unique across hosts: 20261126T134000.123456Z-3f9a1c."""
    return now.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(3)


def record_key(run_id: str) -> str:
    return f"{RECORDS_PREFIX}{run_id}.json"


def run_status(results: list[UnitResult], interrupted: bool) -> str:
    if interrupted:
        return "interrupted"
    if any(r.status in ("failed", "not_attempted") for r in results):
        return "failed"
    return "succeeded"


async def write_record(dest: Destination, record: dict[str, Any]) -> None:
    # One line per unit, each through the C encoder (`indent=` would take the pure-Python one: 10×
    # slower, most of a run record's cost); `jq` shows it indented.
    head = json.dumps({k: v for k, v in record.items() if k != "units"}, default=str)
    units = "".join(f"\n{json.dumps(unit, default=str)}," for unit in record["units"]).removesuffix(",")
    text = f'{head[:-1]}, "units": [{units}\n]}}\n'
    await dest.put(record_key(record["run_id"]), text.encode())


def record_document(
    *,
    run_id: str,
    job: str,
    destination: str,
    dates: list[str],
    started: dt.datetime,
    finished: dt.datetime | None,
    status: str,
    results: list[UnitResult],
    version: str,
    holder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record; `holder` (host, pid, lock file, lease key) lets `apilake status` tell a live
    run from an abandoned one."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return {
        "run_id": run_id,
        "apilake": version,
        "job": job,
        "destination": destination,
        "dates": dates,
        "started": started.isoformat(),
        "finished": finished.isoformat() if finished else None,
        "status": status,
        "holder": holder,
        "counts": counts,
        "units": [r.entry() for r in results],
    }


def entry_bytes(entry: dict[str, Any]) -> int:
    """Bytes a record's unit entry landed (nothing for a skipped or failed unit)."""
    return sum(o.get("bytes", 0) for o in entry.get("objects") or []) if entry.get("status") == "landed" else 0


def entry_retries(entry: dict[str, Any]) -> int:
    """Attempts beyond the first, per request (a JSON unit's pages each have their own)."""
    objects = entry.get("objects") or []
    if objects:
        return sum(max(o.get("attempts", 0) - 1, 0) for o in objects)
    return max(entry.get("attempts", 0) - 1, 0)


RecordCache = dict[tuple[str, int], dict[str, Any]]  # (key, size) → a finished record, which never changes


def on_destination(url: str, s3: Any, work: Callable[[Destination], Awaitable[T]]) -> T:
    """`work` on the destination at `url`, opened and closed here: for synchronous readers."""
    from apilake.destinations import open_destination

    async def go() -> T:
        dest = open_destination(url, s3)
        try:
            return await work(dest)
        finally:
            await dest.close()

    return asyncio.run(go())


def load_records(url: str, s3: Any = None, cache: RecordCache | None = None) -> list[dict[str, Any]]:
    """`read_records` of the destination at `url`, for synchronous callers."""
    return on_destination(url, s3, lambda dest: read_records(dest, cache))


def load_record(url: str, s3: Any, run_id: str) -> dict[str, Any] | None:
    """One run's record, or None when there is no such (readable) record."""

    async def read(dest: Destination) -> dict[str, Any] | None:
        try:
            record = json.loads(await dest.read(record_key(run_id)))
        except (OSError, ValueError, KeyError):
            return None
        return record if isinstance(record, dict) else None

    return on_destination(url, s3, read)


async def read_records(dest: Destination, cache: RecordCache | None = None) -> list[dict[str, Any]]:
    """Every run record in the destination, oldest first; unreadable ones are skipped.

    Read 16 at a time: every run reads them all (for the skip check's sizes), and a lake of a
    year of daily runs holds hundreds. With a `cache` (kept by a long-running reader: the
    dashboard, the scheduler), finished records are read once; the dicts returned are shared
    with it and must not be changed.
    """
    infos = [info async for info in dest.list(RECORDS_PREFIX) if info.key.endswith(".json")]
    slots = asyncio.Semaphore(16)

    async def read(key: str, size: int) -> dict[str, Any] | None:
        if cache is not None and (known := cache.get((key, size))) is not None:
            return known
        async with slots:
            try:
                record = json.loads(await dest.read(key))
            except (ValueError, OSError):
                return None
        if not isinstance(record, dict):
            return None
        if cache is not None and record.get("finished"):
            cache[key, size] = record
        return record

    records = [r for r in await asyncio.gather(*(read(i.key, i.size) for i in infos)) if r is not None]
    return sorted(records, key=lambda r: r.get("run_id", ""))


def landed_sizes(records: list[dict[str, Any]], units: Collection[str] | None = None) -> dict[str, int]:
    """Bytes of each key as last landed, by the run records (oldest first: later runs win); with
    `units`, only keys those unit ids (and the files of those listings) landed.

    An object of another size under the key was changed after it landed (or the store altered
    it): the skip check and `apilake status` treat it as not landed.
    """
    sizes: dict[str, int] = {}
    for record in records:
        for unit in record.get("units") or []:
            if units is not None and not _owned(str(unit.get("unit", "")), units):
                continue
            if unit.get("status") == "landed":
                for obj in unit.get("objects") or []:
                    if isinstance(obj, dict) and isinstance(obj.get("bytes"), int):
                        sizes[obj["key"]] = obj["bytes"]
    return sizes


def _owned(unit_id: str, units: Collection[str]) -> bool:
    """Whether a recorded unit is one of `units` or a file of one of their listings (`<listing id>/<path>`)."""
    parts = unit_id.split("/")
    return any("/".join(parts[:i]) in units for i in range(3, len(parts) + 1))
