"""Run dates: yesterday in the job's zone, around midnight and DST changes; option errors."""

from __future__ import annotations

import datetime as dt

import pytest

from apilake.dates import default_run_date, run_dates
from apilake.errors import JobFileError

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("zone", "now", "expected"),
    [
        # 15:30Z is already the 26th in Seoul (UTC+9): yesterday there is the 25th
        ("Asia/Seoul", "2026-11-25T15:30:00+00:00", "2026-11-25"),
        ("UTC", "2026-11-25T15:30:00+00:00", "2026-11-24"),
        # one second either side of midnight in Seoul (15:00Z)
        ("Asia/Seoul", "2026-11-25T14:59:59+00:00", "2026-11-24"),
        ("Asia/Seoul", "2026-11-25T15:00:00+00:00", "2026-11-25"),
        ("UTC", "2026-11-25T23:59:59+00:00", "2026-11-24"),
        ("UTC", "2026-11-26T00:00:00+00:00", "2026-11-25"),
        # the instant may come in any offset: only the instant matters
        ("Asia/Seoul", "2026-11-26T00:30:00+09:00", "2026-11-25"),
        ("UTC", "2026-11-26T00:30:00+09:00", "2026-11-24"),
        # New York springs forward 2026-03-08 02:00 EST → 03:00 EDT (07:00Z); midnight stays midnight
        ("America/New_York", "2026-03-08T06:59:59+00:00", "2026-03-07"),  # 01:59:59 EST
        ("America/New_York", "2026-03-08T07:00:00+00:00", "2026-03-07"),  # 03:00:00 EDT
        ("America/New_York", "2026-03-09T03:59:59+00:00", "2026-03-07"),  # 23:59:59 EDT on the 8th
        ("America/New_York", "2026-03-09T04:00:00+00:00", "2026-03-08"),  # midnight EDT: 04:00Z, no longer 05:00Z
        # ... and falls back 2026-11-01 02:00 EDT → 01:00 EST (06:00Z)
        ("America/New_York", "2026-11-01T05:59:59+00:00", "2026-10-31"),  # 01:59:59 EDT
        ("America/New_York", "2026-11-01T06:00:00+00:00", "2026-10-31"),  # 01:00:00 EST (again)
        ("America/New_York", "2026-11-02T04:59:59+00:00", "2026-10-31"),  # 23:59:59 EST on the 1st
        ("America/New_York", "2026-11-02T05:00:00+00:00", "2026-11-01"),  # midnight EST: 05:00Z
        # Berlin springs forward 2026-03-29 01:00Z (02:00 CET → 03:00 CEST) and falls back 2026-10-25 01:00Z
        ("Europe/Berlin", "2026-03-28T22:59:59+00:00", "2026-03-27"),  # 23:59:59 CET
        ("Europe/Berlin", "2026-03-28T23:00:00+00:00", "2026-03-28"),  # midnight CET
        ("Europe/Berlin", "2026-03-29T00:59:59+00:00", "2026-03-28"),  # 01:59:59 CET, before the switch
        ("Europe/Berlin", "2026-03-29T01:00:00+00:00", "2026-03-28"),  # 03:00:00 CEST, after it
        ("Europe/Berlin", "2026-03-29T21:59:59+00:00", "2026-03-28"),  # 23:59:59 CEST
        ("Europe/Berlin", "2026-03-29T22:00:00+00:00", "2026-03-29"),  # midnight CEST: 22:00Z
        ("Europe/Berlin", "2026-10-25T00:59:59+00:00", "2026-10-24"),  # 02:59:59 CEST
        ("Europe/Berlin", "2026-10-25T01:00:00+00:00", "2026-10-24"),  # 02:00:00 CET (again)
        ("Europe/Berlin", "2026-10-25T22:59:59+00:00", "2026-10-24"),  # 23:59:59 CET
        ("Europe/Berlin", "2026-10-25T23:00:00+00:00", "2026-10-25"),  # midnight CET: 23:00Z
    ],
)
def test_default_run_date(zone: str, now: str, expected: str) -> None:
    assert default_run_date(zone, at(now)) == dt.date.fromisoformat(expected)


def test_default_run_date_needs_an_aware_instant() -> None:
    with pytest.raises(ValueError, match="aware"):
        default_run_date("UTC", dt.datetime(2026, 11, 25, 12))


NOW = at("2026-11-25T15:30:00+00:00")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ["2026-11-25"]),
        ({"date": "2026-02-28"}, ["2026-02-28"]),
        ({"start": "2026-02-27", "end": "2026-03-01"}, ["2026-02-27", "2026-02-28", "2026-03-01"]),
        ({"start": "2028-02-28", "end": "2028-03-01"}, ["2028-02-28", "2028-02-29", "2028-03-01"]),
        ({"start": "2026-11-20", "end": "2026-11-20"}, ["2026-11-20"]),
    ],
)
def test_run_dates(options: dict[str, str], expected: list[str]) -> None:
    assert [d.isoformat() for d in run_dates("Asia/Seoul", NOW, **options)] == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"date": "2026-11-20", "start": "2026-11-01"}, "either --date or --from/--to"),
        ({"date": "2026-11-20", "start": "2026-11-01", "end": "2026-11-02"}, "either --date or --from/--to"),
        ({"date": "2026-11-20", "end": "2026-11-02"}, "either --date or --from/--to"),
        ({"start": "2026-11-01"}, "needs both --from and --to"),
        ({"end": "2026-11-01"}, "needs both --from and --to"),
        ({"start": "2026-11-02", "end": "2026-11-01"}, "--to 2026-11-01 is before --from 2026-11-02"),
        ({"date": "2026/11/20"}, "--date '2026/11/20': expected a date as YYYY-MM-DD"),
        ({"date": "yesterday"}, "--date 'yesterday'"),
        ({"date": "20261120"}, "--date '20261120': expected a date as YYYY-MM-DD"),
        ({"date": "2026-W48-1"}, "--date '2026-W48-1'"),
        ({"date": "2026-02-30"}, "--date '2026-02-30'"),
        ({"start": "2026-11-01", "end": "2026-13-01"}, "--to '2026-13-01'"),
        ({"start": "2000-01-01", "end": "2026-11-01"}, "split a backfill longer than 3660 days"),
    ],
)
def test_run_dates_errors(options: dict[str, str], message: str | None) -> None:
    if message is None:
        assert run_dates("UTC", NOW, **options)
        return
    with pytest.raises(JobFileError) as error:
        run_dates("UTC", NOW, **options)
    assert message in str(error.value)
    assert error.value.exit_code == 2
