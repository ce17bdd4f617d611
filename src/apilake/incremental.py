"""Incremental cursors: endpoints read "since the last time", exactly once, across runs and hosts.

Each unit identity (source, endpoint, matrix combination and fan-out value: one cursor per
parent) keeps one state object, `_apilake/state/<source>/<endpoint>/<digest>.json`, in the
destination, written by compare-and-swap (`Destination.put_if`) like the quota ledger, so runs
on several hosts and Dask workers agree:

    {"identity": "github/issues/repo=r1", "cursor": "2026-12-03T10:00:00Z", "advanced": "…",
     "windows": {"2026-12-02": {"start": "…", "end": "…", "base": "…", "opened": "…", "done": true}}}

A run opens one window per identity and run date before it plans (`open_windows`, at the edge:
the planner stays pure and takes the windows as input). The window is recorded in the state at
once, so a rerun or a resume of the same run date reuses it: the same requests into the same
keys. The cursor advances (`advance`) only once every page of the unit has landed, to the newest
cursor among its records; a crash in between re-reads the same window into the same keys.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import jmespath

from apilake.destinations import OWN_PREFIX, Destination, open_destination
from apilake.errors import JobFileError, TransferError
from apilake.jobfile import Endpoint, Incremental, Job, PagingStyle

log = logging.getLogger("apilake")

STATE_PREFIX = f"{OWN_PREFIX}state/"
WINDOWS_KEPT = 62  # run dates whose window a state object remembers (reruns of older dates open none)
CAS_TRIES = 30

Cursor = float | dt.datetime
T = TypeVar("T")


class CursorError(TransferError):
    """A record's cursor does not parse, is missing, or goes backwards: the unit fails, the
    stored cursor stays as it was."""


@dataclass(frozen=True, slots=True)
class Window:
    """What one unit reads: `{cursor}` (from) and `{cursor_end}` (to, the time it was opened)."""

    start: str
    end: str
    base: str | None = None  # the stored cursor it was opened from; None: from `initial_value`

    def values(self) -> dict[str, str]:
        return {"cursor": self.start, "cursor_end": self.end}


#: The window of a unit no run has opened yet (`apilake status`: its key is never present).
UNOPENED = Window("", "")


def identity(source: str, endpoint: str, variables: Iterable[tuple[str, str]]) -> str:
    """A unit's identity across run dates: its id without the date."""
    combo = ",".join(f"{k}={v}" for k, v in variables)
    return f"{source}/{endpoint}" + (f"/{combo}" if combo else "")


def window_key(source: str, endpoint: str, variables: Iterable[tuple[str, str]], run_date: str) -> str:
    """How the planner finds a unit's window among those handed to it."""
    return f"{identity(source, endpoint, variables)}@{run_date}"


def state_key(source: str, endpoint: str, variables: Iterable[tuple[str, str]]) -> str:
    """The state object of a unit identity: a digest, as fan-out values come from the vendor."""
    digest = hashlib.sha256(identity(source, endpoint, variables).encode()).hexdigest()[:20]
    return f"{STATE_PREFIX}{source}/{endpoint}/{digest}.json"


# -- cursor values -------------------------------------------------------------------------


def kind_of(spec: Incremental) -> str:
    """`number` (epoch seconds, ids) or `datetime` (ISO 8601), by the type of `initial_value`."""
    return "number" if isinstance(spec.initial_value, (int, float)) else "datetime"


def parse(value: Any, kind: str) -> Cursor:
    """A cursor value as a number or an aware datetime; `ValueError` when it is neither."""
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{value!r} is not a number")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an ISO 8601 date-time")
    try:
        found = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time") from None
    return found if found.tzinfo else found.replace(tzinfo=dt.UTC)


