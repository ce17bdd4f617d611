"""Run dates: which calendar days a run covers, in the job's time zone. Pure: the clock is passed in."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from apilake.errors import JobFileError

MAX_BACKFILL_DAYS = 3660
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def default_run_date(timezone: str, now: dt.datetime) -> dt.date:
    """Yesterday, as a calendar in `timezone` sees it at the instant `now` (an aware datetime)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(ZoneInfo(timezone)).date() - dt.timedelta(days=1)


def parse_date(text: str, option: str) -> dt.date:
    try:
        if not _ISO_DATE.fullmatch(text):
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise JobFileError(f"{option} {text!r}: expected a date as YYYY-MM-DD") from None


def run_dates(
    timezone: str,
    now: dt.datetime,
    *,
    date: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> list[dt.date]:
    """The dates a run covers: `--date`, an inclusive `--from/--to` backfill, or yesterday."""
    if date and (start or end):
        raise JobFileError("use either --date or --from/--to, not both")
    if date:
        return [parse_date(date, "--date")]
    if start or end:
        if not (start and end):
            raise JobFileError("a backfill needs both --from and --to (inclusive)")
        first, last = parse_date(start, "--from"), parse_date(end, "--to")
        if last < first:
            raise JobFileError(f"--to {end} is before --from {start}")
        days = (last - first).days + 1
        if days > MAX_BACKFILL_DAYS:
            raise JobFileError(f"--from/--to spans {days} days; split a backfill longer than {MAX_BACKFILL_DAYS} days")
        return [first + dt.timedelta(days=i) for i in range(days)]
    return [default_run_date(timezone, now)]
