"""Schedules: when a job (or some of its endpoints) runs, and a small in-process scheduler.

Cron expressions are read on the wall clock of the job's IANA `timezone`. Around DST changes:
a time that does not exist (spring forward) fires once, at the first instant after the gap; a
time that happens twice (fall back) fires once, at its first occurrence. Every function takes
the clock as an argument, so all of this is testable without waiting.

The `Scheduler` runs fires one after another (a run never overlaps another), remembers the
last fire it handled per schedule in a small JSON state file, and after downtime (or a run
that overran later fires) makes up at most `catch_up` of the missed fires, oldest first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shlex
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from apilake.dates import default_run_date
from apilake.errors import ExitCode, JobFileError, StateFileError
from apilake.jobfile import Job

log = logging.getLogger("apilake")

UTC = dt.UTC
_MARGIN = dt.timedelta(hours=3)  # > any DST shift, so walls just before `after` are reconsidered


# ---------------------------------------------------------------------------------------------
# fire times


def to_instant(wall: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """The aware instant of a naive wall-clock time in `zone`: gap → end of the gap, overlap → first."""
    first = wall.replace(tzinfo=zone, fold=0)
    utc = first.astimezone(UTC)
    if _wall(utc, zone) == wall:
        return utc.astimezone(zone)  # exists; when ambiguous, fold=0 is the first occurrence
    # `wall` falls in a gap: the two folds give the offsets before and after the transition.
    ends = sorted([utc, wall.replace(tzinfo=zone, fold=1).astimezone(UTC)])
    lo, hi = int(ends[0].timestamp()), int(ends[1].timestamp()) + 1
    if not (_wall(_utc(lo), zone) < wall <= _wall(_utc(hi), zone)):
        return utc.astimezone(zone)
    while hi - lo > 1:  # the first whole second whose wall time is at or after `wall`
        mid = (lo + hi) // 2
        if _wall(_utc(mid), zone) >= wall:
            hi = mid
        else:
            lo = mid
    return _utc(hi).astimezone(zone)


def _utc(timestamp: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, UTC)


def _wall(instant: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def iter_fires(expression: str, timezone: str | dt.tzinfo, after: dt.datetime) -> Iterator[dt.datetime]:
    """Every fire strictly after `after` (aware), in order, as aware datetimes in the zone."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    zone = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    cron = croniter(expression, _wall(after, zone) - _MARGIN)
    # Compare in UTC: Python compares two datetimes of the same tzinfo on the wall clock, fold ignored.
    floor = after.astimezone(UTC)
    while True:
        try:
            wall = cron.get_next(dt.datetime)
        except CroniterBadDateError:
            return
        instant = to_instant(wall, zone)
        if instant.astimezone(UTC) <= floor:
            continue
        floor = instant.astimezone(UTC)
        yield instant


