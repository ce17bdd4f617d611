import datetime as dt

import pytest

from apilake.errors import TemplateError
from apilake.templates import placeholders, render, sanitize_key

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
    assert placeholders("{source}/{date-1:%Y}/{x}{{y}}") == ["source", "date", "x"]


@pytest.mark.parametrize(
    "key, expected",
    [
        ("a/b/c.json", "a/b/c.json"),
        ("/a//b/./c.json", "a/b/c.json"),
        ("a/../../etc/passwd", "a/%2E%2E/%2E%2E/etc/passwd"),
        ("a/...", "a/%2E%2E%2E"),
        ("a/b\x00c\nd", "a/b%00c%0Ad"),
        ("a\\..\\b", "a%5C..%5Cb"),
    ],
)
def test_sanitize_key(key: str, expected: str) -> None:
    assert sanitize_key(key) == expected


@pytest.mark.parametrize("key", ["", "/", "./.", "_apilake/runs/x.json", "x" * 2000])
def test_sanitize_key_refuses(key: str) -> None:
    with pytest.raises(TemplateError):
        sanitize_key(key)
