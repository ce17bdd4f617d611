"""Run records: what each run tried, landed, skipped and failed, kept in the destination.

One JSON document per run under `_apilake/runs/<run id>.json`. It is the evidence behind
`apilake status`, and it never holds a secret (every text in it went through the redactor).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

from apilake.destinations import RECORDS_PREFIX, Destination
from apilake.vocabulary import DID_NOT_LAND, RESULT_KINDS, RUN_STATUSES, UNIT_STATUSES, ResultKind, RunStatus, UnitStatus, result_kind

if TYPE_CHECKING:
    from apilake.plan import Unit
    from apilake.traffic import Traffic

__all__ = ["DID_NOT_LAND", "Holder", "LandedObject", "RunRecord", "UnitResult", "parse_record", "read_records", "write_record"]

T = TypeVar("T")
L = TypeVar("L", bound=str)


def _one_of(value: object, allowed: tuple[L, ...], what: str) -> L:
    """`value` as one of a Literal's strings, or ValueError (a record this version cannot read)."""
    for option in allowed:
        if value == option:
            return option
    raise ValueError(f"{what} {value!r} is none of {', '.join(allowed)}")


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _when(text: object) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if isinstance(text, str) and text else None
    except ValueError:
        return None


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

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> LandedObject:
        status = entry.get("http_status")
        return cls(
            str(entry["key"]),
            int(entry.get("bytes") or 0),
            _text(entry.get("sha256")),
            None if status is None else int(status),
            int(entry.get("attempts") or 0),
            float(entry.get("seconds") or 0.0),
            _text(entry.get("checksum")),
        )


@dataclass(slots=True)
class UnitResult:
    """The outcome of one unit: a JSON unit, a bulk listing, or one file of a listing; also a
    run record's entry, as read back (`parse`)."""

    unit: str
    source: str
    endpoint: str
    date: str
    kind: ResultKind
    status: UnitStatus
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

    @classmethod
    def for_unit(
        cls,
        unit: Unit,
        status: UnitStatus,
        *,
        unit_id: str | None = None,
        kind: ResultKind | None = None,
        url: str = "",
        error: str | None = None,
        attempts: int = 0,
        seconds: float = 0.0,
        listing: dict[str, Any] | None = None,
    ) -> UnitResult:
        """The result of planned `unit` (or, with `unit_id` and `kind`, of one file of its listing)."""
        return cls(
            unit_id or unit.id,
            unit.source,
            unit.endpoint,
            unit.date,
            kind or result_kind(unit.kind),
            status,
            url=url,
            error=error,
            attempts=attempts,
            seconds=seconds,
            listing=listing,
        )

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> UnitResult:
        """A run record's unit entry; ValueError, KeyError or TypeError when it is not one."""
        listing, http = entry.get("listing"), entry.get("http") or {}
        return cls(
            str(entry["unit"]),
            str(entry["source"]),
            str(entry["endpoint"]),
            str(entry["date"]),
            _one_of(entry.get("kind"), RESULT_KINDS, "kind"),
            _one_of(entry.get("status"), UNIT_STATUSES, "status"),
            url=str(entry.get("url") or ""),
            objects=[LandedObject.parse(o) for o in entry.get("objects") or []],
            error=_text(entry.get("error")),
            attempts=int(entry.get("attempts") or 0),
            seconds=float(entry.get("seconds") or 0.0),
            listing=dict(listing) if isinstance(listing, dict) else None,
            started=_text(entry.get("started")),
            finished=_text(entry.get("finished")),
            http={str(code): int(n) for code, n in dict(http).items()},
            requests=int(entry.get("requests") or 0),
        )

    @property
    def bytes(self) -> int:
        """Bytes this result landed (nothing for a skipped or failed unit)."""
        return sum(o.bytes for o in self.objects if self.status == "landed")

    @property
    def retries(self) -> int:
        """Attempts beyond the first, per request (a JSON unit's pages each have their own)."""
        if self.objects:
            return sum(max(o.attempts - 1, 0) for o in self.objects)
        return max(self.attempts - 1, 0)

    def stamp(self, traffic: Traffic) -> None:
        """Put what the unit's requests met (`traffic.observe`) on this result, and its times."""
        self.started = traffic.started.isoformat()
        self.finished = dt.datetime.now(dt.UTC).isoformat()
        self.http = dict(sorted(traffic.http.items()))
        self.requests = traffic.requests

    def entry(self) -> dict[str, Any]:
        """This result as its run record's entry: what `dataclasses.asdict` gives, without its
        deep copy of every value (a fifth of a small file's CPU when it ran per unit)."""
        entry = {name: getattr(self, name) for name in _RESULT_FIELDS}
        entry["objects"] = [{name: getattr(o, name) for name in _OBJECT_FIELDS} for o in self.objects]
        return entry


