"""End to end: pages fetched ahead when the total is known up front (the same keys and bytes as
one after another), NDJSON answers, and a raw file's extension from its URL or Content-Type."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from apilake.emulator import Emulator, Fault, acme_items
from apilake.emulator.shapes import bytes_of, ndjson_page
from conftest import lake_objects, records, run_cli
from test_e2e_vendors import DATE, ENV, acme_job, assert_no_secret, cli

OFFSET = {"type": "offset", "limit": 10, "records_path": "data"}
#: Endpoints whose first page tells how many pages there are: total in the body, in a header, pages.
KNOWN_TOTAL = [
    {"name": "body_total", "kind": "json", "path": "/items/counted", "paginate": {**OFFSET, "total_path": "total"}},
    {
        "name": "header_total",
        "kind": "json",
        "path": "/items/counted",
        "params": {"total_in": "header"},
        "paginate": {**OFFSET, "total_header": "X-Total-Count"},
    },
    {"name": "pages", "kind": "json", "path": "/items/pages", "paginate": {"type": "page_number", "records_path": "data", "total_pages_path": "meta.pages"}},
]


def landed_by(tmp_path: Path, emulator: Emulator, endpoints: list[dict[str, Any]], concurrency: int, name: str) -> dict[str, bytes]:
    """What a run of `endpoints` lands with the source's `concurrency` (1: one page after another)."""
    emulator.stats.reset()
    (tmp_path / name).mkdir()
    result = cli(acme_job(tmp_path / name, emulator, endpoints, concurrency=concurrency))
    assert result.returncode == 0, result.stdout + result.stderr
    assert_no_secret(tmp_path / name / "lake", result, emulator)
    return lake_objects(tmp_path / name / "lake")


def page_gaps(emulator: Emulator, path: str) -> list[float]:
    """Seconds between the answers to successive requests for `path`."""
    times = sorted(r.mono for r in emulator.stats.requests if path in r.target)
    return [b - a for a, b in itertools.pairwise(times)]


def test_pages_fetched_ahead_land_the_same_keys_and_bytes_as_one_after_another(tmp_path: Path, emulator: Emulator) -> None:
    emulator.acme.config.items = 55  # six pages of ten
    emulator.config.latency_ms = 300  # every answer waits: pages one after another come >= 0.3 s apart
    sequential = landed_by(tmp_path, emulator, KNOWN_TOTAL, 1, "sequential")
    assert all(gap >= 0.3 for gap in page_gaps(emulator, "/acme/items/counted"))
    parallel = landed_by(tmp_path, emulator, KNOWN_TOTAL, 6, "parallel")
    assert parallel == sequential
    for name in ("body_total", "header_total", "pages"):
        keys = sorted(k for k in parallel if k.startswith(f"acme/{name}/"))
        assert len(keys) == 6, name
        assert [r for k in keys for r in json.loads(parallel[k])["data"]] == acme_items(55), name
    assert emulator.stats.count(origin="api") == 18  # no page twice, none past the total
    assert min(page_gaps(emulator, "/acme/items/pages")) < 0.3  # pages were in flight together


def test_pages_fetched_ahead_stay_within_the_sources_concurrency(tmp_path: Path, emulator: Emulator) -> None:
    emulator.acme.config.items = 55
    emulator.config.latency_ms = 300  # a request is in the emulator for 0.3 s before its answer is logged
    landed_by(tmp_path, emulator, KNOWN_TOTAL, 2, "two")
    answered = [r.mono for r in emulator.stats.requests if r.origin == "api"]
    # Each request was in flight at least over (answer - 0.25 s, answer): never three such at once.
    most = max(sum(1 for other in answered if t - 0.25 < other <= t) for t in answered)
    assert most == 2  # two at a time (the source's concurrency), not two per unit


