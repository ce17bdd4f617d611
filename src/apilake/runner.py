"""Running a job: plan → fetch → land → (tables) → record, with one lock, one record and one summary.

Units run concurrently, bounded per source (`concurrency`) and across the job (`concurrency`
at the top level), in this process (the local executor) or on a Dask cluster (`executors/`).
Either way the lock, the run record and the summary stay here. One unit's failure never stops
the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from apilake import __version__, logs
from apilake.destinations import Destination, open_destination
from apilake.errors import DestinationError, ExitCode
from apilake.executors import Executor, ExecutorFactory, LocalExecutor, OnResult, executor_factory
from apilake.jobfile import Job
from apilake.lease import Lease, lease_key, unleased_warning, wanted
from apilake.lock import run_lock
from apilake.plan import Unit, owned_prefixes
from apilake.record import DID_NOT_LAND, Holder, RunRecord, UnitResult, new_run_id, record_key, run_status, write_record
from apilake.redact import Redactor
from apilake.vocabulary import RunStatus

if TYPE_CHECKING:
    from apilake.tables import TablesReport

log = logging.getLogger("apilake")

__all__ = ["LocalExecutor", "OnResult", "Run", "RunControl", "RunReport", "arun_job", "run_job"]

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class RunReport:
    run_id: str
    destination: str
    status: RunStatus
    results: list[UnitResult] = field(default_factory=list)
    record_error: str | None = None  # why the final record could not be written (it stays `running`)
    tables: TablesReport | None = None  # the table stage (jobs with `tables:`), unless the run stopped early

    @property
    def record_key(self) -> str:
        return record_key(self.run_id)

    @property
    def exit_code(self) -> ExitCode:
        return {"succeeded": ExitCode.OK, "failed": ExitCode.FAILED}.get(self.status, ExitCode.INTERRUPTED)

    def failures(self) -> list[UnitResult]:
        return [r for r in self.results if r.status in DID_NOT_LAND]


class RunControl:
    """Stops a run from outside it: the CLI's signal handlers call `interrupt`. A library caller
    that never stops its runs needs none. A stop asked for before the run began stops it at once."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.current: Run | None = None  # the run going on, set by the run itself

    def interrupt(self, reason: str) -> None:
        """A user's interrupt (`reason`: SIGINT, SIGTERM): the run ends `interrupted`, its record says what landed."""
        self.reason = self.reason or reason
        if self.current is not None:
            self.current.stop(reason, interrupted=True)


def run_job(
    job: Job,
    units: list[Unit],
    *,
    job_path: str,
    dates: list[dt.date],
    destination: str | None = None,
    force: bool = False,
    on_result: OnResult | None = None,
    now: Clock = _utc_now,
    executor: str | None = None,
    scheduler: str | None = None,
    only: tuple[str, ...] = (),
    control: RunControl | None = None,
) -> RunReport:
    """`arun_job` on an event loop of its own, for synchronous callers (it must not run inside one)."""
    return asyncio.run(
        arun_job(
            job,
            units,
            job_path=job_path,
            dates=dates,
            destination=destination,
            force=force,
            on_result=on_result,
            now=now,
            executor=executor,
            scheduler=scheduler,
            only=only,
            control=control,
        )
    )