def fire_times(expression: str, timezone: str | dt.tzinfo, after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    """The fires in (after, until]."""
    fires = []
    until = until.astimezone(UTC)
    for fire in iter_fires(expression, timezone, after):
        if fire.astimezone(UTC) > until:
            break
        fires.append(fire)
    return fires


def next_fire(expression: str, timezone: str | dt.tzinfo, after: dt.datetime) -> dt.datetime:
    for fire in iter_fires(expression, timezone, after):
        return fire
    raise JobFileError(f"schedule {expression!r} never fires")


# ---------------------------------------------------------------------------------------------
# which schedules a job has


@dataclass(frozen=True, slots=True)
class Schedule:
    """One cron expression and what it runs: `only=None` is the whole job, else `--only` names."""

    expression: str
    only: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        return f"{self.expression} | {','.join(self.only) if self.only else '*'}"

    def describe(self) -> str:
        return "all endpoints" if self.only is None else "only " + ", ".join(self.only)


def job_schedules(job: Job) -> list[Schedule]:
    """The job-level `schedule` covers every endpoint without its own; endpoints are grouped by expression."""
    groups: dict[str, list[tuple[str, str]]] = {}
    everything = [(s.name, e.name) for s in job.sources for e in s.endpoints]
    for source in job.sources:
        for endpoint in source.endpoints:
            expression = endpoint.schedule or job.schedule
            if expression is not None:
                groups.setdefault(expression, []).append((source.name, endpoint.name))
    schedules = []
    for expression, members in groups.items():
        if len(members) == len(everything):
            schedules.append(Schedule(expression))
            continue
        names: list[str] = []
        for source in job.sources:
            mine = [e.name for e in source.endpoints if (source.name, e.name) in members]
            names += [source.name] if len(mine) == len(source.endpoints) else mine
        names = list(dict.fromkeys(names))
        selected = {(s.name, e.name) for s in job.sources for e in s.endpoints if e.name in names or s.name in names}
        if selected != set(members):
            extra = sorted(f"{s}/{e}" for s, e in selected - set(members))
            raise JobFileError(
                f"schedule {expression!r}: `--only {' '.join(names)}` would also run {', '.join(extra)} "
                "(a name shared by several sources or endpoints); rename one of them"
            )
        schedules.append(Schedule(expression, tuple(names)))
    return schedules


# ---------------------------------------------------------------------------------------------
# the scheduler

RunFn = Callable[[list[str] | None, dt.date], int]


def default_state_path(job_path: str | Path, destination: str) -> Path:
    """$XDG_STATE_HOME/apilake (default ~/.local/state/apilake)/schedule-<hash of job path + destination>.json."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "apilake"
    digest = hashlib.sha256(f"{Path(job_path).resolve()}\n{destination}".encode()).hexdigest()[:20]
    return base / f"schedule-{digest}.json"


class Scheduler:
    """Fires the job's schedules on time, one run at a time, with catch-up after downtime.

    `now` is the clock (aware datetimes), `sleep(seconds)` waits (default: the stop event's
    wait, so a stop wakes it). A run returning exit code 130 (interrupted by a signal: the
    CLI's handlers interrupt a run while it goes) stops the scheduler (`interrupted` is then True) and leaves that fire
    unhandled, so the next start makes it up (if `catch_up` allows). A run that raises is logged
    and counts as handled.
    """

    def __init__(
        self,
        job: Job,
        run: RunFn,
        *,
        state_path: str | Path,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC),
        sleep: Callable[[float], object] | None = None,
        stop: threading.Event | None = None,
        schedules: Sequence[Schedule] | None = None,
        grace_seconds: float = 60.0,
        max_sleep_seconds: float = 60.0,
    ) -> None:
        self.job = job
        self.run = run
        self.state_path = Path(state_path)
        self.now = now
        self.stop = stop or threading.Event()
        self.sleep = sleep or self.stop.wait
        self.schedules = list(schedules if schedules is not None else job_schedules(job))
        self.grace = dt.timedelta(seconds=grace_seconds)
        self.max_sleep = max_sleep_seconds  # re-read the wall clock regularly (suspend, NTP steps)
        self.zone = ZoneInfo(job.timezone)
        self.last: dict[str, dt.datetime] = {}
        self.interrupted = False  # a run was stopped by a signal: the CLI exits 130
        self.last_tick: dt.datetime | None = None  # the loop's last wake-up or finished run (health checks)
        self.running_since: dt.datetime | None = None  # the start of the run in progress, if any

    # -- state ---------------------------------------------------------------------------------
    def _load(self) -> dict[str, dt.datetime]:
        try:
            raw = json.loads(self.state_path.read_text(encoding="utf-8"))
            return {k: dt.datetime.fromisoformat(v) for k, v in raw.get("last_fire", {}).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.warning("scheduler state %s is unreadable (%s); starting afresh", self.state_path, exc)
            return {}

    def _save(self) -> None:
        doc: dict[str, Any] = {"last_fire": {k: v.isoformat() for k, v in self.last.items()}}
        temp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
            os.replace(temp, self.state_path)
        except OSError as exc:
            raise StateFileError(f"scheduler state {self.state_path}: cannot write it ({exc.strerror or exc}); choose another --state-file") from None

    # -- loop ----------------------------------------------------------------------------------
    def upcoming(self, after: dt.datetime | None = None) -> list[tuple[Schedule, dt.datetime]]:
        after = after or self.now()
        return [(s, next_fire(s.expression, self.zone, after)) for s in self.schedules]

    def run_forever(self) -> None:
        """Until `stop` is set. First start (no state for a schedule): nothing counts as missed."""
        if not self.schedules:
            raise JobFileError("the job has no `schedule:` (at the top level or on an endpoint)")
        saved = self._load()
        start = self.now()
        self.last = {s.key: saved.get(s.key, start) for s in self.schedules}
        self._save()
        while not self.stop.is_set():
            now = self.last_tick = self.now()
            due = self._due(now)
            if due:
                for fire, schedule, late in due:
                    if self.stop.is_set():
                        break
                    self._fire(schedule, fire, late)
                continue
            soonest = min(next_fire(s.expression, self.zone, self.last[s.key]).astimezone(UTC) for s in self.schedules)
            self.sleep(min(self.max_sleep, max(0.0, (soonest - now).total_seconds())))
        log.info("scheduler stopped")

    def _due(self, now: dt.datetime) -> list[tuple[dt.datetime, Schedule, bool]]:
        """Fires to run now: the one due on time, plus up to `catch_up` most recent missed ones."""
        due = []
        for schedule in self.schedules:
            fires = fire_times(schedule.expression, self.zone, self.last[schedule.key], now)
            if not fires:
                continue
            on_time = fires[-1:] if now.astimezone(UTC) - fires[-1].astimezone(UTC) <= self.grace else []
            missed = fires[: len(fires) - len(on_time)]
            kept = missed[-self.job.catch_up :] if self.job.catch_up else []
            if len(missed) > len(kept):
                log.warning(
                    "schedule %r (%s): skipping %d missed fire(s) from %s to %s (catch_up: %d)",
                    schedule.expression,
                    schedule.describe(),
                    len(missed) - len(kept),
                    _show(missed[0]),
                    _show(missed[len(missed) - len(kept) - 1]),
                    self.job.catch_up,
                )
            if not kept and not on_time:
                self.last[schedule.key] = fires[-1]
                self._save()
            due += [(f, schedule, True) for f in kept] + [(f, schedule, False) for f in on_time]
        return sorted(due, key=lambda item: item[0].astimezone(UTC))

    def _fire(self, schedule: Schedule, fire: dt.datetime, late: bool) -> None:
        run_date = default_run_date(self.job.timezone, fire)
        log.info(
            "schedule %r (%s): %s fire %s, run date %s",
            schedule.expression,
            schedule.describe(),
            "catch-up" if late else "on-time",
            _show(fire),
            run_date,
        )
        started = self.running_since = self.now()
        try:
            code = self.run(list(schedule.only) if schedule.only else None, run_date)
        except Exception:  # a scheduler outlives one broken run
            log.exception("schedule %r: the run for %s raised", schedule.expression, run_date)
            code = 1
        finally:
            self.running_since, self.last_tick = None, self.now()
        seconds = (self.now() - started).total_seconds()
        if code == ExitCode.INTERRUPTED:  # the run was stopped by SIGINT/SIGTERM: stop too
            log.warning("schedule %r: the run for %s was interrupted; stopping", schedule.expression, run_date)
            self.interrupted = True
            self.stop.set()
            return
        log.info("schedule %r: run for %s finished with exit code %d in %.1fs", schedule.expression, run_date, code, seconds)
        self.last[schedule.key] = fire
        self._save()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Alive when a run is in progress or the loop woke up lately (it wakes at least every `max_sleep`)."""
        now, tick, running = self.now(), self.last_tick, self.running_since
        age = (now - tick).total_seconds() if tick else None
        ok = not self.stop.is_set() and (running is not None or (age is not None and age <= 2 * self.max_sleep + 30))
        return ok, {
            "status": "ok" if ok else "stopped" if self.stop.is_set() else "stalled",
            "last_tick": tick.isoformat() if tick else None,
            "seconds_since_tick": None if age is None else round(age, 3),
            "running_since": running.isoformat() if running else None,
        }

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT set the stop event (main thread only); an in-flight run is the runner's to stop."""

        def handler(signum: int, _frame: object) -> None:
            log.info("%s received: the scheduler stops", signal.Signals(signum).name)
            self.stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, handler)


def _show(instant: dt.datetime) -> str:
    return f"{instant:%Y-%m-%d %H:%M %Z} ({instant.astimezone(UTC):%H:%M} UTC)"


# ---------------------------------------------------------------------------------------------
# crontab lines for the host


def host_zone(name: str | None = None) -> tuple[dt.tzinfo, str]:
    """The host's zone and its label: `name`, else $TZ, else /etc/localtime (link target or file)."""
    for candidate in (name, os.environ.get("TZ", "").lstrip(":") or None):
        if candidate:
            try:
                return ZoneInfo(candidate), candidate
            except (KeyError, ValueError, OSError):
                if candidate is name:
                    raise JobFileError(f"--host-timezone {name!r}: unknown time zone (use an IANA name such as UTC)") from None
    localtime = Path("/etc/localtime")
    try:
        target = os.readlink(localtime)
        if "zoneinfo/" in target:
            label = target.split("zoneinfo/", 1)[1]
            return ZoneInfo(label), label
    except (OSError, KeyError, ValueError):
        pass
    try:
        with localtime.open("rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime"), "localtime"
    except (OSError, ValueError):
        return ZoneInfo("UTC"), "UTC"


def _offsets(job_zone: dt.tzinfo, host: dt.tzinfo, start: dt.datetime, days: int = 800) -> set[int]:
    """Minutes the host's wall clock is ahead of the job's, sampled every 30 min (DST changes included)."""
    seen = set()
    t = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    for _ in range(days * 48):
        h, j = t.astimezone(host).utcoffset(), t.astimezone(job_zone).utcoffset()
        assert h is not None and j is not None
        seen.add(int((h - j).total_seconds() // 60))
        t += dt.timedelta(minutes=30)
    return seen


def _ints(field: list[Any], full: int) -> list[int]:
    return list(range(full)) if field == ["*"] else sorted({int(v) for v in field})


def _render(values: Sequence[int], full: int, original: str | None = None, original_values: list[Any] | None = None) -> str:
    """A cron field for `values`; the job's own text when the set did not change."""
    values = sorted(set(values))
    if original is not None and original_values is not None and values == _ints(original_values, full):
        return original
    if len(values) == full:
        return "*"
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(f"{values[i]}-{values[j]}" if j - i >= 2 else ",".join(map(str, values[i : j + 1])))
        i = j + 1
    return ",".join(parts)


def convert_expression(expression: str, job_zone: dt.tzinfo, host: dt.tzinfo, now: dt.datetime) -> tuple[list[str] | None, str]:
    """Crontab expressions for the host zone firing at exactly the job's instants, or None and why."""
    expanded = croniter(expression).expanded
    if len(expanded) != 5:
        return None, "it has a seconds field, which crontab cannot express"
    offsets = _offsets(job_zone, host, now)
    if len(offsets) != 1:
        return None, "the offset between the two zones changes during the year (DST)"
    shift = offsets.pop()
    text = expression.split()
    original: list[str | None] = list(text) if len(text) == 5 else [None] * 5
    try:
        minutes, hours = _ints(expanded[0], 60), _ints(expanded[1], 24)
    except ValueError:
        return None, "its minute or hour field cannot be shifted"
    by_day: dict[int, list[tuple[int, int]]] = {}
    for h in hours:
        for m in minutes:
            total = h * 60 + m + shift
            by_day.setdefault(total // 1440, []).append(divmod(total % 1440, 60))
    dom, month, dow = (original[i] or ",".join(map(str, expanded[i])) for i in (2, 3, 4))
    if any(f != ["*"] for f in expanded[2:]) and set(by_day) != {0}:
        if len(by_day) > 1 or expanded[2] != ["*"] or expanded[3] != ["*"]:
            return None, "it would move across midnight and it is restricted to some days"
        try:
            dow = _render([(d + next(iter(by_day))) % 7 for d in _ints(expanded[4], 7)], 7)
        except ValueError:
            return None, "it would move across midnight and its weekday field cannot be shifted"
    hours_by_minute: dict[int, set[int]] = {}
    for h, m in (pair for group in by_day.values() for pair in group):
        hours_by_minute.setdefault(m, set()).add(h)
    minutes_by_hours: dict[frozenset[int], list[int]] = {}
    for m, hs in sorted(hours_by_minute.items()):
        minutes_by_hours.setdefault(frozenset(hs), []).append(m)
    lines = [
        f"{_render(ms, 60, original[0], expanded[0])} {_render(sorted(hs), 24, original[1], expanded[1])} {dom} {month} {dow}"
        for hs, ms in minutes_by_hours.items()
    ]
    # Verify against the job's own fires (DST gaps and overlaps, day fields) before trusting the lines.
    want = list(_take(iter_fires(expression, job_zone, now), 1500))
    got = sorted({f.astimezone(UTC) for line in lines for f in _take(iter_fires(line, host, now), 1500)})
    if got[: len(want)] != [f.astimezone(UTC) for f in want]:
        return None, "a host-zone equivalent would not fire at the same instants"
    return lines, ""


def _take(fires: Iterator[dt.datetime], n: int) -> Iterator[dt.datetime]:
    for i, fire in enumerate(fires):
        if i >= n:
            return
        yield fire


def crontab(
    job: Job,
    job_path: str | Path,
    *,
    host_timezone: str | None = None,
    profile: str | None = None,
    program: str = "apilake",
    now: dt.datetime | None = None,
) -> str:
    """Crontab lines equivalent to the job's schedules on a host in `host_timezone` (default: this host's)."""
    schedules = job_schedules(job)
    if not schedules:
        raise JobFileError(f"{job_path}: no `schedule:` (at the top level or on an endpoint): nothing to put in a crontab")
    now = now or dt.datetime.now(UTC)
    job_zone = ZoneInfo(job.timezone)
    host, label = host_zone(host_timezone)
    path = Path(job_path).resolve()
    exact: list[str] = []
    fallback: list[str] = []
    for schedule in schedules:
        command = [program, "run", str(path)] + (["--profile", profile] if profile else [])
        for name in schedule.only or ():
            command += ["--only", name]
        shell = " ".join(shlex.quote(part) for part in command).replace("%", "\\%")
        lines, why = convert_expression(schedule.expression, job_zone, host, now)
        when = _clock(schedule.expression)
        k8s = f'# Kubernetes CronJob: schedule: "{schedule.expression}" with spec.timeZone: {job.timezone}'
        if lines is not None:
            if when and len(lines) == 1 and _clock(lines[0]):
                head = f"# {when} {job.timezone} = {_clock(lines[0])} {label} (host zone); {schedule.describe()}"
            else:
                head = f'# "{schedule.expression}" in {job.timezone} = "{" / ".join(lines)}" in {label} (host zone); {schedule.describe()}'
            exact += [head, k8s] + [f"{line} {shell}" for line in lines] + [""]
        else:
            fallback += [
                f'# "{schedule.expression}" in {job.timezone} has no exact equivalent in {label} (host zone): {why};',
                f"# kept in the job's zone with CRON_TZ (cronie; other crons ignore it); {schedule.describe()}",
                k8s,
                f"{schedule.expression} {shell}",
                "",
            ]
    out = [f"# apilake schedules of {path} (job timezone {job.timezone}, host timezone {label})", ""]
    out += exact
    if fallback:
        out += ["# CRON_TZ applies to every line below it in this crontab", f"CRON_TZ={job.timezone}", *fallback]
    return "\n".join(out).rstrip() + "\n"


def _clock(expression: str) -> str | None:
    """`HH:MM` when the expression fires at one time of day."""
    fields = expression.split()
    if len(fields) == 5 and fields[0].isdigit() and fields[1].isdigit():
        return f"{int(fields[1]):02d}:{int(fields[0]):02d}"
    return None
