"""Executors: where units run. `local` (default): this process, one asyncio loop. `dask`: the
workers of a Dask cluster (`pip install 'apilake[dask]'`).

Both run the same per-unit code (`work.UnitWork`) under the same admission rules
(`base.Executor`); they differ only in where a unit's work happens.
"""

from __future__ import annotations

import os
from typing import Protocol

from apilake.destinations import Destination
from apilake.errors import JobFileError, MissingExtraError
from apilake.executors.base import Executor, OnResult
from apilake.executors.local import LocalExecutor
from apilake.jobfile import Job
from apilake.redact import Redactor

__all__ = ["Executor", "ExecutorFactory", "LocalExecutor", "OnResult", "executor_factory"]

DASK_HINT = "pip install 'apilake[dask]'"


class ExecutorFactory(Protocol):
    def __call__(self, job: Job, dest: Destination, redact: Redactor, *, force: bool, on_result: OnResult, run_id: str) -> Executor: ...


def executor_factory(job: Job, executor: str | None = None, scheduler: str | None = None) -> ExecutorFactory:
    """The executor a run asked for: option (`--scheduler` implies dask), else the job file
    (or its profile), else local.

    Checked before anything is touched: a missing extra or scheduler address fails the run at
    once (exit 2), not after the lock, the record or a request.
    """
    kind = executor or ("dask" if scheduler else job.executor)  # --scheduler alone means dask
    if kind == "local":
        return _local
    if kind != "dask":
        raise JobFileError(f"--executor {kind}: unknown executor (local or dask)")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise MissingExtraError(f"the dask executor needs the optional Dask dependencies, which are not installed: {DASK_HINT}") from None
    address = scheduler or job.scheduler_address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not address:
        raise JobFileError(
            "the dask executor needs a scheduler address: --scheduler tcp://HOST:8786, `scheduler_address:` in the job file, or $DASK_SCHEDULER_ADDRESS"
        )
    from apilake.executors.dask import DaskExecutor

    def dask(job: Job, dest: Destination, redact: Redactor, *, force: bool, on_result: OnResult, run_id: str) -> Executor:
        return DaskExecutor(job, dest, redact, force=force, on_result=on_result, address=address, run_id=run_id)

    return dask


def _local(job: Job, dest: Destination, redact: Redactor, *, force: bool, on_result: OnResult, run_id: str) -> Executor:
    return LocalExecutor(job, dest, redact, force=force, on_result=on_result)