_RESULT_FIELDS = tuple(f.name for f in fields(UnitResult))
_OBJECT_FIELDS = tuple(f.name for f in fields(LandedObject))


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a run: lets `apilake status` tell a live run from an abandoned one."""

    host: str
    pid: int | None
    lock: str | None  # the OS lock file on `host`
    lease: str | None  # the lease key in the destination, when the run holds one

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> Holder:
        pid = entry.get("pid")
        return cls(str(entry.get("host") or ""), pid if isinstance(pid, int) else None, _text(entry.get("lock")), _text(entry.get("lease")))


@dataclass(slots=True)
class RunRecord:
    """One run's record, as the run writes it (`document`) and every reader reads it (`parse_record`)."""

    run_id: str
    job: str
    destination: str
    dates: list[str]
    started: dt.datetime | None
    finished: dt.datetime | None
    status: RunStatus
    units: list[UnitResult] = field(default_factory=list)
    version: str = ""  # of apilake that wrote it
    holder: Holder | None = None
    tables: dict[str, Any] | None = None  # the run's table stage (`tables.TablesReport.entry`)

    @property
    def counts(self) -> dict[str, int]:
        """Units by status."""
        counts: dict[str, int] = {}
        for unit in self.units:
            counts[unit.status] = counts.get(unit.status, 0) + 1
        return counts

    @property
    def span(self) -> str:
        """The run dates, as `first..last`."""
        return "-" if not self.dates else self.dates[0] if len(self.dates) == 1 else f"{self.dates[0]}..{self.dates[-1]}"

    @property
    def endpoints(self) -> set[str]:
        """`source/endpoint` of every unit the run recorded."""
        return {f"{u.source}/{u.endpoint}" for u in self.units}

    def failures(self) -> list[UnitResult]:
        """The units (and files) that did not land."""
        return [u for u in self.units if u.status in DID_NOT_LAND]

    def with_status(self, status: RunStatus) -> RunRecord:
        """A copy with another status (`running` told apart from `abandoned`); the units are shared."""
        return dataclasses.replace(self, status=status)

    def document(self) -> dict[str, Any]:
        """The JSON document of the record; `holder` (host, pid, lock file, lease key) lets
        `apilake status` tell a live run from an abandoned one."""
        doc: dict[str, Any] = {
            "run_id": self.run_id,
            "apilake": self.version,
            "job": self.job,
            "destination": self.destination,
            "dates": self.dates,
            "started": self.started.isoformat() if self.started else None,
            "finished": self.finished.isoformat() if self.finished else None,
            "status": self.status,
            "holder": dataclasses.asdict(self.holder) if self.holder else None,
            "counts": self.counts,
            "units": [r.entry() for r in self.units],
        }
        if self.tables is not None:
            doc["tables"] = self.tables
        return doc


