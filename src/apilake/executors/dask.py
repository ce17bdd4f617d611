"""The Dask executor: units run on the workers of a Dask cluster, results come back here.

The planner, the run lock, the run record and the summary stay in the process that runs
`apilake run` (the "client"). Each JSON unit and each bulk listing becomes one Dask task; a
listing's task returns its files as metadata and each file becomes a task of its own, so the
files of one listing spread over the workers. A task fetches and lands its unit itself, straight
into the destination (data never passes through the scheduler or the client), with the same
code the local executor runs (`apilake.executors.work`), and returns only the `UnitResult`.

Limits hold across the cluster:

- `concurrency` (per source and job-wide): the client hands out every task and keeps it
  counted until its result is back (`apilake.executors.base`), so no more are in flight on
  the whole cluster than locally on one loop.
- `requests_per_second` / `requests_per_minute`: one `distributed.Semaphore` per window on the
  scheduler with as many leases as calls allowed. Each request takes a lease and gives it
  back one window later, so no window anywhere on the cluster holds more calls than allowed.
- `requests_per_day`: the source's quota ledger in the destination (`fetch.quota`), as for any
  run: each worker process reserves small blocks of it and gives back what it did not use when
  the run ends; a worker that finds the quota spent reports its unit as not attempted.

The semaphores belong to one run (their names hold the run id) and are closed at its end.

Secrets: the job, token included, travels inside each task as a `RunPayload` cut down to the
task's source, whose repr shows none of it (inside the task, not scattered once: scattered
data dies with the worker holding it, a task's own arguments do not); task keys hold only the
run id and a counter; the unit is `Sealed`, so a Dask log line that prints a task's arguments
prints no URL either. On workers the `apilake` log lines of a task are captured (redacted),
sent back with its result and logged by the client, so they appear where a local run's do and
never in a worker's log. Dask itself unpickles task arguments on the scheduler: scheduler and
workers must run the client's apilake version, and the token is in their memory (not logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import distributed
from distributed import Client, Semaphore, get_worker

from apilake.destinations import Destination, open_destination
from apilake.errors import DestinationError, ExecutorError, TransferError
from apilake.executors.base import Executor, OnResult
from apilake.executors.work import UnitWork, endpoints, failed
from apilake.fetch.bulk import FileTransfer
from apilake.fetch.client import SourceClient
from apilake.fetch.limits import DailyQuotaSpent, windows
from apilake.fetch.quota import Quotas
from apilake.fetch.refresh import token_store
from apilake.jobfile import Job, Source
from apilake.plan import Unit, landing_keys
from apilake.record import UnitResult, record_key
from apilake.redact import Redactor
from apilake.vocabulary import ResultKind, result_kind

if TYPE_CHECKING:
    from tornado.platform.asyncio import BaseAsyncIOLoop

    from apilake.tables.refresh import PartitionWork, Writer, Written

log = logging.getLogger("apilake")
T = TypeVar("T")

#: Task-level retries: a unit's own failures are retried inside the task (and never raise); a
#: task only raises when the worker's environment is broken, which another try may not share.
#: A worker that dies mid-task is handled by the scheduler itself (`allowed-failures`).
TASK_RETRIES = 2
#: How often a running task looks whether the client cancelled it (SIGINT/SIGTERM of the run).
CANCEL_POLL_S = 0.25
#: A lease of a rate window is kept this much longer than the window. The vendor counts
#: arrivals, and a granted request reaches it a little later than the grant (thread hops on a
#: busy worker, a new connection): measured up to ~60 ms on a loaded 2-core machine. The cost
#: is throughput: a per-second limit runs ~20 % below its ceiling, a per-minute one ~1.5 %.
HOLD_MARGIN_S = 0.25
HOLD_MARGIN_RATIO = 0.01
#: The scheduler drops a rate lease on its own only this long after the window: that happens
#: only when the worker that held it died (live workers give leases back themselves).
LEASE_SLACK_S = 2.0


def hold_seconds(window: float) -> float:
    """How long a request keeps its lease of a `window`-second rate semaphore."""
    return window + HOLD_MARGIN_S + HOLD_MARGIN_RATIO * window


# ---------------------------------------------------------------------------------------------
# what travels to the workers


@dataclass(frozen=True, slots=True)
class SourceLimits:
    """Names (on the scheduler) of the semaphores that hold one source's rate windows in one run."""

    source: str
    windows: tuple[tuple[str, int, float], ...]  # (semaphore name, calls, seconds)

    def semaphores(self) -> Iterator[tuple[str, int, float]]:
        """(name, leases, lease timeout on the scheduler)."""
        for name, calls, seconds in self.windows:
            yield name, calls, hold_seconds(seconds) + LEASE_SLACK_S


