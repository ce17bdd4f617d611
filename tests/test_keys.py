import datetime as dt

import pytest

from apilake.keys import default_json_key, file_selected, file_values, page_bases, page_key, type_extension, typed_keys, url_extension

D = dt.date(2026, 11, 25)
METRIC = "http://h/v2/bulk/data?name=metrics/app_downloads/all/all/daily/2026-11-24/data.7.20261124.1.csv.gz&signature=ab"
DIMENSION = "http://h/v2/bulk/data?name=dimensions/app_downloads/daily/2026-11-24/product_id.7.20261124.1.csv.gz&signature=ab"
OTHER = "https://files.example.com/exports/2026-11-20/part-0001.csv.gz?token=zz"


@pytest.mark.parametrize(
    "key, page, expected",
    [
        ("a/b.json", 1, "a/b.json"),
        ("a/b.json", 2, "a/b.page-0002.json"),
        ("a/b", 3, "a/b.page-0003"),
        ("a/b.c.json", 12, "a/b.c.page-0012.json"),
    ],
)
def test_page_key(key: str, page: int, expected: str) -> None:
    assert page_key(key, page) == expected


def test_default_json_key() -> None:
    assert default_json_key({"market": [], "product_id": []}) == "{source}/{endpoint}/dt={date}/market={market},product_id={product_id}.json"
    assert default_json_key({}) == "{source}/{endpoint}/dt={date}/data.json"


@pytest.mark.parametrize(
    "url, expected",
    [
        (METRIC, {"file_kind": "metrics", "dimension": "", "file_name": "data.7.20261124.1.csv.gz", "file_date": "2026-11-24"}),
        (DIMENSION, {"file_kind": "dimensions", "dimension": "product_id", "file_name": "product_id.7.20261124.1.csv.gz", "file_date": "2026-11-24"}),
        (OTHER, {"file_kind": "files", "dimension": "", "file_name": "part-0001.csv.gz", "file_date": "2026-11-20"}),
        ("http://h/x/y", {"file_kind": "files", "dimension": "", "file_name": "y", "file_date": "2026-11-25"}),
    ],
)
def test_file_values(url: str, expected: dict) -> None:
    values = file_values(url, D)
    assert {k: values[k] for k in expected} == expected


@pytest.mark.parametrize(
    "url, files, include, exclude, selected",
    [
        (METRIC, "all", [], [], True),
        (METRIC, "metrics", [], [], True),
        (METRIC, "dimensions", [], [], False),
        (DIMENSION, "dimensions", [], [], True),
        (DIMENSION, "all", ["*/product_id.*"], [], True),
        (DIMENSION, "all", ["metrics/*"], [], False),
        (METRIC, "all", [], ["metrics/*"], False),
    ],
)
def test_file_selected(url: str, files: str, include: list, exclude: list, selected: bool) -> None:
    assert file_selected(file_values(url, D), files, include, exclude) is selected


@pytest.mark.parametrize(
    "key, expected",
    [
        ("a/b.json", []),
        ("a/b.page-0002.json", [("a/b.json", 2)]),
        ("a/b.page-0001.json", []),  # page 1 is the key itself
        ("a/b.page-12345.json", [("a/b.json", 12345)]),
        ("a/b.page-002.json", []),  # not a page key: pages have four digits at least
        ("a/data.page-0003", [("a/data", 3)]),
        ("a/x.tar.page-0002.gz", [("a/x.tar.gz", 2)]),
        ("a/x.page-0002.page-0003.json", [("a/x.page-0002.json", 3)]),
        ("a.page-0002.json/b.json", []),  # only the name counts, not a folder
    ],
)
def test_page_bases_invert_page_key(key: str, expected: list) -> None:
    assert page_bases(key) == expected
    assert all(page_key(base, page) == key for base, page in expected)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://h/acme/export.csv.gz?x=1.json", ".csv.gz"),
        ("http://h/bytes/65536", ""),
        ("http://h/v1.2/data", ""),
        ("http://h/files/report.2026.CSV", ".CSV"),
        ("http://h/a.b.c.tar.gz", ".tar.gz"),  # two parts at most
        ("http://h/.profile", ""),  # no stem
        ("http://h/file.averyverylongextension", ""),
        ("http://h/file.c%2F..", ""),
    ],
)
def test_url_extension(url: str, expected: str) -> None:
    assert url_extension(url) == expected


@pytest.mark.parametrize(
    "content_type, expected",
    [
        ("text/csv", ".csv"),
        ("Text/CSV ; charset=utf-8", ".csv"),
        ("application/octet-stream", ".bin"),
        ("application/x-ndjson", ".ndjson"),
        (None, ""),
        ("", ""),
        ("text/csv.exe", ""),
        ("../../etc/passwd", ""),
        ("image/svg+xml", ""),
        ("application/x-" + "a" * 500, ""),
    ],
)
def test_type_extension(content_type: str | None, expected: str) -> None:
    assert type_extension(content_type) == expected


def test_typed_keys_hold_the_bare_key_and_every_known_extension() -> None:
    found = typed_keys("s/e/dt=2026-11-25/data")
    assert found[0] == "s/e/dt=2026-11-25/data" and "s/e/dt=2026-11-25/data.csv" in found and len(found) == len(set(found))
