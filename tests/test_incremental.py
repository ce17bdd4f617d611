"""Incremental cursors, the pure parts: cursor values, windows, the newest cursor of a unit's
records, and how the planner puts a window into a unit's request and key."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pydantic import ValidationError

from apilake.incremental import CursorError, CursorState, Window, newest, parse, render, window_for, window_key
from apilake.jobfile import Incremental, Job
from apilake.plan import plan
from apilake.status.text import cursor_line

D = dt.date(2026, 11, 25)
NOW = dt.datetime(2026, 12, 3, 15, 30, 12, 345678, tzinfo=dt.UTC)


def spec(**settings: Any) -> Incremental:
    return Incremental.model_validate({"cursor_path": "updated_at", "initial_value": "2026-01-01T00:00:00Z", "param": "since", **settings})


@pytest.mark.parametrize(
    "value, kind, rendered",
    [
        ("2026-12-03T10:00:00Z", "datetime", "2026-12-03T10:00:00Z"),
        ("2026-12-03T19:00:00+09:00", "datetime", "2026-12-03T10:00:00Z"),  # UTC, never a `+` in a query
        ("2026-12-03T10:00:00", "datetime", "2026-12-03T10:00:00Z"),  # no zone: UTC
        ("2026-12-03", "datetime", "2026-12-03T00:00:00Z"),
        (1764770000, "number", "1764770000"),
        ("1764770000", "number", "1764770000"),
        (1.5, "number", "1.5"),
    ],
)
def test_cursor_values_parse_and_render(value: Any, kind: str, rendered: str) -> None:
    assert render(parse(value, kind)) == rendered


@pytest.mark.parametrize("value, kind", [("last tuesday", "datetime"), (1764770000, "datetime"), ("abc", "number"), (True, "number"), ({}, "number")])
def test_cursor_values_that_do_not_parse(value: Any, kind: str) -> None:
    with pytest.raises(ValueError):
        parse(value, kind)


@pytest.mark.parametrize(
    "settings, stored, expected",
    [
        ({}, None, Window("2026-01-01T00:00:00Z", "2026-12-03T15:30:12Z")),
        ({"lag": "PT1H"}, None, Window("2026-01-01T00:00:00Z", "2026-12-03T15:30:12Z")),  # the first window has no look-back
        ({"lag": "PT1H"}, "2026-12-02T10:00:00Z", Window("2026-12-02T09:00:00Z", "2026-12-03T15:30:12Z", "2026-12-02T10:00:00Z")),
        ({"lag": 90}, "2026-12-02T10:00:00Z", Window("2026-12-02T09:58:30Z", "2026-12-03T15:30:12Z", "2026-12-02T10:00:00Z")),
        ({"initial_value": 0, "lag": 3600}, None, Window("0", str(int(NOW.timestamp())))),
        ({"initial_value": 0, "lag": 3600}, "1764770000", Window("1764766400", str(int(NOW.timestamp())), "1764770000")),
    ],
)
def test_window_for(settings: dict, stored: str | None, expected: Window) -> None:
    assert window_for(spec(**settings), stored, NOW) == expected


def test_job_file_initial_value_yaml_timestamp_and_lag_forms() -> None:
    assert spec(initial_value=dt.datetime(2026, 1, 1)).initial_value == "2026-01-01T00:00:00+00:00"
    assert spec(initial_value=dt.date(2026, 1, 1)).initial_value == "2026-01-01"
    assert spec(lag="PT1H30M").lag == dt.timedelta(minutes=90)


def endpoint(**settings: Any) -> dict[str, Any]:
    return {"name": "issues", "kind": "json", "path": "/issues", "incremental": {"cursor_path": "updated_at", "initial_value": 0}, **settings}


def job(*endpoints: dict[str, Any]) -> Job:
    return Job.model_validate({"sources": [{"name": "gh", "base_url": "http://api.test", "endpoints": list(endpoints)}]})


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"incremental": {"cursor_path": "updated_at", "initial_value": 0}}, "the cursor is sent nowhere"),
        ({"incremental": {"cursor_path": "u", "initial_value": "yesterday", "param": "since"}}, "neither a number nor an ISO 8601"),
        ({"incremental": {"cursor_path": "u", "initial_value": True, "param": "since"}}, "not a boolean"),
        ({"incremental": {"cursor_path": "u", "initial_value": 0, "param": "since", "lag": -5}}, "not negative"),
        ({"incremental": {"cursor_path": "u[", "initial_value": 0, "param": "since"}}, "not a JMESPath expression"),
        ({"incremental": {"cursor_path": "u", "initial_value": 0, "param": "since"}, "params": {"since": "x"}}, "also in params"),
        ({"kind": "file", "incremental": {"cursor_path": "u", "initial_value": 0, "param": "since"}}, "applies to kind: json only"),
        ({"path": "/x/{cursor}", "incremental": None}, "cursor"),  # no window without incremental:
        ({"headers": {"X-Since": "a\r\nX-Evil: 1"}, "incremental": {"cursor_path": "u", "initial_value": 0, "param": "s"}}, "X-Since"),
        ({"kind": "bulk", "headers": {"X-Since": "{date}"}, "incremental": None}, "applies to kind: json only"),
    ],
)
def test_bad_incremental_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        job(endpoint(**settings))


def test_a_window_goes_into_param_end_param_path_body_and_the_default_key() -> None:
    spec = {"cursor_path": "updated_at", "initial_value": 0, "param": "since", "end_param": "until"}
    posted = endpoint(
        path="/t/{cursor}",
        method="POST",
        body={"start_time": "{cursor}", "end_time": "{cursor_end}", "note": "from {cursor}"},
        incremental=spec,
        matrix={"repo": ["a/b"]},
        headers={"X-Window": "{cursor}..{cursor_end}", "X-Repo": "{repo}"},
    )
    variables = (("repo", "a/b"),)
    windows = {window_key("gh", "issues", variables, D.isoformat()): Window("1764766400", "1764770000", "1764770000")}
    [unit] = plan(job(posted), [D], windows=windows)
    assert unit.url == "http://api.test/t/1764766400"
    assert unit.params == (("since", "1764766400"), ("until", "1764770000"))
    assert json.loads(unit.body or "") == {"start_time": 1764766400, "end_time": 1764770000, "note": "from 1764766400"}
    assert unit.key == "gh/issues/dt=2026-11-25/cursor=1764766400/repo=a%2Fb.json"
    assert unit.headers == (("X-Window", "1764766400..1764770000"), ("X-Repo", "a/b"))


def test_a_unit_without_a_window_is_planned_unopened() -> None:
    [unit] = plan(job(endpoint(params={"since": "{cursor}"})), [D])
    assert unit.key == "gh/issues/dt=2026-11-25/cursor=/data.json" and unit.params == (("since", ""),)


def test_a_user_key_may_carry_the_window() -> None:
    key = "{source}/{endpoint}/{date}/{cursor}-{cursor_end}.json"
    windows = {window_key("gh", "issues", (), D.isoformat()): Window("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z")}
    [unit] = plan(job(endpoint(key=key, incremental={"cursor_path": "u", "initial_value": "2026-01-01", "param": "since"})), [D], windows=windows)
    assert unit.key == "gh/issues/2026-11-25/2026-12-01T00:00:00Z-2026-12-02T00:00:00Z.json"


def incremental_endpoint(**spec: Any) -> Any:
    paginate = {"type": "json_link", "next_url_path": "next", "records_path": "data"}
    built = job(endpoint(paginate=paginate, incremental={"cursor_path": "meta.at", "initial_value": 0, "param": "since", **spec}))
    return built.sources[0].endpoints[0]


@pytest.mark.parametrize(
    "pages, spec, expected",
    [
        ([{"data": [{"meta": {"at": 5}}, {"meta": {"at": 9}}]}, {"data": [{"meta": {"at": 7}}]}], {}, 9.0),
        ([{"data": []}], {}, None),
        ([{"data": [{"meta": {"at": 5}}, {"id": 2}]}], {"on_missing_cursor": "skip"}, 5.0),
        ([{"data": [{"id": 2}]}], {"on_missing_cursor": "include"}, None),
        ([{"rows": [{"meta": {"at": 3}}]}], {"records_path": "rows"}, 3.0),  # its own records_path over the paginator's
    ],
)
def test_newest_cursor_of_a_units_records(pages: list, spec: dict, expected: float | None) -> None:
    assert newest(incremental_endpoint(**spec), pages, "gh/issues/2026-11-25") == expected


@pytest.mark.parametrize("record, message", [({"id": 2}, "record 1 of a page has no cursor"), ({"meta": {"at": "soon"}}, "does not parse")])
def test_newest_cursor_refuses_a_missing_or_bad_value(record: dict, message: str) -> None:
    with pytest.raises(CursorError, match=message):
        newest(incremental_endpoint(), [{"data": [record]}], "gh/issues/2026-11-25")


@pytest.mark.parametrize(
    "state, line",
    [
        ({"cursor": None, "windows": {}}, "none yet"),
        ({"cursor": "2026-12-03T10:00:00Z", "advanced": "2026-12-03T15:00:12+00:00", "windows": {}}, "2026-12-03T10:00:00Z, advanced 30 min ago"),
        ({"cursor": 1764770000, "advanced": "2026-12-03T03:30:12", "windows": {}}, "1764770000, advanced 12.0 h ago"),  # no zone: UTC
        (
            {"cursor": 5, "advanced": "yesterday", "windows": {"2026-11-24": {"done": True}, "2026-11-25": {"done": False}, "x": 3}},
            "5; window of 2026-11-25 not finished",
        ),  # a hand-edited state shows what it can
        ({"cursor": "a\x1b[2Jb", "advanced": "2026-11-20T15:30:12+00:00", "windows": {}}, "a\\x1b[2Jb, advanced 13 days ago"),
    ],
)
def test_a_cursor_as_status_shows_it(state: dict, line: str) -> None:
    assert cursor_line(CursorState.parse({"identity": "s/e", **state}), NOW) == line