def source_limits(run_id: str, source: Source) -> SourceLimits:
    prefix = f"apilake-{run_id}-{source.name}"
    return SourceLimits(
        source.name,
        tuple((f"{prefix}-per-{seconds:g}s", calls, seconds) for calls, seconds in windows(source)),
    )


@dataclass(frozen=True, slots=True, repr=False)
class RunPayload:
    """What a task of a run needs: the job cut down to the task's source, and where to land."""

    run_id: str
    job: Job  # with one source: the task's (secrets that came from ${VAR}s included)
    dest_url: str
    force: bool
    limits: SourceLimits
    log_level: int

    @property
    def source(self) -> Source:
        return self.job.sources[0]

    def __repr__(self) -> str:  # Dask may print task arguments: never the job's secrets
        return f"<apilake run {self.run_id}: job and secrets not shown>"


class Sealed(Generic[T]):
    """A task argument whose repr shows nothing (URLs may hold secrets in their query)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<apilake task argument>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Sealed, (self.value,))


@dataclass(slots=True)
class TaskOutcome:
    """What a task sends back: the result, a listing's files, and its log lines (redacted)."""

    result: UnitResult
    files: list[FileTransfer] = field(default_factory=list)
    logs: list[tuple[int, str]] = field(default_factory=list)
    worker: str = ""


# ---------------------------------------------------------------------------------------------
# the client side


