"""Running a job: plan → fetch → land → (tables) → record, with one lock, one record and one summary.

Units run concurrently, bounded per source (`concurrency`) and across the job (`concurrency`
at the top level), in this process (the local executor) or on a Dask cluster (`executors/`).
Either way the lock, the run record and the summary stay here. One unit's failure never stops
the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apilake import __version__, logs
from apilake.destinations import Destination, open_destination
from apilake.errors import DestinationError, InterruptedRun
from apilake.executors import ExecutorFactory, LocalExecutor, OnResult, executor_factory
from apilake.executors.work import unit_kind
from apilake.jobfile import Job
from apilake.lease import Lease, lease_key, unleased_warning, wanted
from apilake.lock import run_lock
from apilake.plan import Unit, owned_prefixes
from apilake.record import DID_NOT_LAND, UnitResult, new_run_id, record_document, record_key, run_status, write_record
from apilake.redact import Redactor

if TYPE_CHECKING:
    from apilake.tables import TablesReport

log = logging.getLogger("apilake")

__all__ = ["LocalExecutor", "OnResult", "RunReport", "run_job"]


@dataclass
class RunReport:
    run_id: str
    destination: str
    status: str  # succeeded | failed | interrupted
    results: list[UnitResult] = field(default_factory=list)
    record_error: str | None = None  # why the final record could not be written (it stays `running`)
    tables: TablesReport | None = None  # the table stage (jobs with `tables:`), unless the run stopped early

    @property
    def record_key(self) -> str:
        return record_key(self.run_id)

    @property
    def exit_code(self) -> int:
        return {"succeeded": 0, "failed": 1}.get(self.status, InterruptedRun.exit_code)

    def failures(self) -> list[UnitResult]:
        return [r for r in self.results if r.status in DID_NOT_LAND]


def run_job(
    job: Job,
    units: list[Unit],
    *,
    job_path: str,
    dates: list[dt.date],
    destination: str | None = None,
    force: bool = False,
    on_result: OnResult | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    executor: str | None = None,
    scheduler: str | None = None,
    only: tuple[str, ...] = (),
) -> RunReport:
    """Run planned units under the job's lock and write the run record; never raises for unit failures.

    With `tables:`, the partitions of what landed are refreshed before the final record, under
    the same lock and lease (`_refresh_tables`).

    `executor` (`local` | `dask`) and `scheduler` (a Dask scheduler address) override the job's
    `executor` and `scheduler_address`; `only` (as planned) says which fan-out children run.
    """
    factory = executor_factory(job, executor, scheduler)
    if job.tables is not None:  # a lake its tables cannot go with is refused before anything lands
        from apilake.tables.catalog import catalog_properties

        catalog_properties(job, destination or job.destination)
    # Everything imported so far lives as long as the process: keep it out of the garbage
    # collector's full passes, which otherwise rescan it every few thousand allocations.
    gc.freeze()
    dest = open_destination(destination or job.destination, job.s3)
    with run_lock(job_path, dest.url, dest.place) as lock:
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "lock": str(lock), "lease": lease_key(job_path) if wanted(dest, job.lease) else None}
        return asyncio.run(_run(job, units, dest, job_path, dates, force, on_result or (lambda r: None), now, factory, holder, only))


async def _run(
    job: Job,
    units: list[Unit],
    dest: Destination,
    job_path: str,
    dates: list[dt.date],
    force: bool,
    on_result: OnResult,
    now: Callable[[], dt.datetime],
    factory: ExecutorFactory,
    holder: dict[str, Any],
    only: tuple[str, ...] = (),
) -> RunReport:
    redact = Redactor(job.secrets())
    started = now()
    report = RunReport(new_run_id(started), dest.url, "running")
    logs.run_id.set(report.run_id)
    log.info("run %s: %d units into %s", report.run_id, len(units), dest.url)
    if warning := unleased_warning(job, dest):
        log.warning("%s", warning)

    stopped: list[str] = []  # why the run stopped early (a signal, a lost lease), for the units it left

    def collect(result: UnitResult) -> None:
        if result.status == "interrupted" and result.error is None:
            result.error = stopped[0] if stopped else "not finished"
        report.results.append(result)
        level = logging.WARNING if result.status == "failed" else logging.DEBUG
        log.log(level, "%s %s%s", result.status, result.unit, f": {result.error}" if result.error else "")
        on_result(result)

    def document(status: str, finished: dt.datetime | None) -> dict:
        doc = record_document(
            run_id=report.run_id,
            job=job_path,
            destination=dest.url,
            dates=[d.isoformat() for d in dates],
            started=started,
            finished=finished,
            status=status,
            results=report.results,
            version=__version__,
            holder=holder,
        )
        if report.tables is not None:
            doc["tables"] = report.tables.entry(redact)
        return doc

    loop = asyncio.get_running_loop()
    work: list[asyncio.Future[None]] = []  # the units' work: the one thing a signal cancels
    signalled = False

    def stop(reason: str) -> None:
        stopped.append(reason)
        for future in work:
            future.cancel()  # records are still written: they say what landed and what did not

    def interrupt(signum: int) -> None:
        nonlocal signalled
        signalled = True
        log.warning("%s received: stopping; in-flight transfers are discarded", signal.Signals(signum).name)
        stop(f"run interrupted by {signal.Signals(signum).name}")

    def lease_lost(reason: str) -> None:
        log.error("%s: stopping; no new unit starts and in-flight transfers are discarded", reason)
        stop(f"run stopped: {reason}")

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}  # a scheduler's own
    for signum in previous:
        loop.add_signal_handler(signum, interrupt, signum)
    lease = Lease(dest, job_path, report.run_id, job.lease, lock=holder["lock"]) if holder["lease"] else None
    heartbeat: asyncio.Task[None] | None = None
    try:
        await dest.check()
        if lease is not None:
            await lease.acquire()
            heartbeat = asyncio.create_task(lease.hold(lease_lost))
        await dest.clear_stale_uploads(owned_prefixes(job, only), dt.timedelta(minutes=job.s3.stale_upload_minutes))
        executor = factory(job, dest, redact, force=force, on_result=collect, run_id=report.run_id)
        async with executor:  # connects first (dask): an unreachable cluster leaves no record behind
            await write_record(dest, document("running", None))
            if not stopped:
                work.append(asyncio.ensure_future(executor.run(units, only)))
                try:
                    await work[0]
                except asyncio.CancelledError:
                    if not stopped:
                        raise
            if job.tables is not None and not stopped:  # on the cluster's workers, when the units ran there
                await _refresh_tables(job, dest, report, document, lambda: stopped[0] if stopped else None, executor.table_writer())
        finished_units = {r.unit for r in report.results}
        for unit in units:
            if unit.id not in finished_units:
                kind = unit_kind(unit)
                reason = stopped[0] if stopped else "not finished"
                collect(
                    UnitResult(unit.id, unit.source, unit.endpoint, unit.date, kind, "interrupted", url=redact(unit.request_url), error=reason)
                )
        report.status = run_status(report.results, interrupted=signalled)
        if stopped and not signalled:
            report.status = "failed"  # the lease was lost: not a clean run, and not a user's interrupt
        if report.tables is not None and report.tables.exit_code and report.status == "succeeded":
            report.status = "failed"  # what landed stays landed; the refresh is redone by `apilake tables`
        await _finish_record(dest, report, document(report.status, now()))
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)  # which leaves the default: a signal right after the run would kill a scheduler
            signal.signal(signum, handler)
        if heartbeat is not None:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)  # its renewal ends before the release
        if lease is not None:
            await lease.release()
        await dest.close()
    return report


async def _refresh_tables(job: Job, dest: Destination, report: RunReport, document: Callable[[str, None], dict[str, Any]],
                          stopped: Callable[[], str | None], writer: Any) -> None:
    """The table stage: after landing, still under the run's lock and lease (renewed by the
    heartbeat while the refresh works in a thread), so no other run gets in between. The landed
    objects are put on record first, for the refresh to read them and for a crash in it to
    leave them recorded; a signal or a lost lease stops it before the next table."""
    from apilake.tables import TablesReport, refresh_landed

    try:
        await write_record(dest, document("running", None))
    except DestinationError as exc:
        report.tables = TablesReport(error=f"the run record could not be written before the refresh: {exc}")
        return
    report.tables = await asyncio.to_thread(refresh_landed, job, dest.url, report.results, stopped=stopped, writer=writer)


async def _finish_record(dest: Destination, report: RunReport, document: dict[str, Any]) -> None:
    """Write the final record. When the destination refuses it (a full disk) the objects that
    landed stay landed: the run fails (exit 1) and says so, and its record, still `running` with
    its lock free, shows as abandoned (`apilake status`); a rerun skips what is there."""
    try:
        await write_record(dest, document)
    except DestinationError as exc:
        report.status = "failed"
        report.record_error = str(exc)
        log.error("the run record could not be written: %s", exc)