def test_offset_paging_ends_on_an_empty_page_when_the_total_overstates_and_copes_with_a_null_total(tmp_path: Path, emulator: Emulator) -> None:
    emulator.acme.config.items = 20  # two full pages; the totals claim more, or none
    endpoints = [
        {"name": "overstated", "kind": "json", "path": "/items/counted", "params": {"claim": "45"}, "paginate": {**OFFSET, "total_path": "total"}},
        {"name": "null_total", "kind": "json", "path": "/items/counted", "params": {"claim": "null"}, "paginate": {**OFFSET, "total_path": "total"}},
        {
            "name": "no_header",
            "kind": "json",
            "path": "/items/counted",
            "params": {"claim": "null", "total_in": "header"},
            "paginate": {**OFFSET, "total_header": "X-Total-Count"},
        },
    ]
    sequential = landed_by(tmp_path, emulator, endpoints, 1, "sequential")
    parallel = landed_by(tmp_path, emulator, endpoints, 4, "parallel")
    assert parallel == sequential
    for name in ("overstated", "null_total", "no_header"):
        keys = sorted(k for k in parallel if k.startswith(f"acme/{name}/"))
        assert keys == [f"acme/{name}/dt={DATE}/data.json", f"acme/{name}/dt={DATE}/data.page-0002.json"], name
        assert [r for k in keys for r in json.loads(parallel[k])["data"]] == acme_items(20), name
    assert records(tmp_path / "parallel" / "lake")[-1]["counts"] == {"landed": 3}
    assert emulator.stats.count(path_contains="claim=null") == 6  # without a total: up to the empty third page


def test_a_total_and_a_total_header_together_are_refused(tmp_path: Path, emulator: Emulator) -> None:
    endpoint = {"name": "both", "kind": "json", "path": "/items/counted", "paginate": {**OFFSET, "total_path": "total", "total_header": "X-Total-Count"}}
    result = cli(acme_job(tmp_path, emulator, [endpoint]))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "set total_path (the total in the body) or total_header (in a header), not both" in result.stderr
    assert "Traceback" not in result.stderr and emulator.stats.requests == []


NDJSON = {"name": "events", "kind": "json", "path": "/items/ndjson", "format": "ndjson", "paginate": {"type": "offset", "limit": 10}}


def test_ndjson_pages_land_byte_exact_and_page_like_json(tmp_path: Path, emulator: Emulator) -> None:
    job = acme_job(tmp_path, emulator, [NDJSON])
    result = cli(job)
    assert result.returncode == 0, result.stdout + result.stderr
    items = acme_items(23)
    folder = f"acme/events/dt={DATE}/"
    assert lake_objects(tmp_path / "lake") == {
        folder + "data.ndjson": ndjson_page(items, 0, 10),
        folder + "data.page-0002.ndjson": ndjson_page(items, 10, 10),
        folder + "data.page-0003.ndjson": ndjson_page(items, 20, 10),
    }  # a short page ends it
    emulator.stats.reset()
    assert cli(job).returncode == 0 and emulator.stats.requests == []  # a rerun skips it
    assert_no_secret(tmp_path / "lake", result, emulator)


def test_ndjson_pages_become_table_rows_one_a_line(tmp_path: Path, emulator: Emulator) -> None:
    job = acme_job(tmp_path, emulator, [NDJSON], top={"tables": {}})
    result = cli(job)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = run_cli("query", str(job), "SELECT id, n, value, _apilake_object FROM acme.events ORDER BY n", "--format", "json", env=ENV)
    assert rows.returncode == 0, rows.stdout + rows.stderr
    found = json.loads(rows.stdout)
    assert [{k: r[k] for k in ("id", "n", "value")} for r in found] == acme_items(23)  # every record once
    assert {r["_apilake_object"] for r in found} == {
        f"acme/events/dt={DATE}/data.ndjson",
        f"acme/events/dt={DATE}/data.page-0002.ndjson",
        f"acme/events/dt={DATE}/data.page-0003.ndjson",
    }


def test_an_empty_ndjson_page_holds_no_records_and_ends_the_paging(tmp_path: Path, emulator: Emulator) -> None:
    emulator.acme.config.items = 20  # two full pages: the third answer is empty
    result = cli(acme_job(tmp_path, emulator, [NDJSON]))
    assert result.returncode == 0, result.stdout + result.stderr
    items = acme_items(20)
    folder = f"acme/events/dt={DATE}/"
    assert lake_objects(tmp_path / "lake") == {folder + "data.ndjson": ndjson_page(items, 0, 10), folder + "data.page-0002.ndjson": ndjson_page(items, 10, 10)}
    assert emulator.stats.count(path_contains="/acme/items/ndjson") == 3  # the empty page once: not retried