class DaskExecutor(Executor):
    """Submits units to the cluster at `address`; see the module docstring."""

    def __init__(self, job: Job, dest: Destination, redact: Redactor, *, force: bool, on_result: OnResult, address: str, run_id: str) -> None:
        super().__init__(job, dest, redact, force=force, on_result=on_result)
        self.address = address
        self.run_id = run_id
        self.limits = {s.name: source_limits(run_id, s) for s in job.sources}
        self._spent: set[str] = set()
        self._client: Client | None = None
        level = logging.getLogger("apilake").getEffectiveLevel()
        self._payloads = {s.name: RunPayload(run_id, job.model_copy(update={"sources": [s]}), dest.url, force, self.limits[s.name], level) for s in job.sources}
        self._inflight: set[distributed.Future[Any]] = set()
        self._numbers = itertools.count()

    async def __aenter__(self) -> DaskExecutor:
        client = Client(self.address, asynchronous=True, set_as_default=False, name="apilake")
        try:
            self._client = await client
        except (OSError, TimeoutError, ValueError) as exc:
            await client.close()
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {self.address} ({exc}); check --scheduler / scheduler_address and that the scheduler is running"
            ) from None
        try:
            scheduler = self._client.scheduler
            assert scheduler is not None, "a connected client has the scheduler's address"
            for limits in self.limits.values():
                for name, leases, timeout in limits.semaphores():
                    await scheduler.semaphore_register(name=name, max_leases=leases, lease_timeout=timeout)
            workers: dict[str, int] = await self._client.nthreads()
            if not workers:  # an adaptive cluster may start workers only once there is work
                log.warning("the Dask cluster at %s has no workers yet; units wait for some", self.address)
            threads = sum(workers.values())
            log.info("dask executor: %d worker(s), %d thread(s) at %s", len(workers), threads, self.address)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._close()

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            async with asyncio.timeout(30):
                if self._inflight:  # interrupted: running tasks see the cancel and drop their transfer
                    await client.cancel(list(self._inflight), force=True)
                    await asyncio.sleep(2 * CANCEL_POLL_S)
                await client.run(_forget_run, self.run_id, on_error="ignore")
                scheduler = client.scheduler
                assert scheduler is not None, "a connected client has the scheduler's address"
                for limits in self.limits.values():
                    for name, _leases, _timeout in limits.semaphores():
                        await scheduler.semaphore_close(name=name)
        except (OSError, TimeoutError) as exc:
            log.warning("could not clean up on the Dask cluster: %s", exc)
        finally:
            await client.close()

    def spent(self, source: str) -> bool:
        return source in self._spent

    def _recorded_size(self, unit: Unit, transfer: FileTransfer | None) -> dict[str, int]:
        """Only the task's own key travels with it, not the whole lake's index."""
        keys = landing_keys(unit, self._endpoints[unit.source, unit.endpoint]) if transfer is None else [transfer.key]
        return {key: self.recorded[key] for key in keys if key in self.recorded}

    async def run_unit(self, unit: Unit) -> tuple[UnitResult, list[FileTransfer]]:
        outcome = await self._submit(unit_task, unit, None, result_kind(unit.kind), unit.id, unit.request_url)
        return outcome.result, outcome.files

    async def run_file(self, unit: Unit, transfer: FileTransfer) -> UnitResult:
        outcome = await self._submit(file_task, unit, transfer, "file", transfer.unit, transfer.url)
        return outcome.result

    async def _submit(
        self, task: Callable[..., TaskOutcome], unit: Unit, transfer: FileTransfer | None, kind: ResultKind, unit_id: str, url: str
    ) -> TaskOutcome:
        assert self._client is not None, "use the executor as `async with executor:`"
        future = self._client.submit(
            task,
            self._payloads[unit.source],
            Sealed((unit, transfer, self._recorded_size(unit, transfer))),
            key=f"apilake_{kind}-{self.run_id}-{next(self._numbers)}",
            pure=False,
            retries=TASK_RETRIES,
        )
        self._inflight.add(future)
        try:
            outcome: TaskOutcome = await future
        except asyncio.CancelledError:
            raise  # the run is stopping: the future stays in flight, for `_close` to cancel on the cluster
        except Exception as exc:  # noqa: BLE001 - a lost task is one unit's failure, not the run's
            self._inflight.discard(future)
            if isinstance(exc, distributed.KilledWorker):
                exc = TransferError(f"{unit_id}: every worker that ran it died ({exc}); see the workers' logs")
            elif isinstance(exc, distributed.client.FutureCancelledError):
                exc = TransferError(f"{unit_id}: the Dask scheduler cancelled it ({exc})")
            return TaskOutcome(failed(unit, kind, unit_id, exc, url, self.redact))
        self._inflight.discard(future)
        for level, line in outcome.logs:
            log.log(level, "%s [worker %s]", line, outcome.worker)
        if outcome.result.status == "not_attempted":  # only a spent daily quota does that
            self._spent.add(unit.source)
        return outcome

    def table_writer(self) -> Writer:
        """The run's table stage converts on the workers: one task per (table, date) partition
        streams its raw objects into Parquet data files in the warehouse (which every worker
        must reach, like the lake) and returns their descriptions; the refresh, in a thread of
        this process, fits the schemas and makes the one commit per table."""
        loop = asyncio.get_running_loop()

        def write(works: list[PartitionWork]) -> list[Written]:
            return asyncio.run_coroutine_threadsafe(self._write_partitions(works), loop).result()

        return write

    async def _write_partitions(self, works: list[PartitionWork]) -> list[Written]:
        from apilake.tables.refresh import Written

        assert self._client is not None, "use the executor as `async with executor:`"
        futures = [
            self._client.submit(
                partition_task,
                self.dest.url,
                Sealed(self.job.s3),
                Sealed(work),
                key=f"apilake_table-{self.run_id}-{next(self._numbers)}",
                pure=False,
                retries=TASK_RETRIES,
            )
            for work in works
        ]
        self._inflight.update(futures)
        written = []
        for work, future in zip(works, futures, strict=True):
            try:
                written.append(await future)
            except asyncio.CancelledError:
                raise  # as a unit's: `_close` cancels what is left on the cluster
            except Exception as exc:  # noqa: BLE001 - one partition's failure, not the table's
                written.append(Written(work.partition.date, failed=self.redact(f"its conversion on the Dask cluster failed: {exc}")))
            self._inflight.discard(future)
        return written


# ---------------------------------------------------------------------------------------------
# the worker side


def partition_task(dest_url: str, s3: Sealed[Any], work: Sealed[PartitionWork]) -> Written:
    """Dask task: one table partition's raw objects into Parquet data files (`tables.refresh`)."""
    from apilake.tables import raw_opener
    from apilake.tables.refresh import write_partition

    return write_partition(work.value, raw_opener(s3.value, dest_url))


Recorded = dict[str, int]  # the size the run records say landed under the task's key, if any


