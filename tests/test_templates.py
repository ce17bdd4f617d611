import datetime as dt
import re

import pytest

from apilake.errors import TemplateError
from apilake.templates import Placeholder, check, escape_value, placeholders, quote_segment, render, render_head, sanitize_key

D = dt.date(2026, 11, 25)


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{date}", "2026-11-25"),
        ("{date-6}", "2026-11-19"),
        ("{date+7}", "2026-12-02"),
        ("{date:%Y%m%d}", "20261125"),
        ("{date-30:%Y/%m}", "2026/10"),
        ("{market}-{product_id}", "ios-284882215"),
        ("{{literal}} {market}", "{literal} ios"),
        ("no placeholders", "no placeholders"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template, {"date": D, "market": "ios", "product_id": 284882215}) == expected


@pytest.mark.parametrize(
    "template, message",
    [
        ("{nope}", "unknown placeholder {nope}"),
        ("{market-1}", "not a date"),
        ("{market:%Y}", "not a date"),
        ("{date", "unbalanced brace"),
        ("date}", "unbalanced brace"),
    ],
)
def test_render_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        render(template, {"date": D, "market": "ios"})


def test_escape_slashes_keeps_template_slashes_and_named_paths() -> None:
    values = {"a": "x/y", "p": "metrics/b/file.gz"}
    assert render("{a}/{p}", values, escape_slashes=True, paths=("p",)) == "x%2Fy/metrics/b/file.gz"


def test_placeholders() -> None:
    assert placeholders("{source}/{date-1:%Y}/{x}{{y}}") == [
        Placeholder("source", None, None),
        Placeholder("date", -1, "%Y"),
        Placeholder("x", None, None),
    ]


@pytest.mark.parametrize(
    "template, message",
    [
        ("{date-1:%Y}/{file_date:%Y%m}/{market}", None),
        ("{nope}", "unknown placeholder {nope}"),
        ("{market:%Y}", "{market} is not a date"),
        ("{file_name-1}", "{file_name} is not a date"),
        ("{date", "unbalanced brace"),
    ],
)
def test_check(template: str, message: str | None) -> None:
    names, dates = {"date", "file_date", "market", "file_name"}, {"date", "file_date"}
    if message is None:
        check(template, names, dates)
    else:
        with pytest.raises(TemplateError, match=re.escape(message)):
            check(template, names, dates)


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"a": "x/y"}, "x%2Fy/2026/11/25"),
        ({"a": "x%2Fy"}, "x%252Fy/2026/11/25"),  # never the same key as the value above
        ({"a": "50%"}, "50%25/2026/11/25"),
    ],
)
def test_escaping_keeps_values_apart_and_date_formats_whole(values: dict, expected: str) -> None:
    assert render("{a}/{date:%Y/%m/%d}", {**values, "date": D}, escape_slashes=True) == expected


@pytest.mark.parametrize(
    "key, expected",
    [
        ("a/b/c.json", "a/b/c.json"),
        ("/a//b/./c.json", "a/b/c.json"),
        ("a/../../etc/passwd", "a/%2E%2E/%2E%2E/etc/passwd"),
        ("a/...", "a/%2E%2E%2E"),
        ("a/b\x00c\nd", "a/b%00c%0Ad"),
        ("a\\..\\b", "a%5C..%5Cb"),
        # apilake's own markers in a local lake: a temporary file, its folder, a compare-and-swap lock
        ("d/b.apilake-tmp-x.csv.gz", "d/b%2Eapilake-tmp-x.csv.gz"),
        ("d/.apilake-tmp/y.csv.gz", "d/%2Eapilake-tmp/y.csv.gz"),
        ("d/.y.json.APILAKE-TMP-0123", "d/.y.json%2EAPILAKE-TMP-0123"),
        ("d/.y.json.apilake-lock", "d/.y.json%2Eapilake-lock"),
        ("d/apilake-tmp.csv", "d/apilake-tmp.csv"),  # no dot before it: not a marker
    ],
)
def test_sanitize_key(key: str, expected: str) -> None:
    assert sanitize_key(key) == expected


@pytest.mark.parametrize("key", ["", "/", "./.", "_apilake/runs/x.json", "_APILAKE/runs/x.json", "x" * 2000])
def test_sanitize_key_refuses(key: str) -> None:
    with pytest.raises(TemplateError):
        sanitize_key(key)


@pytest.mark.parametrize(
    "value, in_key, in_path",
    [
        (".", "%2E", "%2E"),
        ("..", "%2E%2E", "%2E%2E"),
        ("...", "%2E%2E%2E", "%2E%2E%2E"),
        ("a.b", "a.b", "a.b"),
        (".hidden", ".hidden", ".hidden"),
        ("../x", "..%2Fx", "..%2Fx"),
        ("x/..", "x%2F..", "x%2F.."),
        ("%2E%2E", "%252E%252E", "%252E%252E"),  # never the same as the value `..`
        ("a b?#", "a b?#", "a%20b%3F%23"),
        ("", "", ""),
    ],
)
def test_values_are_never_dot_segments(value: str, in_key: str, in_path: str) -> None:
    assert escape_value(value) == in_key
    assert quote_segment(value) == in_path


SOURCE = {"source": "src", "endpoint": "e"}


@pytest.mark.parametrize(
    ("template", "values", "head"),
    [
        ("{source}/{endpoint}/dt={date}/x.json", SOURCE, "src/e/dt="),
        ("{source}/{file_kind}/{date}", SOURCE, "src/"),
        ("{date}/{source}", SOURCE, ""),
        ("static/{{braces}}/{source}-{endpoint}/", SOURCE, "static/{braces}/src-e/"),  # nothing unknown: all of it
        ("{source}/{endpoint}/x", {"source": "a/b", "endpoint": ".."}, "a%2Fb/%2E%2E/x"),  # values escaped as in keys
    ],
)
def test_render_head_stops_at_the_first_unknown_placeholder(template: str, values: dict, head: str) -> None:
    assert render_head(template, values, escape_slashes=True) == head