async def arun_job(
    job: Job,
    units: list[Unit],
    *,
    job_path: str,
    dates: list[dt.date],
    destination: str | None = None,
    force: bool = False,
    on_result: OnResult | None = None,
    now: Clock = _utc_now,
    executor: str | None = None,
    scheduler: str | None = None,
    only: tuple[str, ...] = (),
    control: RunControl | None = None,
) -> RunReport:
    """Run planned units under the job's lock and write the run record; never raises for unit failures.

    With `tables:`, the partitions of what landed are refreshed before the final record, under
    the same lock and lease (`Run.refresh_tables`).

    `executor` (`local` | `dask`) and `scheduler` (a Dask scheduler address) override the job's
    `executor` and `scheduler_address`; `only` (as planned) says which fan-out children run.
    It touches no process-wide state (signal handlers, the garbage collector): that is the
    caller's (the CLI's), which stops a run through `control`.
    """
    factory = executor_factory(job, executor, scheduler)
    if job.tables is not None:  # a lake its tables cannot go with is refused before anything lands
        from apilake.tables.catalog import catalog_properties

        catalog_properties(job, destination or job.destination)
    dest = open_destination(destination or job.destination, job.s3)
    with run_lock(job_path, dest.url, dest.place) as lock:
        holder = Holder(socket.gethostname(), os.getpid(), str(lock), lease_key(job_path) if wanted(dest, job.lease) else None)
        run = Run(job, units, dest, job_path=job_path, dates=dates, force=force, on_result=on_result or (lambda r: None), now=now, holder=holder, only=only)
        return await run.execute(factory, control or RunControl())