def unit_task(payload: RunPayload, sealed: Sealed[tuple[Unit, None, Recorded]]) -> TaskOutcome:
    """Dask task: one JSON unit, or one bulk listing (whose files come back as metadata)."""
    unit, _, recorded = sealed.value
    return _run_task(payload, unit, (result_kind(unit.kind), unit.id, unit.request_url), lambda work: work.unit(unit), recorded)


def file_task(payload: RunPayload, sealed: Sealed[tuple[Unit, FileTransfer, Recorded]]) -> TaskOutcome:
    """Dask task: one file of a listing."""
    unit, transfer, recorded = sealed.value

    async def land(work: UnitWork) -> tuple[UnitResult, list[FileTransfer]]:
        return await work.file(unit, transfer), []

    return _run_task(payload, unit, ("file", transfer.unit, transfer.url), land, recorded)


_RUNS: dict[str, _WorkerRun] = {}
_RUNS_LOCK = threading.Lock()


def _run_task(
    payload: RunPayload,
    unit: Unit,
    what: tuple[ResultKind, str, str],
    action: Callable[[UnitWork], Awaitable[tuple[UnitResult, list[FileTransfer]]]],
    recorded: Recorded,
) -> TaskOutcome:
    """Run one unit's work on a short asyncio loop of this task's thread."""
    worker = get_worker()
    key = worker.get_current_task()
    with _RUNS_LOCK:
        run = _RUNS.get(payload.run_id)
        if run is None:
            run = _RUNS[payload.run_id] = _WorkerRun(worker, payload)
    redact = Redactor(payload.job.secrets())
    with _captured_logs(redact, payload.log_level) as lines:
        result, files = asyncio.run(run.execute(payload, redact, unit, what, action, key, recorded))
    return TaskOutcome(result, files, lines, worker.address)


class _WorkerRun:
    """One run as seen by one worker process: destination, semaphores, what is known spent."""

    def __init__(self, worker: distributed.Worker, payload: RunPayload) -> None:
        self.worker = worker
        self.loop = cast("BaseAsyncIOLoop", worker.loop).asyncio_loop  # tornado's IOLoop runs on asyncio
        self.run_id = payload.run_id
        self.dest = open_destination(payload.dest_url, payload.job.s3)
        self.quotas = Quotas(payload.job, self.dest)
        self.tokens = token_store(payload.job, self.dest)
        self.spent: set[str] = set()
        self._dest_checked = False
        self._semaphores: dict[str, Semaphore] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._releases: set[asyncio.Future[Any]] = set()

    async def execute(
        self,
        payload: RunPayload,
        redact: Redactor,
        unit: Unit,
        what: tuple[ResultKind, str, str],
        action: Callable[[UnitWork], Awaitable[tuple[UnitResult, list[FileTransfer]]]],
        key: Any,
        recorded: Recorded,
    ) -> tuple[UnitResult, list[FileTransfer]]:
        kind, unit_id, url = what
        source = payload.source
        client = SourceClient(source, redact, ClusterBudget(source, payload.limits, self), self.tokens)
        try:
            await self._check_destination()
            work = UnitWork(self.dest, redact, payload.force, endpoints(payload.job), {source.name: client}, recorded)
            return await self._unless_cancelled(action(work), key)
        except asyncio.CancelledError:
            return UnitResult.for_unit(unit, "interrupted", unit_id=unit_id, kind=kind, error="cancelled"), []
        except DestinationError as exc:
            return failed(unit, kind, unit_id, exc, url, redact), []
        finally:
            await client.close()

    async def _check_destination(self) -> None:
        """The run record the client wrote must be visible here: else this worker would land
        objects in a folder nobody else sees (a local path that is not a shared mount)."""
        if self._dest_checked:
            return
        if await self.dest.stat(record_key(self.run_id)) is None:
            raise DestinationError(
                f"worker {self.worker.address} does not see this run's record in {self.dest.url}: with the dask "
                "executor, a folder destination must be shared by every worker at the same path (or use s3://)"
            )
        self._dest_checked = True

    async def _unless_cancelled(self, work: Awaitable[T], key: Any) -> T:
        """Run `work`, dropping it (and its in-flight transfer) if the client cancels the task."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=CANCEL_POLL_S)
            if done:
                return task.result()
            state = self.worker.state.tasks.get(key)
            if state is None or state.state in ("cancelled", "released", "forgotten"):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise asyncio.CancelledError

    # -- the semaphores live on the worker's own event loop, where Dask expects them --------

    async def _on_worker_loop(self, call: Callable[[], Awaitable[T]]) -> T:
        async def run() -> T:
            return await call()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self.loop))

    def _semaphore(self, name: str, leases: int) -> Semaphore:
        sem = self._semaphores.get(name)
        if sem is None:
            sem = self._semaphores[name] = Semaphore(max_leases=leases, name=name, scheduler_rpc=self.worker.scheduler, loop=self.worker.loop)
            sem.refresh_leases = False  # leases end by release or by the timeout the client registered
        return sem

    async def take(self, name: str, leases: int) -> bool:
        """Take one lease of a rate semaphore, waiting for it."""
        return await self._on_worker_loop(lambda: self._semaphore(name, leases).acquire())

    async def take_quota(self, source: Source) -> None:
        """Count one request against the source's daily quota (its ledger), on the worker's loop:
        the reserved block is the worker's, shared by all of its tasks."""

        async def take() -> None:
            quota = self.quotas.get(source)  # on the loop: tasks' threads never race to create it
            if quota is not None:
                await quota.take()

        await self._on_worker_loop(take)

    def give_back_later(self, name: str, delay: float) -> None:
        """Return one lease of `name` after `delay` seconds (on the worker's loop, which outlives the task)."""

        def release() -> None:
            future = asyncio.ensure_future(self._semaphores[name].release())
            self._releases.add(future)
            future.add_done_callback(self._releases.discard)

        def schedule() -> None:
            def fire() -> None:
                self._timers.discard(handle)
                release()

            handle = self.loop.call_later(delay, fire)
            self._timers.add(handle)

        self.loop.call_soon_threadsafe(schedule)

    async def close(self) -> None:
        """The run is over: give every lease back now, stop refreshing, close the destination."""
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()
        with contextlib.suppress(Exception):
            await self.quotas.close()  # unused reservations go back to the ledger
        for sem in self._semaphores.values():
            if hasattr(sem, "refresh_callback"):
                sem.refresh_callback.stop()
            while sem._leases:
                with contextlib.suppress(Exception):
                    await sem.release()
        with contextlib.suppress(Exception):
            if self.tokens is not self.dest:
                await self.tokens.close()
        with contextlib.suppress(Exception):
            await self.dest.close()