def test_an_ndjson_page_with_a_line_that_is_not_json_fails_its_unit_naming_the_line(tmp_path: Path, emulator: Emulator) -> None:
    emulator.config.faults = [Fault(match="/acme/items/ndjson", kind="body", body=b'{"id": 1}\n<html>busy</html>\n', content_type="application/x-ndjson")]
    result = cli(acme_job(tmp_path, emulator, [NDJSON]))
    assert result.returncode == 1
    [unit] = records(tmp_path / "lake")[-1]["units"]
    assert "body is not NDJSON: line 2 is not JSON" in unit["error"] and unit["attempts"] == 3  # retried like a maintenance page
    assert lake_objects(tmp_path / "lake") == {}


#: Content-Type → the extension the default key takes from it. Anything not in the fixed map adds
#: nothing, whatever it holds: a key never carries the vendor's header text.
TYPES = {
    "application/octet-stream": ".bin",
    "text/csv; charset=utf-8": ".csv",
    "APPLICATION/JSON": ".json",
    "application/json;x=.exe/../../": ".json",
    "none": "",  # no Content-Type at all
    "application/x-" + "a" * 300: "",
    "../../../etc/passwd": "",
    "text/csv.exe": "",
    "text/csv/../../x": "",
    "image/svg+xml": "",
    "text/csvé": "",
}


def test_a_raw_file_takes_its_extension_from_the_url_or_else_a_known_content_type(tmp_path: Path, emulator: Emulator) -> None:
    endpoints: list[dict[str, Any]] = [{"name": f"type{n}", "kind": "file", "path": "/bytes/65536", "params": {"type": kind}} for n, kind in enumerate(TYPES)]
    endpoints.append(
        {"name": "named", "kind": "file", "path": "/bytes/{name}", "matrix": {"name": ["report.tsv"]}, "params": {"type": "text/plain"}}
    )  # the URL's extension wins over the Content-Type
    job = acme_job(tmp_path, emulator, endpoints)
    result = cli(job)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {f"acme/type{n}/dt={DATE}/data{ext}": bytes_of("65536") for n, ext in enumerate(TYPES.values())}
    expected[f"acme/named/dt={DATE}/name=report.tsv.tsv"] = bytes_of("report.tsv")
    assert lake_objects(tmp_path / "lake") == expected
    emulator.stats.reset()
    again = cli(job)
    assert again.returncode == 0, again.stdout + again.stderr
    assert emulator.stats.requests == []  # the typed keys are known from the records: nothing fetched again
    assert records(tmp_path / "lake")[-1]["counts"] == {"skipped": len(endpoints)}
    status = run_cli("status", str(job), "--from", DATE, "--to", DATE, env=ENV)
    assert status.returncode == 0, status.stdout + status.stderr  # no gap: status finds the typed keys too
    assert_no_secret(tmp_path / "lake", result, emulator)


@pytest.mark.parametrize("path, extension", [("/bytes/65536", ".bin"), ("/export.csv", ".csv")])
def test_a_raw_file_with_its_own_key_or_an_extension_in_its_path_is_not_retyped(tmp_path: Path, emulator: Emulator, path: str, extension: str) -> None:
    endpoints = [
        {"name": "plain", "kind": "file", "path": path, "params": {"date": "{date}"}},
        {"name": "keyed", "kind": "file", "path": path, "params": {"date": "{date}"}, "key": "{source}/{endpoint}/{date}/raw"},
    ]
    result = cli(acme_job(tmp_path, emulator, endpoints))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(lake_objects(tmp_path / "lake")) == [f"acme/keyed/{DATE}/raw", f"acme/plain/dt={DATE}/data{extension}"]


def test_an_ndjson_parent_fans_out_like_a_json_one(tmp_path: Path, emulator: Emulator) -> None:
    child = {"name": "kids", "kind": "json", "path": "/accounts/{item}/products", "for_each": {"endpoint": "events", "values": "[].id", "as": "item"}}
    job = acme_job(tmp_path, emulator, [NDJSON, child])
    result = cli(job)
    assert result.returncode == 0, result.stdout + result.stderr
    kids = {u["unit"] for u in records(tmp_path / "lake")[-1]["units"] if u["endpoint"] == "kids" and u["status"] == "landed"}
    assert kids == {f"acme/kids/{DATE}/item={item['id']}" for item in acme_items(23)}  # one child per record of every line of every page
    status = run_cli("status", str(job), "--from", DATE, "--to", DATE, env=ENV)
    assert status.returncode == 0 and "missing" not in status.stdout, status.stdout
