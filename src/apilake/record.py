"""Run records: what each run tried, landed, skipped and failed, kept in the destination.

One JSON document per run under `_apilake/runs/<run id>.json`. It is the evidence behind
`apilake status`, and it never holds a secret (every text in it went through the redactor).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from apilake.destinations import RECORDS_PREFIX, Destination

Status = Literal["landed", "listed", "skipped", "failed", "not_attempted", "interrupted"]
DID_NOT_LAND = ("failed", "not_attempted", "interrupted")  # the statuses a summary must name


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

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.objects if self.status == "landed")


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
    await dest.put(record_key(record["run_id"]), json.dumps(record, indent=1, default=str).encode())


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
        "units": [asdict(r) for r in results],
    }


async def read_records(dest: Destination) -> list[dict[str, Any]]:
    """Every run record in the destination, oldest first; unreadable ones are skipped.

    Read 16 at a time: every run reads them all (for the skip check's sizes), and a lake of a
    year of daily runs holds hundreds.
    """
    keys = [info.key async for info in dest.list(RECORDS_PREFIX) if info.key.endswith(".json")]
    slots = asyncio.Semaphore(16)

    async def read(key: str) -> dict[str, Any] | None:
        async with slots:
            try:
                record = json.loads(await dest.read(key))
            except (ValueError, OSError):
                return None
        return record if isinstance(record, dict) else None

    records = [r for r in await asyncio.gather(*(read(k) for k in keys)) if r is not None]
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