class ClusterBudget:
    """A source's `Budget` kept on the scheduler, so every worker draws from the same counts."""

    def __init__(self, source: Source, limits: SourceLimits, run: _WorkerRun) -> None:
        self.source = source
        self.limits = limits
        self.run = run

    @property
    def spent(self) -> bool:
        return self.limits.source in self.run.spent

    async def acquire(self) -> None:
        limits = self.limits
        if self.spent:
            raise DailyQuotaSpent.of(self.source)
        try:
            await self.run.take_quota(self.source)
        except DailyQuotaSpent:
            self.run.spent.add(limits.source)
            raise
        for name, calls, _seconds in limits.windows:
            await self.run.take(name, calls)
        # Counted from when every lease is held, i.e. just before the request goes out.
        for name, _calls, seconds in limits.windows:
            self.run.give_back_later(name, hold_seconds(seconds))


async def _forget_run(run_id: str, dask_worker: distributed.Worker | None = None) -> None:
    """Run on every worker's loop at the end of a run (`Client.run`)."""
    with _RUNS_LOCK:
        run = _RUNS.pop(run_id, None)
    if run is not None:
        await run.close()


# ---------------------------------------------------------------------------------------------
# log lines of a task: captured on the worker, logged by the client


class _TaskLogs(logging.Handler):
    """Collects the `apilake` log lines of the task running in the current thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        target = getattr(self.local, "target", None)
        if target is None or record.levelno < target[1]:
            return
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        target[2].append((record.levelno, target[0](message)))


_HANDLER = _TaskLogs()


@contextlib.contextmanager
def _captured_logs(redact: Redactor, level: int) -> Iterator[list[tuple[int, str]]]:
    logger = logging.getLogger("apilake")
    with _RUNS_LOCK:
        if _HANDLER not in logger.handlers:
            if not logger.handlers:  # a plain worker process: apilake lines go to the client only
                logger.propagate = False
                logger.setLevel(logging.DEBUG)
            logger.addHandler(_HANDLER)
    lines: list[tuple[int, str]] = []
    _HANDLER.local.target = (redact, level, lines)
    try:
        yield lines
    finally:
        _HANDLER.local.target = None
