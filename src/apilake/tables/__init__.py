"""The curated zone: the raw zone's objects as Iceberg tables, one partition per date, exactly once.

`build_tables` plans the partitions from the run records (`plan`), reads raw objects as Arrow
batches (`convert`), fits them to each table's schema (`schema`) and writes and commits them,
one commit per table (`refresh`), in the job's catalog (`catalog`). `table_status` says what is
behind the raw zone, `query` runs DuckDB SQL over the tables.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from apilake.errors import ApilakeError, DestinationError, ExitCode, JobFileError, TableError
from apilake.jobfile import Job
from apilake.redact import Redactor
from apilake.sizes import human_bytes
from apilake.summary import table

if TYPE_CHECKING:
    from apilake.record import RunRecord, UnitResult

log = logging.getLogger("apilake")

__all__ = ["TableStatus", "TablesReport", "build_tables", "refresh_landed", "table_status"]


@dataclass
class TableResult:
    identifier: str
    built: list[str] = field(default_factory=list)  # dates rebuilt in this refresh's commit
    unchanged: list[str] = field(default_factory=list)  # dates whose raw objects had not changed
    failed: dict[str, str] = field(default_factory=dict)  # date → why it was left as it was
    rows: int = 0
    files: int = 0
    bytes: int = 0  # Parquet bytes written
    snapshot: int | None = None  # the snapshot committed, if any


@dataclass
class TablesReport:
    tables: list[TableResult] = field(default_factory=list)  # one per table
    errors: dict[str, str] = field(default_factory=dict)  # table → why it could not be built at all
    error: str | None = None  # why no table was refreshed (the catalog or the records unreadable)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.error or self.errors or any(t.failed for t in self.tables) else ExitCode.OK

    def entry(self, redact: Callable[[str], str]) -> dict[str, Any]:
        """The `tables` section of a run record: per table what was rebuilt, left alone or failed."""
        rows = [
            {
                "table": t.identifier,
                "built": t.built,
                "unchanged": t.unchanged,
                "failed": {d: redact(w) for d, w in t.failed.items()},
                "rows": t.rows,
                "files": t.files,
                "bytes": t.bytes,
                "snapshot": t.snapshot,
            }
            for t in self.tables
        ]
        entry: dict[str, Any] = {
            "status": "failed" if self.exit_code else "succeeded",
            "tables": rows,
            "errors": {name: redact(why) for name, why in self.errors.items()},
        }
        if self.error:
            entry["error"] = redact(self.error)
        return entry

    def summary(self) -> str:
        rows = [["table", "dates built", "unchanged", "failed", "rows", "files", "bytes"]]
        for t in self.tables:
            rows.append([t.identifier, str(len(t.built)), str(len(t.unchanged)), str(len(t.failed)), f"{t.rows:,}", str(t.files), human_bytes(t.bytes)])
        if self.error:
            return f"tables not refreshed: {self.error}"
        lines = [table(rows)] if len(rows) > 1 else ["no table to build: nothing with a table has landed for these dates"]
        for t in self.tables:
            lines += [f"  {t.identifier} {date}: {why}" for date, why in sorted(t.failed.items())]
        lines += [f"  {name}: {why}" for name, why in sorted(self.errors.items())]
        return "\n".join(lines)


def selection(job: Job, only: Collection[str]) -> Callable[[str, str, str], bool]:
    """`--only NAME` (an endpoint or a source, repeatable) as a filter of (source, endpoint, date)."""
    names = set(only)
    known = {e.name for s in job.sources for e in s.endpoints} | {s.name for s in job.sources}
    if unknown := sorted(names - known):
        raise JobFileError(f"--only {unknown[0]}: no endpoint or source of that name (known: {', '.join(sorted(known))})")
    return lambda source, endpoint, date: not names or source in names or endpoint in names


def build_tables(
    job: Job,
    destination: str,
    *,
    dates: Collection[str] | None = None,
    selected: Callable[[str, str, str], bool] = lambda s, e, d: True,
    force: bool = False,
    on_partition: Callable[[Any], None] = lambda p: None,
    on_plan: Callable[[int], None] = lambda n: None,
    stopped: Callable[[], str | None] = lambda: None,
    writer: Any = None,
) -> TablesReport:
    """Build or refresh the tables of the selected endpoints and dates from what is in the lake;
    `stopped` says why to build no further table (the job's lease was lost); `writer` writes
    partitions' data files elsewhere (`refresh.Writer`: a Dask cluster's workers)."""
    from apilake.record import load_records, on_destination
    from apilake.tables.plan import plan_partitions

    records = load_records(destination, job.s3)
    partitions = plan_partitions(job, records, dates=dates, selected=selected)
    on_plan(len(partitions))
    report = TablesReport()
    by_table: dict[str, list[Any]] = {}
    for partition in partitions:
        by_table.setdefault(partition.identifier, []).append(partition)
    for identifier in [] if force else known_unchanged(job, destination, by_table):
        report.tables.append(TableResult(identifier, unchanged=sorted(p.date for p in by_table.pop(identifier))))
    if not by_table:
        return report
    from apilake.tables.catalog import open_catalog
    from apilake.tables.refresh import FINGERPRINT, refresh_table
    from apilake.tables.state import state_key, state_of

    catalog = open_catalog(job, destination)
    redact = Redactor(job.secrets())
    opener = raw_opener(job.s3, destination)
    target = job.tables.target_file_mb << 20 if job.tables else 128 << 20
    for identifier, mine in by_table.items():

        def every_date(identifier: str = identifier) -> list[Any]:
            return [p for p in plan_partitions(job, records) if p.identifier == identifier]

        if why := stopped():
            report.errors[identifier] = f"not built: {why}"
            continue

        def forget(identifier: str = identifier) -> None:
            on_destination(destination, job.s3, lambda dest: dest.delete(state_key(identifier)))

        def remember(table: Any, identifier: str = identifier) -> None:
            try:
                on_destination(destination, job.s3, lambda dest: dest.put(state_key(identifier), state_of(table, FINGERPRINT)))
            except (OSError, DestinationError) as exc:  # a cache: the next refresh consults the catalog
                log.warning("table %s: its state for quick no-op refreshes was not written: %s", identifier, exc)

        try:
            report.tables.append(
                refresh_table(
                    catalog,
                    identifier,
                    mine,
                    opener,
                    force=force,
                    every_date=every_date,
                    target_bytes=target,
                    on_partition=on_partition,
                    forget=forget,
                    remember=remember,
                    writer=writer,
                )
            )
        except (TableError, OSError, DestinationError) as exc:
            report.errors[identifier] = redact(str(exc))
        except Exception as exc:  # a catalog's or a driver's own error (pyiceberg, SQLAlchemy, botocore): this table fails, the others go on
            log.debug("table %s", identifier, exc_info=True)
            report.errors[identifier] = redact(f"{type(exc).__name__}: {exc}")
    return report


def known_unchanged(job: Job, destination: str, by_table: dict[str, list[Any]]) -> list[str]:
    """The tables whose every planned date the lake's table state says is built from these very
    raw objects (`tables.state`): no catalog, no pyiceberg for them."""
    from apilake.tables.state import unchanged

    states = current_states(job, destination, by_table)
    return [identifier for identifier, mine in by_table.items() if unchanged({p.date: p.fingerprint for p in mine}, states.get(identifier))]


def current_states(job: Job, destination: str, identifiers: Collection[str]) -> dict[str, dict[str, Any]]:
    """The lake's states of these tables that describe their catalog's current commit: with the
    default SQLite catalog, those whose metadata location is the catalog's current one (read
    without pyiceberg); with a shared catalog, which is not read here, every readable state."""
    from apilake.record import on_destination
    from apilake.tables.catalog import catalog_properties
    from apilake.tables.state import read_states, sqlite_locations

    states = on_destination(destination, job.s3, lambda dest: read_states(dest, identifiers))
    if not states:
        return {}
    name, props = catalog_properties(job, destination)
    uri = props.get("uri", "")
    if not (props.get("type") == "sql" and uri.startswith("sqlite:///")):
        return states
    locations = sqlite_locations(uri, name)
    if locations is None:
        return {}
    return {identifier: state for identifier, state in states.items() if state["location"] == locations.get(identifier, "")}


def raw_opener(s3_options: Any, destination: str) -> Callable[[Any, str], Any]:
    """Open a raw object as a binary stream, after checking it is the object the records say landed
    (`s3_options`: the job's `s3:` settings)."""
    from apilake.destinations import open_destination

    fetch = open_destination(destination, s3_options).open_read

    @contextmanager
    def opened(obj: Any, date: str) -> Iterator[BinaryIO]:
        found = fetch(obj.key)
        if found is None or found[0] != obj.bytes:
            what = "is missing" if found is None else f"holds {found[0]:,} bytes, not the {obj.bytes:,} that landed"
            if found is not None:
                found[1].close()
            raise TableError(f"raw zone incomplete: {obj.key} {what}; land it again with `apilake run JOB --date {date} --force`")
        with found[1] as stream:
            yield stream

    return opened


@dataclass(frozen=True)
class TableStatus:
    identifier: str
    rows: int | None  # None: the table does not exist yet
    behind: tuple[str, ...]  # dates whose partition differs from the raw zone (never built, or older)


def table_status(job: Job, destination: str, records: list[RunRecord] | None = None, dates: Collection[str] | None = None) -> list[TableStatus]:
    """Per table: rows in its current snapshot and the dates whose partition is behind the raw
    zone. For `apilake status`, the dashboard and metrics; reads only metadata: the lake's table
    state where it describes the current commit (no catalog, no pyiceberg), else the catalog."""
    from apilake.record import load_records
    from apilake.tables.plan import plan_partitions

    records = load_records(destination, job.s3) if records is None else records
    found: dict[str, list[Any]] = {}
    for partition in plan_partitions(job, records, dates=dates):
        found.setdefault(partition.identifier, []).append(partition)
    states = {i: s for i, s in current_states(job, destination, found).items() if isinstance(s.get("rows"), int)}
    from_catalog = _catalog_status(job, destination, [i for i in found if i not in states])
    out = []
    for identifier, mine in sorted(found.items()):
        state = states[identifier] if identifier in states else from_catalog[identifier]
        built: dict[str, str] = state["fingerprints"] if state else {}
        out.append(TableStatus(identifier, state["rows"] if state else None, tuple(p.date for p in mine if built.get(p.date) != p.fingerprint)))
    return out


def _catalog_status(job: Job, destination: str, identifiers: list[str]) -> dict[str, dict[str, Any] | None]:
    """The summaries (`state.summary_of`) of these tables' current commits, from the catalog; None
    for a table that does not exist yet."""
    if not identifiers:
        return {}
    from apilake.tables.catalog import open_catalog
    from apilake.tables.refresh import FINGERPRINT, _load
    from apilake.tables.state import summary_of

    catalog = open_catalog(job, destination)
    return {identifier: None if (current := _load(catalog, identifier)) is None else summary_of(current, FINGERPRINT) for identifier in identifiers}


def refresh_landed(job: Job, destination: str, results: list[UnitResult], *, stopped: Callable[[], str | None], writer: Any = None) -> TablesReport | None:
    """A run's table stage, under the run's own lock and lease: the partitions of exactly the
    (endpoint, date)s it landed (by its results, whose objects its record already lists). Never
    raises for the tables' own failures: they fail the run, and leave what landed as it is.
    None when the run landed nothing (it had landed before): there is nothing of its to refresh."""
    landed = {(r.source, r.endpoint, r.date) for r in results if r.status == "landed"}
    if not landed:
        return None
    try:
        return build_tables(
            job,
            destination,
            dates={d for _, _, d in landed},
            stopped=stopped,
            writer=writer,
            selected=lambda source, endpoint, date: (source, endpoint, date) in landed,
        )
    except Exception as exc:  # noqa: BLE001 - the catalog, the records: a failure of the run's table stage, never of what landed
        message = Redactor(job.secrets())(str(exc) if isinstance(exc, ApilakeError) else f"{type(exc).__name__}: {exc}")
        log.error("tables not refreshed: %s", message)
        return TablesReport(error=message)


def iso(dates: list[dt.date]) -> set[str]:
    return {d.isoformat() for d in dates}