def render(value: Cursor) -> str:
    """A cursor as sent and stored: an integer when whole, a UTC date-time ending in `Z` (a `+`
    in a query string would read as a space)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"
    return str(int(value)) if value == int(value) else repr(value)


def window_for(spec: Incremental, stored: str | None, now: dt.datetime) -> Window:
    """The window a new run date reads: from the stored cursor less the look-back (`lag`), or
    from `initial_value`; to now."""
    kind = kind_of(spec)
    end: Cursor = now.replace(microsecond=0) if kind == "datetime" else float(int(now.timestamp()))
    if stored is None:
        return Window(render(parse(spec.initial_value, kind)), render(end))
    cursor = parse(stored, kind)
    start = cursor - spec.lag if isinstance(cursor, dt.datetime) else cursor - spec.lag.total_seconds()
    return Window(render(start), render(end), stored)


def records_of(endpoint: Endpoint, page: Any) -> list[Any]:
    """A page's records: at `incremental.records_path`, else the paginator's, else the page."""
    assert endpoint.incremental is not None
    path = endpoint.incremental.records_path or (endpoint.paginate.records_path if isinstance(endpoint.paginate, PagingStyle) else None)
    found = jmespath.search(path, page) if path else page
    return found if isinstance(found, list) else []


def newest(endpoint: Endpoint, pages: Iterable[Any], unit_id: str) -> Cursor | None:
    """The newest cursor among a unit's records (None: no record has one)."""
    spec = endpoint.incremental
    assert spec is not None
    expression, kind = jmespath.compile(spec.cursor_path), kind_of(spec)
    best: Cursor | None = None
    missing = 0
    for page in pages:
        for number, record in enumerate(records_of(endpoint, page), 1):
            value = expression.search(record)
            if value is None:
                if spec.on_missing_cursor == "fail":
                    raise CursorError(
                        f"{unit_id}: record {number} of a page has no cursor at {spec.cursor_path!r}; the cursor stays as it was "
                        "(set incremental.on_missing_cursor: skip or include to pass over such records)"
                    )
                missing += 1
                continue
            try:
                cursor = parse(value, kind)
            except ValueError as exc:
                raise CursorError(f"{unit_id}: cursor value at {spec.cursor_path!r} does not parse: {exc}; the cursor stays as it was") from None
            best = cursor if best is None or cursor > best else best  # type: ignore[operator]
    if missing and spec.on_missing_cursor == "skip":
        log.warning("%s: %d record(s) without a cursor at %r passed over", unit_id, missing, spec.cursor_path)
    return best


# -- the state object (pure) -----------------------------------------------------------------


def parse_state(data: bytes | None) -> dict[str, Any]:
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("windows"), dict):
        return {"cursor": None, "windows": {}}
    return doc


def recorded_window(doc: Mapping[str, Any], run_date: str) -> Window | None:
    found = doc["windows"].get(run_date)
    return Window(found["start"], found["end"], found.get("base")) if isinstance(found, dict) else None


# -- at the edge: reading and writing the state ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Wanted:
    """One incremental unit a run is about to plan."""

    source: str
    endpoint: Endpoint
    variables: tuple[tuple[str, str], ...]
    run_date: str


async def open_windows(dest: Destination, wanted: Iterable[Wanted], now: dt.datetime, *, write: bool = True) -> dict[str, Window]:
    """The window of each wanted unit (by `window_key`): the recorded one of its run date, else a
    new one, recorded at once by compare-and-swap (`write`; a dry run only shows it). A run date
    before one that already has a window, or several new run dates at once, are refused: each new
    window starts where the one before ended."""
    by_state: dict[str, list[Wanted]] = {}
    for want in wanted:
        by_state.setdefault(state_key(want.source, want.endpoint.name, want.variables), []).append(want)
    found: dict[str, Window] = {}
    for key, wants in by_state.items():
        found.update(await _open(dest, key, wants, now, write))
    return found


async def recorded_windows(dest: Destination, wanted: Iterable[Wanted]) -> dict[str, Window | None]:
    """The windows already recorded for wanted units (`apilake status`), by `window_key`: None
    for a run date no run opened but a later window covers (the cursor read on past it: nothing
    is missing there); absent for one not run yet."""
    found: dict[str, Window | None] = {}
    docs: dict[str, dict[str, Any]] = {}
    for want in wanted:
        key = state_key(want.source, want.endpoint.name, want.variables)
        if key not in docs:
            versioned = await dest.read_versioned(key)
            docs[key] = parse_state(versioned.data if versioned else None)
        window = recorded_window(docs[key], want.run_date)
        if window is not None or any(d > want.run_date for d in docs[key]["windows"]):
            found[window_key(want.source, want.endpoint.name, want.variables, want.run_date)] = window
    return found


async def _swap(dest: Destination, key: str, change: Callable[[dict[str, Any]], tuple[T, bool]]) -> T:
    """Read a state object, `change` it (in place; it says what to return and whether to write),
    and write it back by compare-and-swap, again from the read when another writer got there first."""
    for attempt in range(CAS_TRIES):
        versioned = await dest.read_versioned(key)
        doc = parse_state(versioned.data if versioned else None)
        result, write = change(doc)
        if not write:
            return result
        if await dest.put_if(key, json.dumps(doc, indent=1).encode(), version=versioned.version if versioned else None) is not None:
            return result
        await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))
    raise TransferError(f"could not update the cursor state {key} in {dest.url}: {CAS_TRIES} writers got there first; try again")


