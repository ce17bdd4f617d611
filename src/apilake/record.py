"""Run records: what each run tried, landed, skipped and failed, kept in the destination.

One JSON document per run under `_apilake/runs/<run id>.json`. It is the evidence behind
`apilake status`, and it never holds a secret (every text in it went through the redactor).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
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
) -> dict[str, Any]:
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
        "counts": counts,
        "units": [asdict(r) for r in results],
    }


async def read_records(dest: Destination) -> list[dict[str, Any]]:
    """Every run record in the destination, oldest first; unreadable ones are skipped."""
    records = []
    async for info in dest.list(RECORDS_PREFIX):
        if not info.key.endswith(".json"):
            continue
        try:
            records.append(json.loads(await dest.read(info.key)))
        except (ValueError, OSError):
            continue
    return sorted(records, key=lambda r: r.get("run_id", ""))
