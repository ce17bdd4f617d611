"""Schedules: fire times in the job's zone (DST included), the Scheduler on a fake clock, `apilake cron`."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from apilake.errors import JobFileError
from apilake.jobfile import Job
from apilake.schedule import Schedule, Scheduler, convert_expression, fire_times, job_schedules, next_fire

UTC = dt.UTC
APILAKE = Path(sys.executable).parent / "apilake"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def make_job(timezone: str = "Asia/Seoul", schedule: str | None = "5 9 * * *", catch_up: int = 1, **endpoint_schedules: str) -> Job:
    endpoints: list[dict[str, Any]] = [{"name": n, "kind": "json", "path": f"/{n}"} for n in ("a", "b")]
    for endpoint in endpoints:
        if endpoint["name"] in endpoint_schedules:
            endpoint["schedule"] = endpoint_schedules[endpoint["name"]]
    return Job.model_validate(
        {
            "timezone": timezone,
            "schedule": schedule,
            "catch_up": catch_up,
            "sources": [{"name": "src", "base_url": "http://127.0.0.1:1", "endpoints": endpoints}],
        }
    )


# ---------------------------------------------------------------------------------------------
# fire times


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        ("Asia/Seoul", utc(2026, 11, 25, 0, 0), [utc(2026, 11, 25, 0, 5), utc(2026, 11, 26, 0, 5)]),
        ("UTC", utc(2026, 11, 25, 0, 0), [utc(2026, 11, 25, 9, 5), utc(2026, 11, 26, 9, 5)]),
        # 09:05 Seoul already passed at 00:10Z: the next one is tomorrow's
        ("Asia/Seoul", utc(2026, 11, 25, 0, 10), [utc(2026, 11, 26, 0, 5), utc(2026, 11, 27, 0, 5)]),
    ],
)
def test_fire_times_in_the_jobs_zone(zone: str, after: dt.datetime, expected: list[dt.datetime]) -> None:
    fires = fire_times("5 9 * * *", zone, after, after + dt.timedelta(days=2))
    assert fires == expected
    assert all(f.tzinfo is not None and str(f.tzinfo) == zone for f in fires)
    assert next_fire("5 9 * * *", zone, after) == expected[0]


@pytest.mark.parametrize(
    ("zone", "expression", "after", "until", "expected"),
    [
        # spring forward: 02:30 does not exist on 2026-03-08 in New York; fires once at 03:00 EDT
        ("America/New_York", "30 2 * * *", utc(2026, 3, 7, 12), utc(2026, 3, 9, 12), ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
        # every 30 min through the gap: 02:00 and 02:30 collapse into 03:00, which fires once
        (
            "America/New_York",
            "*/30 * * * *",
            utc(2026, 3, 8, 6, 15),
            utc(2026, 3, 8, 7, 45),
            ["2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"],
        ),
        # fall back: 01:30 happens twice on 2026-11-01; fires once, at the first (EDT)
        ("America/New_York", "30 1 * * *", utc(2026, 10, 31, 12), utc(2026, 11, 2, 12), ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
        ("Europe/Berlin", "30 2 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 30, 12), ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
        ("Europe/Berlin", "30 2 * * *", utc(2026, 10, 24, 12), utc(2026, 10, 26, 12), ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    ],
)
def test_dst_gap_and_overlap_fire_once(zone: str, expression: str, after: dt.datetime, until: dt.datetime, expected: list[str]) -> None:
    assert [f.isoformat() for f in fire_times(expression, zone, after, until)] == expected


def test_fire_after_the_second_occurrence_of_an_ambiguous_time_does_not_refire() -> None:
    second = dt.datetime(2026, 11, 1, 1, 20, fold=1, tzinfo=ZoneInfo("America/New_York"))  # 01:20 EST
    assert next_fire("30 1 * * *", "America/New_York", second).isoformat() == "2026-11-02T01:30:00-05:00"


def test_impossible_expression_never_fires() -> None:
    with pytest.raises(JobFileError, match="never fires"):
        next_fire("0 0 30 2 *", "UTC", utc(2026, 1, 1))


# ---------------------------------------------------------------------------------------------
# which schedules a job has


def test_job_schedule_covers_all_endpoints() -> None:
    assert job_schedules(make_job()) == [Schedule("5 9 * * *", None)]
    assert job_schedules(make_job(schedule=None)) == []


def test_endpoint_schedule_runs_only_that_endpoint() -> None:
    job = make_job(b="0 * * * *")
    assert job_schedules(job) == [Schedule("5 9 * * *", ("a",)), Schedule("0 * * * *", ("b",))]
    # same expression as the job's: grouped back into one schedule for everything
    assert job_schedules(make_job(b="5 9 * * *")) == [Schedule("5 9 * * *", None)]
    # no job-level schedule: only the endpoint with its own runs
    assert job_schedules(make_job(schedule=None, a="0 3 * * *")) == [Schedule("0 3 * * *", ("a",))]


# ---------------------------------------------------------------------------------------------
# the scheduler on a fake clock


class FakeClock:
    """Time moves only when the scheduler sleeps or a run 'takes' time; stops after `end`."""

    def __init__(self, start: dt.datetime, end: dt.datetime, stop: threading.Event) -> None:
        self.t = start
        self.end = end
        self.stop = stop
        self.sleeps = 0

    def now(self) -> dt.datetime:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.t += dt.timedelta(seconds=seconds)
        if self.t > self.end:
            self.stop.set()


class Recorder:
    def __init__(self, clock: FakeClock, takes: dt.timedelta = dt.timedelta(minutes=1), code: int = 0) -> None:
        self.clock = clock
        self.takes = takes
        self.code = code
        self.calls: list[tuple[dt.datetime, list[str] | None, dt.date]] = []
        self.running = False

    def __call__(self, only: list[str] | None, run_date: dt.date) -> int:
        assert not self.running, "a run started while another was going"
        self.running = True
        self.calls.append((self.clock.now(), only, run_date))
        self.clock.t += self.takes
        if self.clock.t > self.clock.end:
            self.clock.stop.set()
        self.running = False
        return self.code


def scheduler(job: Job, start: dt.datetime, end: dt.datetime, state: Path, **run: Any) -> tuple[Scheduler, Recorder]:
    stop = threading.Event()
    clock = FakeClock(start, end, stop)
    recorder = Recorder(clock, **run)
    return Scheduler(job, recorder, state_path=state, now=clock.now, sleep=clock.sleep, stop=stop, max_sleep_seconds=3600), recorder


def test_fires_on_time_for_yesterday_in_the_jobs_zone(tmp_path: Path) -> None:
    sched, rec = scheduler(make_job(), utc(2026, 11, 25, 0, 0), utc(2026, 11, 27, 12), tmp_path / "state.json")
    sched.run_forever()
    assert rec.calls == [
        (utc(2026, 11, 25, 0, 5), None, dt.date(2026, 11, 24)),  # 09:05 KST on the 25th → run date the 24th
        (utc(2026, 11, 26, 0, 5), None, dt.date(2026, 11, 25)),
        (utc(2026, 11, 27, 0, 5), None, dt.date(2026, 11, 26)),
    ]
    state = json.loads((tmp_path / "state.json").read_text())
    assert list(state["last_fire"].values()) == ["2026-11-27T09:05:00+09:00"]


def test_endpoint_schedules_fire_separately_with_only(tmp_path: Path) -> None:
    job = make_job(timezone="UTC", schedule="0 6 * * *", b="30 */12 * * *")
    sched, rec = scheduler(job, utc(2026, 11, 25, 0, 0), utc(2026, 11, 25, 23), tmp_path / "s.json")
    sched.run_forever()
    assert [(t.strftime("%H:%M"), only) for t, only, _ in rec.calls] == [("00:30", ["b"]), ("06:00", ["a"]), ("12:30", ["b"])]


def test_a_run_never_overlaps_and_overrun_fires_are_missed(tmp_path: Path) -> None:
    job = make_job(timezone="UTC", schedule="*/10 * * * *", catch_up=0)
    sched, rec = scheduler(job, utc(2026, 11, 25, 0, 0), utc(2026, 11, 25, 1, 20), tmp_path / "s.json", takes=dt.timedelta(minutes=25))
    sched.run_forever()
    starts = [t for t, _, _ in rec.calls]
    assert [t.strftime("%H:%M") for t in starts] == ["00:10", "00:40", "01:10"]  # 00:20, 00:30, 00:50, 01:00 missed
    assert all(b - a >= dt.timedelta(minutes=25) for a, b in itertools.pairwise(starts))


def test_overrun_with_catch_up_makes_up_the_latest_missed_fire(tmp_path: Path) -> None:
    job = make_job(timezone="UTC", schedule="0 * * * *", catch_up=1)
    sched, rec = scheduler(job, utc(2026, 11, 25, 0, 30), utc(2026, 11, 25, 3, 30), tmp_path / "s.json", takes=dt.timedelta(minutes=150))
    sched.run_forever()
    # 01:00 runs until 03:30; of the missed 02:00 and 03:00 only 03:00 is made up, right away
    assert [t.strftime("%H:%M") for t, _, _ in rec.calls] == ["01:00", "03:30"]


@pytest.mark.parametrize(
    ("catch_up", "expected"), [(0, []), (2, [dt.date(2026, 11, 23), dt.date(2026, 11, 24)]), (9, [dt.date(2026, 11, d) for d in range(20, 25)])]
)
def test_catch_up_after_downtime_from_the_state_file(tmp_path: Path, catch_up: int, expected: list[dt.date]) -> None:
    job = make_job(catch_up=catch_up)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"last_fire": {"5 9 * * * | *": "2026-11-20T09:05:00+09:00"}}))
    # down until 12:00 KST on the 25th: fires of the 21st..25th were missed
    sched, rec = scheduler(job, utc(2026, 11, 25, 3, 0), utc(2026, 11, 25, 12), state)
    sched.run_forever()
    assert [run_date for _, _, run_date in rec.calls] == expected  # oldest first, at most catch_up
    assert all(t == utc(2026, 11, 25, 3, 0) + i * dt.timedelta(minutes=1) for i, (t, _, _) in enumerate(rec.calls))
    assert json.loads(state.read_text())["last_fire"]["5 9 * * * | *"] == "2026-11-25T09:05:00+09:00"


def test_first_start_without_state_catches_up_nothing(tmp_path: Path) -> None:
    sched, rec = scheduler(make_job(catch_up=5), utc(2026, 11, 25, 3, 0), utc(2026, 11, 25, 12), tmp_path / "new" / "s.json")
    sched.run_forever()
    assert rec.calls == []
    assert (tmp_path / "new" / "s.json").exists()


def test_stop_event_stops_the_loop(tmp_path: Path) -> None:
    sched, rec = scheduler(make_job(timezone="UTC", schedule="* * * * *"), utc(2026, 11, 25), utc(2026, 12, 25), tmp_path / "s.json")
    original = rec.__call__

    def run_then_stop(only: list[str] | None, run_date: dt.date) -> int:
        code = original(only, run_date)
        if len(rec.calls) == 3:
            sched.stop.set()
        return code

    sched.run = run_then_stop
    sched.run_forever()
    assert len(rec.calls) == 3 and not sched.interrupted
    sched.run_forever()  # already stopped: returns at once
    assert len(rec.calls) == 3


def test_interrupted_run_stops_and_stays_unhandled(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    sched, rec = scheduler(make_job(), utc(2026, 11, 25, 0, 0), utc(2026, 11, 28), state, code=130)
    sched.run_forever()
    assert len(rec.calls) == 1 and sched.interrupted
    assert json.loads(state.read_text())["last_fire"]["5 9 * * * | *"] == "2026-11-25T00:00:00+00:00"  # the start, not the fire


# ---------------------------------------------------------------------------------------------
# crontab conversion


@pytest.mark.parametrize(
    ("expression", "job_zone", "host", "expected"),
    [
        ("5 9 * * *", "Asia/Seoul", "UTC", ["5 0 * * *"]),
        ("0 2 * * 1", "Asia/Seoul", "UTC", ["0 17 * * 0"]),  # Monday 02:00 KST = Sunday 17:00 UTC
        ("*/15 9-17 * * 1-5", "Asia/Seoul", "UTC", ["*/15 0-8 * * 1-5"]),
        ("30 9 * * *", "Asia/Kolkata", "UTC", ["0 4 * * *"]),
        ("30 2 * * *", "Europe/Berlin", "UTC", None),  # CET/CEST vs UTC: no fixed equivalent
        ("0 1 1 * *", "Asia/Seoul", "UTC", None),  # the 1st at 01:00 KST is the last of the month in UTC
        ("0 3 * * *", "America/Chicago", "America/New_York", None),  # switch at different instants
    ],
)
def test_convert_expression(expression: str, job_zone: str, host: str, expected: list[str] | None) -> None:
    lines, why = convert_expression(expression, ZoneInfo(job_zone), ZoneInfo(host), utc(2026, 11, 26))
    assert lines == expected
    assert bool(why) == (expected is None)


def write_job(tmp_path: Path, zone: str, schedule: str, extra: str = "") -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        f"timezone: {zone}\nschedule: '{schedule}'\n"
        "sources:\n  - name: src\n    base_url: http://127.0.0.1:1\n    endpoints:\n"
        "      - {name: a, kind: json, path: /a}\n"
        f"      - {{name: b, kind: json, path: /b{extra}}}\n"
        "profiles:\n  prod: {destination: /tmp/prod-lake}\n"
    )
    return path


def cron(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(APILAKE), "cron", *args], capture_output=True, text=True, timeout=60)


def test_cron_converts_a_seoul_schedule_to_a_utc_host(tmp_path: Path) -> None:
    job = write_job(tmp_path, "Asia/Seoul", "5 9 * * *", extra=", schedule: '0 2 * * 1'")
    result = cron(str(job), "--host-timezone", "UTC", "--profile", "prod")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    daily = next(line for line in lines if line.startswith("5 0 * * * "))
    assert daily.endswith(f"run {job.resolve()} --profile prod --only a")
    assert "# 09:05 Asia/Seoul = 00:05 UTC (host zone); only a" in lines
    weekly = next(line for line in lines if line.startswith("0 17 * * 0 "))
    assert weekly.endswith("--profile prod --only b")
    assert any("spec.timeZone: Asia/Seoul" in line for line in lines)
    assert not any(line.startswith("CRON_TZ=") for line in lines)


def test_cron_falls_back_to_cron_tz_when_dst_differs(tmp_path: Path) -> None:
    job = write_job(tmp_path, "Europe/Berlin", "30 2 * * *")
    result = cron(str(job), "--host-timezone", "UTC")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    tz = lines.index("CRON_TZ=Europe/Berlin")
    line = next(line for line in lines[tz:] if line.startswith("30 2 * * * "))
    assert line.endswith(f"run {job.resolve()}")  # one schedule for all endpoints: no --only
    assert any("no exact equivalent in UTC" in line for line in lines)


def test_cron_without_a_schedule_is_a_usage_error(tmp_path: Path) -> None:
    job = write_job(tmp_path, "UTC", "5 9 * * *")
    job.write_text(job.read_text().replace("schedule: '5 9 * * *'\n", ""))
    result = cron(str(job), "--host-timezone", "UTC")
    assert result.returncode == 2
    assert "no `schedule:`" in result.stderr


def test_health_is_ok_while_the_loop_ticks_or_a_run_is_in_progress(tmp_path: Path) -> None:
    clock = [utc(2026, 11, 26, 0, 0)]
    sched = Scheduler(make_job(), lambda only, date: 0, state_path=tmp_path / "s.json", now=lambda: clock[0], max_sleep_seconds=60)
    assert sched.health()[0] is False  # the loop has not started
    sched.last_tick = clock[0]
    clock[0] += dt.timedelta(seconds=100)
    ok, detail = sched.health()
    assert ok and detail == {"status": "ok", "last_tick": "2026-11-26T00:00:00+00:00", "seconds_since_tick": 100.0, "running_since": None}
    clock[0] += dt.timedelta(seconds=100)  # 200 s without a tick: the loop is stuck
    assert sched.health() == (False, {**detail, "status": "stalled", "seconds_since_tick": 200.0})
    sched.running_since = clock[0] - dt.timedelta(hours=1)  # a long run: the loop waits for it, alive
    assert sched.health()[0] is True
    sched.stop.set()
    assert sched.health()[1]["status"] == "stopped"