async def _open(dest: Destination, key: str, wants: list[Wanted], now: dt.datetime, write: bool) -> dict[str, Window]:
    first = wants[0]
    spec = first.endpoint.incremental
    assert spec is not None
    name = identity(first.source, first.endpoint.name, first.variables)

    def change(doc: dict[str, Any]) -> tuple[dict[str, Window], bool]:
        windows = {w.run_date: found for w in wants if (found := recorded_window(doc, w.run_date)) is not None}
        new = sorted({w.run_date for w in wants} - set(windows))
        if len(new) > 1:
            raise JobFileError(
                f"{name}: incremental: run dates {', '.join(new)} would each open a new window, but each starts where the one "
                "before ended; run them one date at a time"
            )
        latest = max(doc["windows"], default=None)
        if new and latest is not None and new[0] < latest:
            raise JobFileError(
                f"{name}: incremental: run date {new[0]} is before {latest}, whose window is already open; a past date is rerun "
                "only with the window it had (none)"
            )
        if new:
            opened = windows[new[0]] = window_for(spec, doc.get("cursor"), now)
            kept = dict(sorted(doc["windows"].items())[-(WINDOWS_KEPT - 1) :])
            kept[new[0]] = {"start": opened.start, "end": opened.end, "base": opened.base, "opened": now.isoformat(), "done": False}
            doc.update(identity=name, windows=kept)
        return {window_key(w.source, w.endpoint.name, w.variables, w.run_date): windows[w.run_date] for w in wants}, bool(new) and write

    return await _swap(dest, key, change)


async def advance(
    dest: Destination,
    source: str,
    endpoint: Endpoint,
    variables: tuple[tuple[str, str], ...],
    run_date: str,
    unit_id: str,
    pages: Iterable[Any],
    now: dt.datetime,
) -> None:
    """After every page of a unit landed: move its cursor to the newest among its records and
    mark its window done. A cursor before the window's start (the vendor went backwards) fails
    with `CursorError` and leaves the stored cursor as it was; no record leaves it as it was."""
    spec = endpoint.incremental
    assert spec is not None
    kind = kind_of(spec)
    value = newest(endpoint, pages, unit_id)
    key = state_key(source, endpoint.name, variables)

    def change(doc: dict[str, Any]) -> tuple[None, bool]:
        window = recorded_window(doc, run_date)
        if window is None:
            raise TransferError(f"{unit_id}: its window is not in the cursor state {key} any more (removed by hand?); run the date again")
        if value is not None and value < parse(window.start, kind):  # type: ignore[operator]
            raise CursorError(
                f"{unit_id}: the newest cursor among its records, {render(value)}, is before the window's start {window.start} "
                "(the vendor went backwards); the cursor stays as it was"
            )
        stored = doc.get("cursor")
        if value is not None and (stored is None or value > parse(stored, kind)):  # type: ignore[operator]
            doc.update(cursor=render(value), advanced=now.isoformat())
        doc["windows"][run_date] = {**doc["windows"][run_date], "done": True}
        return None, True

    await _swap(dest, key, change)


def job_windows(job: Job, url: str | None, wanted: list[Wanted], *, write: bool = True) -> dict[str, Window]:
    """`open_windows` in the job's destination (or `url`), for the CLI before it plans; nothing
    is read without incremental units."""
    if not wanted:
        return {}

    async def opened() -> dict[str, Window]:
        dest = open_destination(url or job.destination, job.s3)
        try:
            return await open_windows(dest, wanted, dt.datetime.now(dt.UTC), write=write)
        finally:
            await dest.close()

    return asyncio.run(opened())


@dataclass(frozen=True, slots=True)
class CursorState:
    """One unit identity's cursor, as `apilake status` shows it."""

    identity: str
    cursor: str | None  # None: no record advanced it yet
    advanced: dt.datetime | None
    unfinished: tuple[str, ...]  # run dates whose window a run opened but did not finish: the next run of each reads it again

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> CursorState:
        try:
            advanced = dt.datetime.fromisoformat(str(doc["advanced"])) if doc.get("advanced") else None
        except ValueError:
            advanced = None
        if advanced is not None and advanced.tzinfo is None:
            advanced = advanced.replace(tzinfo=dt.UTC)
        unfinished = sorted(d for d, w in doc["windows"].items() if isinstance(w, dict) and not w.get("done"))
        return cls(str(doc["identity"]), None if doc.get("cursor") is None else str(doc["cursor"]), advanced, tuple(unfinished))


async def cursors(dest: Destination) -> list[CursorState]:
    """Every cursor state in the destination (`apilake status`)."""
    found = []
    async for info in dest.list(STATE_PREFIX):
        if info.key.endswith(".json"):
            versioned = await dest.read_versioned(info.key)
            doc = parse_state(versioned.data if versioned else None)
            if doc.get("identity"):
                found.append(CursorState.parse(doc))
    return sorted(found, key=lambda c: c.identity)