class Run:
    """One run: its units' results, the record that says what they did, and why it stopped early.

    `execute` checks the destination, takes the lease, runs the units on an executor, refreshes
    the tables and writes the final record. `stop` (a user's interrupt through `RunControl`, or
    a lost lease) cancels the units' work; the record is still written, and names the units
    that did not finish with the reason.
    """

    def __init__(
        self,
        job: Job,
        units: list[Unit],
        dest: Destination,
        *,
        job_path: str,
        dates: list[dt.date],
        force: bool,
        on_result: OnResult,
        now: Clock,
        holder: Holder,
        only: tuple[str, ...] = (),
    ) -> None:
        self.job = job
        self.units = units
        self.dest = dest
        self.job_path = job_path
        self.dates = dates
        self.force = force
        self.on_result = on_result
        self.now = now
        self.holder = holder
        self.only = only
        self.redact = Redactor(job.secrets())
        self.started = now()
        self.report = RunReport(new_run_id(self.started), dest.url, "running")
        self.stopped: str | None = None  # why the run stopped early (an interrupt, a lost lease), for the units it left
        self.interrupted = False  # by a user (a signal), not by a lost lease
        self._work: asyncio.Future[None] | None = None  # the units' work: the one thing a stop cancels

    def stop(self, reason: str, *, interrupted: bool = False) -> None:
        """Stop the units' work; the first reason is the one recorded."""
        self.interrupted = self.interrupted or interrupted
        self.stopped = self.stopped or (f"run interrupted by {reason}" if interrupted else f"run stopped: {reason}")
        if self._work is not None:
            self._work.cancel()  # records are still written: they say what landed and what did not

    def _lease_lost(self, reason: str) -> None:
        log.error("%s: stopping; no new unit starts and in-flight transfers are discarded", reason)
        self.stop(reason)

    def collect(self, result: UnitResult) -> None:
        """One unit's (or file's) result: kept for the record, logged, and passed on."""
        if result.status == "interrupted" and result.error is None:
            result.error = self.stopped or "not finished"
        self.report.results.append(result)
        level = logging.WARNING if result.status == "failed" else logging.DEBUG
        log.log(level, "%s %s%s", result.status, result.unit, f": {result.error}" if result.error else "")
        self.on_result(result)

    def record(self, status: RunStatus, finished: dt.datetime | None) -> RunRecord:
        return RunRecord(
            run_id=self.report.run_id,
            job=self.job_path,
            destination=self.dest.url,
            dates=[d.isoformat() for d in self.dates],
            started=self.started,
            finished=finished,
            status=status,
            units=self.report.results,
            version=__version__,
            holder=self.holder,
            tables=self.report.tables.entry(self.redact) if self.report.tables is not None else None,
        )

    async def execute(self, factory: ExecutorFactory, control: RunControl) -> RunReport:
        """Run the units and write the record; the lease (S3) is held from the first record to the last."""
        report, dest = self.report, self.dest
        tagged = logs.run_id.set(report.run_id)  # the caller's context gets its own back at the end
        log.info("run %s: %d units into %s", report.run_id, len(self.units), dest.url)
        if warning := unleased_warning(self.job, dest):
            log.warning("%s", warning)
        control.current = self
        if control.reason is not None:
            self.stop(control.reason, interrupted=True)
        lease = Lease(dest, self.job_path, report.run_id, self.job.lease, lock=self.holder.lock or "") if self.holder.lease else None
        heartbeat: asyncio.Task[None] | None = None
        try:
            await dest.check()
            if lease is not None:
                await lease.acquire()
                heartbeat = asyncio.create_task(lease.hold(self._lease_lost))
            await dest.clear_stale_uploads(owned_prefixes(self.job, self.only), dt.timedelta(minutes=self.job.s3.stale_upload_minutes))
            executor = factory(self.job, dest, self.redact, force=self.force, on_result=self.collect, run_id=report.run_id)
            async with executor:  # connects first (dask): an unreachable cluster leaves no record behind
                await write_record(dest, self.record("running", None))
                await self._run_units(executor)
                if self.job.tables is not None and not self.stopped:  # on the cluster's workers, when the units ran there
                    await self.refresh_tables(executor)
            self._name_unfinished()
            report.status = self._status()
            await self._finish_record()
        finally:
            control.current = None
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)  # its renewal ends before the release
            if lease is not None:
                await lease.release()
            await dest.close()
            logs.run_id.reset(tagged)
        return report

    async def _run_units(self, executor: Executor) -> None:
        if self.stopped:
            return
        self._work = asyncio.ensure_future(executor.run(self.units, self.only))
        try:
            await self._work
        except asyncio.CancelledError:
            if not self.stopped:
                raise  # cancelled from outside the run, not stopped by it

    def _name_unfinished(self) -> None:
        """Every planned unit without a result is recorded as interrupted, with the reason."""
        finished = {r.unit for r in self.report.results}
        for unit in self.units:
            if unit.id not in finished:
                reason = self.stopped or "not finished"
                self.collect(UnitResult.for_unit(unit, "interrupted", url=self.redact(unit.request_url), error=reason))

    def _status(self) -> RunStatus:
        status = run_status(self.report.results, interrupted=self.interrupted)
        if self.stopped and not self.interrupted:
            return "failed"  # the lease was lost: not a clean run, and not a user's interrupt
        tables = self.report.tables
        if tables is not None and tables.exit_code and status == "succeeded":
            return "failed"  # what landed stays landed; the refresh is redone by `apilake tables`
        return status

    async def refresh_tables(self, executor: Executor) -> None:
        """The table stage: after landing, still under the run's lock and lease (renewed by the
        heartbeat while the refresh works in a thread), so no other run gets in between. The landed
        objects are put on record first, for the refresh to read them and for a crash in it to
        leave them recorded; a stop (an interrupt, a lost lease) ends it before the next table."""
        from apilake.tables import TablesReport, refresh_landed

        try:
            await write_record(self.dest, self.record("running", None))
        except DestinationError as exc:
            self.report.tables = TablesReport(error=f"the run record could not be written before the refresh: {exc}")
            return
        self.report.tables = await asyncio.to_thread(
            refresh_landed, self.job, self.dest.url, self.report.results, stopped=lambda: self.stopped, writer=executor.table_writer()
        )

    async def _finish_record(self) -> None:
        """Write the final record. When the destination refuses it (a full disk) the objects that
        landed stay landed: the run fails (exit 1) and says so, and its record, still `running` with
        its lock free, shows as abandoned (`apilake status`); a rerun skips what is there."""
        try:
            await write_record(self.dest, self.record(self.report.status, self.now()))
        except DestinationError as exc:
            self.report.status = "failed"
            self.report.record_error = str(exc)
            log.error("the run record could not be written: %s", exc)
