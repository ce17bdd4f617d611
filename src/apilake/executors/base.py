"""What every executor shares: admission of units under the job's concurrency limits.

Every unit and every listed file waits for a slot of its source (`sources[].concurrency`) and
one of the job (`concurrency`) before it runs, and keeps both until its result is back. Slots
go to the longest chains first (`admission`): listed files, reports, bulk listings, paginated
endpoints, then single requests. The slots live in the process that runs `apilake run`, which is also the only
process that hands out work: so they bound what is in flight wherever the work runs, on one
event loop here or on any number of Dask workers.

Fan-out children (`for_each`) are scheduled here too, for every executor: once all parent
units of a date have finished, their landed pages are read from the destination and the
children's units are expanded (`plan.expand_children`) and run like any other.

Subclasses say only where a unit runs (`run_unit`, `run_file`) and what they know about a
source's daily quota (`spent`).
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from apilake.collisions import KeyClaims
from apilake.destinations import Destination
from apilake.errors import ApilakeError
from apilake.executors.admission import FILE_RANK, Admission, rank
from apilake.executors.fanout import FanOut, Ready
from apilake.executors.work import endpoints, not_attempted
from apilake.fetch.bulk import FileTransfer
from apilake.fetch.json import landed_pages
from apilake.incremental import advance, open_windows
from apilake.jobfile import Endpoint, Job, Source
from apilake.ndjson import landed_page
from apilake.plan import Unit, expand_children, incremental_children
from apilake.record import UnitResult, landed_sizes, read_records
from apilake.redact import Redactor
from apilake.status.gaps import Evidence
from apilake.status.report import present_units
from apilake.vocabulary import DONE, THERE, ResultKind, UnitStatus, result_kind

if TYPE_CHECKING:
    from apilake.tables.refresh import Writer

OnResult = Callable[[UnitResult], None]


class Executor(abc.ABC):
    """Runs planned units and reports each result (and each listed file's) to `on_result`.

    Use as `async with executor: await executor.run(units)`: entering acquires what the
    executor needs (HTTP clients, a cluster connection) before anything is recorded.
    """

    def __init__(self, job: Job, dest: Destination, redact: Redactor, *, force: bool, on_result: OnResult) -> None:
        self.job = job
        self.dest = dest
        self.redact = redact
        self.force = force
        self.on_result = on_result
        self._endpoints = endpoints(job)
        self._sources = {s.name: s for s in job.sources}
        self._slots = Admission(job.concurrency, {s.name: s.concurrency for s in job.sources})
        self.recorded: dict[str, int] = {}  # key → bytes landed, by the run records (`run` fills it)
        self._landed_reports: set[str] = set()  # report units whose every file is still in place (`run` fills it)

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    async def _record_sizes(self, units: list[Unit]) -> None:
        """Fill `recorded`: key → bytes landed there by these units, by the run records. The skip
        check lands again an object whose size differs. Not needed with `--force`, which lands
        everything again anyway.

        Also find the report units whose latest complete report landed every file, all still
        there at their recorded sizes: a rerun skips them without a request (not even a poll);
        a report with a file missing is polled again, for fresh URLs."""
        if self.force:
            return
        records = await read_records(self.dest)
        self.recorded.update(landed_sizes(records, {u.id for u in units}))
        evidence = Evidence(records)
        reports = {u.id: evidence.required_keys(u.id, "listing") for u in units if u.kind == "report"}
        self._landed_reports = await present_units(self.dest, reports, self.recorded) if reports else set()

    def table_writer(self) -> Writer | None:
        """Where a run's table stage writes data files (`tables.refresh.Writer`), called on the
        run's loop; None: in this process."""
        return None

    @abc.abstractmethod
    def spent(self, source: str) -> bool:
        """Whether the source's daily quota is known to be spent (no new unit of it starts)."""

    @abc.abstractmethod
    async def run_unit(self, unit: Unit) -> tuple[UnitResult, list[FileTransfer]]:
        """Run one planned unit; never raises for the unit's own failure."""

    @abc.abstractmethod
    async def run_file(self, unit: Unit, transfer: FileTransfer) -> UnitResult:
        """Land one listed file; never raises for the file's own failure."""

    async def run(self, units: Iterable[Unit], only: Iterable[str] = ()) -> None:
        """Run `units`, and the fan-out children (of the endpoints `only` selects) their parents imply."""
        units = list(units)
        await self._record_sizes(units)
        self._fan = FanOut(self.job, only)
        self._fan.expect(units)
        self._claims = KeyClaims()  # a fan-out child's keys are known once its parent landed: checked then
        self._claims.claim(units)
        try:
            async with asyncio.TaskGroup() as group:
                for unit in sorted(units, key=rank):  # the first ones in take free slots without queueing
                    group.create_task(self._unit(unit, group))
        except asyncio.CancelledError:
            # The run stopped: children whose parents never finished are named in the record too.
            for source, endpoint, run_date in self._fan.pending():
                self.on_result(self._endpoint_result(source, endpoint, run_date, "interrupted"))
            raise

    async def _unit(self, unit: Unit, group: asyncio.TaskGroup) -> None:
        if unit.id in self._landed_reports:
            self.on_result(UnitResult.for_unit(unit, "skipped", url=self.redact(unit.request_url)))
            return
        files: list[FileTransfer] = []
        try:
            async with self._slots.slot(unit.source, rank(unit)):
                if self.spent(unit.source):
                    result = self._not_attempted(unit, result_kind(unit.kind), unit.id, unit.request_url)
                else:
                    result, files = await self.run_unit(unit)
                    result = await self._advance(unit, result)
                for transfer in files:  # queued before this slot is let go: they continue its chain
                    group.create_task(self._file(unit, transfer, self._slots.ticket(unit.source, FILE_RANK)))
        except asyncio.CancelledError:  # the run stopped: named in the record with the run's reason (`runner`)
            self.on_result(UnitResult.for_unit(unit, "interrupted", url=self.redact(unit.request_url)))
            raise
        self.on_result(result)
        for ready in self._fan.finished(unit, result):
            group.create_task(self._children(ready, group))

    async def _children(self, ready: Ready, group: asyncio.TaskGroup) -> None:
        """Expand a child endpoint's units from its parents' landed pages (this run's or the lake's)."""
        source, child = ready.source, ready.child
        missing = [r for r in ready.parents if r.status not in DONE]
        try:
            if missing:
                raise ApilakeError(f"parent {missing[0].unit} did not land ({missing[0].status}: {missing[0].error})")
            assert child.for_each is not None
            fmt = self._endpoints[source.name, child.for_each.endpoint].format
            pages = []
            for parent in (r for r in ready.parents if r.status != "ignored"):  # an ignored parent has no values
                for body in await landed_pages(self.dest, parent.objects[0].key):
                    pages.append(landed_page(body, fmt))
            windows = await open_windows(self.dest, incremental_children(source, child, ready.run_date, pages), dt.datetime.now(dt.UTC))
            units = expand_children(source, child, ready.run_date, pages, windows)
            self._claims.claim(units)
        except (ApilakeError, ValueError, OSError, asyncio.CancelledError) as exc:
            stopped = isinstance(exc, asyncio.CancelledError)
            for s, endpoint in [(source, child), *self._fan.descendants(source.name, child.name)]:
                status: UnitStatus = "interrupted" if stopped else "not_attempted"
                error = None if stopped else self.redact(f"not attempted: {exc}")
                self.on_result(self._endpoint_result(s, endpoint, ready.run_date.isoformat(), status, error))
            if stopped:
                raise
            return
        for now in self._fan.expect(units, source=source.name, endpoint=child.name, run_date=ready.run_date.isoformat()):
            group.create_task(self._children(now, group))
        for unit in units:
            group.create_task(self._unit(unit, group))

    async def _advance(self, unit: Unit, result: UnitResult) -> UnitResult:
        """An incremental unit whose every page landed (or was there) moves its cursor
        (`incremental.advance`); a cursor that cannot move fails the unit, its pages stay landed.
        One an `on_response` rule ignored read its window and found no data: done, the cursor stays."""
        endpoint = self._endpoints[unit.source, unit.endpoint]
        if endpoint.incremental is None or result.status not in DONE:
            return result
        try:
            bodies = await landed_pages(self.dest, unit.key) if result.status in THERE else []
            pages = [landed_page(body, endpoint.format) for body in bodies]
            await advance(self.dest, unit.source, endpoint, unit.variables, unit.run_date, unit.id, pages, dt.datetime.now(dt.UTC))
        except (ApilakeError, ValueError, OSError) as exc:
            result.status, result.error = "failed", self.redact(str(exc))
        return result

    async def _file(self, unit: Unit, transfer: FileTransfer, ticket: asyncio.Future[None]) -> None:
        try:
            async with self._slots.slot(unit.source, ticket):
                if self.spent(unit.source):
                    result = self._not_attempted(unit, "file", transfer.unit, transfer.url)
                else:
                    result = await self.run_file(unit, transfer)
        except asyncio.CancelledError:
            # The run stopped (a signal, a lost lease): a listed file that did not land is named
            # in the record like a planned unit, with the run's reason (`runner`).
            url = self.redact(transfer.url)
            self.on_result(UnitResult.for_unit(unit, "interrupted", unit_id=transfer.unit, kind="file", url=url))
            raise
        self.on_result(result)

    @staticmethod
    def _endpoint_result(source: Source, endpoint: Endpoint, run_date: str, status: UnitStatus, error: str | None = None) -> UnitResult:
        """One entry for all units of a child endpoint and date that were never expanded."""
        return UnitResult(f"{source.name}/{endpoint.name}/{run_date}", source.name, endpoint.name, run_date,
                          result_kind(endpoint.kind), status, error=error)  # fmt: skip

    def _not_attempted(self, unit: Unit, kind: ResultKind, unit_id: str, url: str) -> UnitResult:
        return not_attempted(unit, kind, unit_id, url, self.redact, self._sources[unit.source])