def parse_record(doc: object) -> RunRecord:
    """A run record's JSON document (`json.loads` of it); ValueError when it is not one."""
    if not isinstance(doc, dict):
        raise ValueError("a run record is a JSON object")
    try:
        holder, tables = doc.get("holder"), doc.get("tables")
        return RunRecord(
            run_id=str(doc["run_id"]),
            job=str(doc.get("job") or ""),
            destination=str(doc.get("destination") or ""),
            dates=[str(d) for d in doc.get("dates") or []],
            started=_when(doc.get("started")),
            finished=_when(doc.get("finished")),
            status=_one_of(doc.get("status"), RUN_STATUSES, "status"),
            units=[UnitResult.parse(u) for u in doc.get("units") or []],
            version=str(doc.get("apilake") or ""),
            holder=Holder.parse(holder) if isinstance(holder, dict) else None,
            tables=tables if isinstance(tables, dict) else None,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a run record ({type(exc).__name__}: {exc})") from None


def new_run_id(now: dt.datetime) -> str:
    """Sortable by time (to the microsecond), unique across hosts: 20261126T134000.123456Z-3f9a1c."""
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(3)


def record_key(run_id: str) -> str:
    return f"{RECORDS_PREFIX}{run_id}.json"


def run_status(results: list[UnitResult], interrupted: bool) -> RunStatus:
    if interrupted:
        return "interrupted"
    if any(r.status in ("failed", "not_attempted") for r in results):
        return "failed"
    return "succeeded"


async def write_record(dest: Destination, record: RunRecord) -> None:
    # One line per unit, each through the C encoder (`indent=` would take the pure-Python one: 10×
    # slower, most of a run record's cost); `jq` shows it indented.
    doc = record.document()
    head = json.dumps({k: v for k, v in doc.items() if k != "units"}, default=str)
    units = "".join(f"\n{json.dumps(unit, default=str)}," for unit in doc["units"]).removesuffix(",")
    text = f'{head[:-1]}, "units": [{units}\n]}}\n'
    await dest.put(record_key(record.run_id), text.encode())


RecordCache = dict[tuple[str, int], RunRecord]  # (key, size) → a finished record, which never changes


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


def load_records(url: str, s3: Any = None, cache: RecordCache | None = None) -> list[RunRecord]:
    """`read_records` of the destination at `url`, for synchronous callers."""
    return on_destination(url, s3, lambda dest: read_records(dest, cache))


def load_record(url: str, s3: Any, run_id: str) -> RunRecord | None:
    """One run's record, or None when there is no such (readable) record."""

    async def read(dest: Destination) -> RunRecord | None:
        try:
            return parse_record(json.loads(await dest.read(record_key(run_id))))
        except (OSError, ValueError, KeyError):
            return None

    return on_destination(url, s3, read)


async def read_records(dest: Destination, cache: RecordCache | None = None) -> list[RunRecord]:
    """Every run record in the destination, oldest first; unreadable ones are skipped.

    Read 16 at a time: every run reads them all (for the skip check's sizes), and a lake of a
    year of daily runs holds hundreds. With a `cache` (kept by a long-running reader: the
    dashboard, the scheduler), finished records are read once; the records returned are shared
    with it and must not be changed.
    """
    infos = [info async for info in dest.list(RECORDS_PREFIX) if info.key.endswith(".json")]
    slots = asyncio.Semaphore(16)

    async def read(key: str, size: int) -> RunRecord | None:
        if cache is not None and (known := cache.get((key, size))) is not None:
            return known
        async with slots:
            try:
                record = parse_record(json.loads(await dest.read(key)))
            except (ValueError, OSError):
                return None
        if cache is not None and record.finished:
            cache[key, size] = record
        return record

    records = [r for r in await asyncio.gather(*(read(i.key, i.size) for i in infos)) if r is not None]
    return sorted(records, key=lambda r: r.run_id)


def landed_sizes(records: list[RunRecord], units: Collection[str] | None = None) -> dict[str, int]:
    """Bytes of each key as last landed, by the run records (oldest first: later runs win); with
    `units`, only keys those unit ids (and the files of those listings) landed.

    An object of another size under the key was changed after it landed (or the store altered
    it): the skip check and `apilake status` treat it as not landed.
    """
    sizes: dict[str, int] = {}
    for record in records:
        for unit in record.units:
            if units is not None and not _owned(unit.unit, units):
                continue
            if unit.status == "landed":
                for obj in unit.objects:
                    sizes[obj.key] = obj.bytes
    return sizes


def _owned(unit_id: str, units: Collection[str]) -> bool:
    """Whether a recorded unit is one of `units` or a file of one of their listings (`<listing id>/<path>`)."""
    parts = unit_id.split("/")
    return any("/".join(parts[:i]) in units for i in range(3, len(parts) + 1))
