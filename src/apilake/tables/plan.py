"""Which table partitions to build, from which raw objects. Pure: no catalog, no files, no clock.

The run records say what landed: per unit id, the objects of its latest landing (a JSON unit's
pages, or one bulk/report/raw file). Each object belongs to one table (the endpoint's, or the
one its `table.name` template renders to) and one date (the unit's `{date}`): a partition is a
(table, date) and every raw object that lands in it. Its fingerprint (keys, sizes, checksums and
how they are read) tells a partition whose raw objects did not change: it is not rebuilt.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from apilake.jobfile import Endpoint, EndpointTable, Job, PagingStyle, Source
from apilake.keys import file_values
from apilake.record import RunRecord, UnitResult
from apilake.templates import Value, render

#: Changes whenever the same raw objects would give other rows: every partition is then rebuilt.
FORMAT_VERSION = "1"

Format = Literal["json", "ndjson", "csv", "unknown"]  # unknown: the object fails its date (`convert.record_batches`)
_CSV = re.compile(r"\.(csv|tsv)(\.gz)?$", re.IGNORECASE)
_JSON = re.compile(r"\.(json|geojson)(\.gz)?$", re.IGNORECASE)
_NDJSON = re.compile(r"\.(ndjson|jsonl)(\.gz)?$", re.IGNORECASE)
_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class RawObject:
    """One raw object of a partition, with the unit's own values that become its columns."""

    key: str
    bytes: int
    checksum: str
    run_id: str  # the run that first landed these bytes under this key
    values: tuple[tuple[str, str], ...]  # the unit's matrix and for_each values, by name
    format: Format
    records: str | None  # JSON: where a page's rows are (JMESPath); None: the body itself
    primary_key: tuple[str, ...] = ()  # the table's `table.primary_key`: it keeps one row per key (`tables.upsert`)
    cursor: str | None = None  # a primary-keyed incremental endpoint's `cursor_path`: what orders versions of one date
    unit: str = ""  # the unit that landed it, and its page's position there: what orders versions of one cursor value
    page: int = 0

    @property
    def reading(self) -> list[Any]:
        """What the rows of the object depend on (the fingerprint's part of it)."""
        found: list[Any] = [self.key, self.bytes, self.checksum, self.values, self.format, self.records]
        return [*found, self.primary_key, self.cursor, self.unit, self.page] if self.primary_key else found


