"""A run as a library call: `run_job` and `arun_job` leave the process as they found it, and a
long-lived scheduler's memory stays flat over many runs (against the emulator on loopback)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import os
import signal
import threading
from pathlib import Path

import pytest

from apilake.emulator import Emulator
from apilake.jobfile import Job, load_job
from apilake.plan import plan
from apilake.runner import arun_job, run_job
from apilake.schedule import Scheduler
from conftest import TOKEN, records, write_job
from history import COUNTRIES

DATE = dt.date(2026, 11, 25)


def tiny_job(tmp_path: Path, emulator: Emulator, **top: object) -> tuple[Job, str]:
    path = write_job(tmp_path, emulator, [COUNTRIES], timezone="UTC", **top)
    return load_job(str(path)), str(path)


def test_run_job_touches_no_process_state(tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """No signal handler of the caller's is replaced, and nothing is frozen out of the garbage collector."""
    monkeypatch.setenv("DATAAI_TOKEN", TOKEN)
    job, path = tiny_job(tmp_path, emulator)
    mine = lambda signum, frame: None  # noqa: E731 - the caller's own handler
    before = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        frozen = gc.get_freeze_count()
        report = run_job(job, plan(job, [DATE]), job_path=path, dates=[DATE])
        assert report.status == "succeeded" and [r.status for r in report.results] == ["landed"]
        assert gc.get_freeze_count() == frozen
        assert all(signal.getsignal(s) is mine for s in (signal.SIGINT, signal.SIGTERM))
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_arun_job_runs_two_jobs_on_the_caller_s_loop(tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """An async caller awaits runs on its own event loop, two jobs at once; each writes its own record."""
    monkeypatch.setenv("DATAAI_TOKEN", TOKEN)
    jobs = [tiny_job(tmp_path / name, emulator) for name in ("a", "b")]

    async def both() -> list[str]:
        reports = await asyncio.gather(*(arun_job(job, plan(job, [DATE]), job_path=path, dates=[DATE]) for job, path in jobs))
        return [r.status for r in reports]

    assert asyncio.run(both()) == ["succeeded", "succeeded"]
    for name in ("a", "b"):
        assert [r["status"] for r in records(tmp_path / name / "lake")] == ["succeeded"]


FIRES = 200
WARM = 20  # runs before the first measure: imports, caches and pools are filled by then


def held() -> tuple[int, int]:
    """Objects the garbage collector tracks (frozen ones too) and the resident set, after a full collection."""
    gc.collect()
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return len(gc.get_objects()) + gc.get_freeze_count(), pages * os.sysconf("SC_PAGE_SIZE")


def test_the_scheduler_s_memory_stays_flat_over_many_fires(tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 fires of an every-minute schedule in one process, on a clock that jumps a minute per
    wait: after the last run the process holds about what it held after the first few (a run
    that left a few objects behind would add them up run after run)."""
    monkeypatch.setenv("DATAAI_TOKEN", TOKEN)
    job, path = tiny_job(tmp_path, emulator, schedule="* * * * *")
    clock = [dt.datetime(2026, 11, 26, 0, 0, tzinfo=dt.UTC)]
    stop = threading.Event()
    measured: dict[int, tuple[int, int]] = {}
    codes: list[int] = []

    def fire(only: list[str] | None, run_date: dt.date) -> int:
        codes.append(run_job(job, plan(job, [run_date]), job_path=path, dates=[run_date]).exit_code)
        if len(codes) in (WARM, FIRES):
            measured[len(codes)] = held()
        if len(codes) == FIRES:
            stop.set()
        return codes[-1]

    def sleep(seconds: float) -> None:
        clock[0] += dt.timedelta(minutes=1)

    Scheduler(job, fire, state_path=tmp_path / "state.json", now=lambda: clock[0], sleep=sleep, stop=stop).run_forever()
    assert codes == [0] * FIRES
    assert len(records(tmp_path / "lake")) == FIRES
    (objects, rss), (objects_after, rss_after) = measured[WARM], measured[FIRES]
    assert objects_after - objects < 1000, f"{objects_after - objects} more objects after {FIRES - WARM} more runs"
    assert rss_after - rss < 16 * 2**20, f"the process grew by {(rss_after - rss) / 2**20:.1f} MiB over {FIRES - WARM} runs"