@dataclass(frozen=True, slots=True)
class Partition:
    namespace: str
    table: str
    date: str
    objects: tuple[RawObject, ...]

    @property
    def identifier(self) -> str:
        return f"{self.namespace}.{self.table}"

    @property
    def primary_key(self) -> tuple[str, ...]:
        return next((o.primary_key for o in self.objects if o.primary_key), ())

    @property
    def fingerprint(self) -> str:
        """Equal for two builds that would write the same rows: what an unchanged date is."""
        parts = [FORMAT_VERSION, *sorted(json.dumps(o.reading) for o in self.objects)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


@dataclass(slots=True)
class _Landing:
    run_id: str
    entry: UnitResult
    first_run: dict[str, str] = field(default_factory=dict)  # key → the run that first landed its current bytes


def table_name(source: Source, endpoint: Endpoint, values: dict[str, Value]) -> str:
    """The endpoint's table for one raw object: its `table.name` rendered, as an identifier
    (`bulk_{file_kind}_{dimension}` → `bulk_metrics` or `bulk_dimensions_product_id`)."""
    template = endpoint.table.name if isinstance(endpoint.table, EndpointTable) and endpoint.table.name else endpoint.name
    rendered = render(template, {"source": source.name, "endpoint": endpoint.name, **values})
    name = _NOT_A_NAME.sub("_", rendered).strip("_")
    return re.sub("__+", "_", name) or endpoint.name.replace("-", "_")


def namespace(job: Job, source: Source) -> str:
    return job.tables.namespace if job.tables and job.tables.namespace else source.name


def records_path(endpoint: Endpoint) -> str | None:
    """`table.records`, else the paginator's `records_path`, else None (the body decides)."""
    if isinstance(endpoint.table, EndpointTable) and endpoint.table.records:
        return endpoint.table.records
    return endpoint.paginate.records_path if isinstance(endpoint.paginate, PagingStyle) else None


def object_format(endpoint: Endpoint, key: str) -> Format:
    """How to read a raw object: `table.format`, the `format` of a JSON endpoint, else its
    extension; `unknown` for a file of another kind (a vendor's listing may hold one among its CSVs)."""
    if isinstance(endpoint.table, EndpointTable) and endpoint.table.format:
        return endpoint.table.format
    if endpoint.kind == "json":
        return endpoint.format
    if _NDJSON.search(key):
        return "ndjson"
    if _JSON.search(key):
        return "json"
    if _CSV.search(key):
        return "csv"
    return "unknown"


def unit_values(endpoint: Endpoint, combo: str) -> dict[str, str]:
    """The matrix and for_each values of a unit, from its id's last part (`market=ios,product_id=1`).

    Axis names are known and in order, so a value may hold `=` or `,`; only `,<next axis>=` ends it.
    """
    axes = ([endpoint.for_each.as_] if endpoint.for_each else []) + list(endpoint.matrix)
    values: dict[str, str] = {}
    rest = combo
    for i, axis in enumerate(axes):
        if not rest.startswith(f"{axis}="):
            return values
        rest = rest[len(axis) + 1 :]
        cut = rest.find(f",{axes[i + 1]}=") if i + 1 < len(axes) else -1
        values[axis], rest = (rest, "") if cut < 0 else (rest[:cut], rest[cut + 1 :])
    return values


def latest_landings(records: Iterable[RunRecord]) -> dict[str, _Landing]:
    """Per unit id, the entry of its latest landing (records oldest first, as `read_records` gives)."""
    found: dict[str, _Landing] = {}
    for record in records:
        for entry in record.units:
            if entry.status != "landed" or entry.kind not in ("json", "file") or not entry.objects:
                continue
            before = found.get(entry.unit)
            first_run = {}
            for obj in entry.objects:
                earlier = before and next((o for o in before.entry.objects if o.key == obj.key), None)
                same = earlier and earlier.checksum == obj.checksum and earlier.bytes == obj.bytes
                first_run[obj.key] = before.first_run[obj.key] if same and before else record.run_id
            found[entry.unit] = _Landing(record.run_id, entry, first_run)
    return found


def plan_partitions(
    job: Job,
    records: Iterable[RunRecord],
    *,
    dates: Collection[str] | None = None,
    selected: Callable[[str, str, str], bool] = lambda source, endpoint, date: True,
) -> list[Partition]:
    """Every partition of `dates` (all without) fed by at least one selected (source, endpoint,
    date), each with all its raw objects, whichever endpoint landed them; in a stable order."""
    endpoints = {(s.name, e.name): (s, e) for s in job.sources for e in s.endpoints if e.table is not False}
    objects: dict[tuple[str, str, str], list[RawObject]] = {}
    chosen: set[tuple[str, str, str]] = set()
    for unit_id, landing in latest_landings(records).items():
        entry = landing.entry
        found = endpoints.get((entry.source, entry.endpoint))
        date = entry.date
        if found is None or (dates is not None and date not in dates):
            continue
        source, endpoint = found
        head = f"{source.name}/{endpoint.name}/{date}"
        file: dict[str, str] = {}
        tail = unit_id[len(head) + 1 :] if unit_id.startswith(head + "/") else ""
        if entry.kind == "file" and endpoint.kind in ("bulk", "report"):
            file = file_values(entry.url, dt.date.fromisoformat(date))
            tail = tail.removesuffix(file["url_path"]).removesuffix("/")
        values = unit_values(endpoint, tail)
        where = (namespace(job, source), table_name(source, endpoint, {**file, **values}), date)
        key = tuple(endpoint.table.primary_key or ()) if isinstance(endpoint.table, EndpointTable) else ()
        cursor = endpoint.incremental.cursor_path if key and endpoint.incremental else None
        for page, obj in enumerate(entry.objects):
            fmt = object_format(endpoint, obj.key)
            objects.setdefault(where, []).append(
                RawObject(
                    obj.key,
                    obj.bytes,
                    obj.checksum or "",
                    landing.first_run[obj.key],
                    tuple(values.items()),
                    fmt,
                    records_path(endpoint) if fmt == "json" else None,
                    key,
                    cursor,
                    unit_id if key else "",
                    page if key else 0,
                )
            )
        if selected(source.name, endpoint.name, date):
            chosen.add(where)
    return [Partition(ns, table, date, tuple(sorted(objects[ns, table, date], key=lambda o: o.key))) for ns, table, date in sorted(chosen)]
