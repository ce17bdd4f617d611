"""End to end: any vendor. Auth schemes, paging styles, POST, raw files, fan-out and report jobs,
through the `apilake` command against the emulator's second vendor (Acme, under /acme/)."""

from __future__ import annotations

import gzip
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.emulator import Emulator, Fault, acme_items, export_csv, report_file_names
from conftest import all_text, lake_objects, records, run_cli, start_cli, wait_for

DATE = "2026-11-25"
ITEMS = acme_items(23)  # the emulator's default: three pages of ten
RETRY = {"attempts": 3, "backoff_initial": 0.05, "backoff_max": 0.2, "budget_seconds": 20}
ENV = {"ACME_KEY": "acme-key-5e4d3c2b1a", "ACME_PASS": "acme-pass-0f1e2d3c", "ACME_SECRET": "acme-secret-a1b2c3d4"}

ACCOUNTS = {"name": "accounts", "kind": "json", "path": "/accounts", "params": {"date": "{date}"}}
PRODUCTS = {
    "name": "products",
    "kind": "json",
    "path": "/accounts/{account_id}/products",
    "for_each": {"endpoint": "accounts", "values": "accounts[].id", "as": "account_id"},
}
STATS = {
    "name": "stats",
    "kind": "json",
    "path": "/products/{product_id}/stats",
    "params": {"date": "{date}"},
    "for_each": {"endpoint": "products", "values": "products[].id", "as": "product_id"},
}
POLL = {
    "path": "/reports/{report_id}",
    "status_path": "status",
    "done": ["done"],
    "failed": ["failed", "expired"],
    "message_path": "message",
    "interval_seconds": 0.05,
    "timeout_seconds": 20,
}


def report(kind: str = "installs") -> dict[str, Any]:
    return {
        "name": "installs",
        "kind": "report",
        "id_path": "report_id",
        "poll": POLL,
        "urls": "result.urls",
        "create": {"method": "POST", "path": "/reports", "body": {"type": kind, "from": "{date}", "to": "{date}"}},
        "key": "{source}/{endpoint}/dt={date}/{file_name}",
    }


def oauth2(emu: Emulator, **extra: Any) -> dict[str, Any]:
    return {
        "type": "oauth2_client_credentials",
        "token_url": emu.auth_url + "/oauth/token",
        "client_id": "acme-client",
        "client_secret": "${ACME_SECRET}",
        "scope": "reports.read",
        **extra,
    }


def acme_job(
    tmp_path: Path, emu: Emulator, endpoints: list[dict[str, Any]], auth: dict[str, Any] | None = None, top: dict[str, Any] | None = None, **settings: Any
) -> Path:
    source = {"name": "acme", "base_url": emu.api_url + "/acme", "auth": auth or oauth2(emu), "retry": RETRY, "endpoints": endpoints, **settings}
    job = {"timezone": "UTC", "destination": str(tmp_path / "lake"), **(top or {}), "sources": [source]}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def body(obj: Any) -> bytes:
    """The emulator's JSON bytes for `obj` (compact, in order): what must land byte-exact."""
    return json.dumps(obj, separators=(",", ":")).encode()


def secrets_of(emu: Emulator) -> list[str]:
    """Every credential of the run: configured ones and the access tokens the vendor issued."""
    return [*ENV.values(), *emu.acme._tokens]


def assert_no_secret(lake: Path, result: Any, emu: Emulator) -> None:
    text = all_text(lake, result)
    for secret in secrets_of(emu):
        assert secret not in text


def cli(job: Path, *args: str) -> Any:
    return run_cli("run", str(job), "--date", DATE, *args, env=ENV)


ACCOUNTS_BODY = body({"date": DATE, "accounts": [{"id": "a1"}, {"id": "a2"}, {"id": "a1"}]})


# -- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme, auth",
    [
        ("bearer", {"type": "bearer", "token": "${DATAAI_TOKEN}"}),
        ("api_key_header", {"type": "api_key", "name": "X-Api-Key", "value": "${ACME_KEY}", "location": "header"}),
        ("api_key_query", {"type": "api_key", "name": "api_key", "value": "${ACME_KEY}", "location": "query"}),
        ("basic", {"type": "basic", "username": "acme-user", "password": "${ACME_PASS}"}),
        ("oauth2", None),
        ("oauth2", {"client_auth": "body"}),
    ],
)
def test_each_auth_scheme_lands_and_no_secret_leaks(tmp_path: Path, emulator: Emulator, scheme: str, auth: dict | None) -> None:
    emulator.acme.config.auth = scheme
    if scheme == "oauth2":
        auth = oauth2(emulator, **(auth or {}))
    job = acme_job(
        tmp_path,
        emulator,
        [
            ACCOUNTS,
            {
                "name": "items",
                "kind": "json",
                "path": "/items/cursor",
                "paginate": {"type": "cursor", "cursor_path": "meta.next_cursor", "cursor_param": "cursor"},
            },
        ],
        auth,
    )
    result = cli(job, "--verbose")
    assert result.returncode == 0, result.stdout + result.stderr
    lake = tmp_path / "lake"
    objects = lake_objects(lake)
    assert objects["acme/accounts/dt=2026-11-25/data.json"] == ACCOUNTS_BODY
    assert len(objects) == 4  # accounts + three pages of items
    assert_no_secret(lake, result, emulator)
    api = [r for r in emulator.stats.requests if r.origin == "api"]
    if scheme == "api_key_query":
        assert all("api_key=acme-key-5e4d3c2b1a" in r.target for r in api)  # really sent, in the query
    if scheme == "oauth2":
        assert emulator.acme.tokens_issued == 1  # one token for every unit and page
        token_requests = [r for r in emulator.stats.requests if r.origin == "auth"]
        assert len(token_requests) == 1
        assert (token_requests[0].authorization or "").startswith("Basic ") == (auth.get("client_auth") != "body")
        assert all((r.authorization or "").startswith("Bearer acme-at-") for r in api)  # the access token, only at the API


def test_a_wrong_credential_fails_with_401_and_is_not_retried(tmp_path: Path, emulator: Emulator) -> None:
    emulator.acme.config.auth = "api_key_header"
    job = acme_job(tmp_path, emulator, [ACCOUNTS], {"type": "api_key", "name": "X-Api-Key", "value": "wrong-key-123"})
    result = cli(job)
    assert result.returncode == 1
    [unit] = records(tmp_path / "lake")[-1]["units"]
    assert "HTTP 401" in unit["error"] and unit["attempts"] == 1
    assert "wrong-key-123" not in all_text(tmp_path / "lake", result)


def test_oauth2_renews_a_refused_token_once_then_the_401_is_the_answer(tmp_path: Path, emulator: Emulator) -> None:
    emulator.acme.config.auth = "basic"  # the API refuses every access token
    result = cli(acme_job(tmp_path, emulator, [ACCOUNTS]))
    assert result.returncode == 1
    [unit] = records(tmp_path / "lake")[-1]["units"]
    assert "HTTP 401" in unit["error"] and unit["attempts"] == 1
    assert emulator.acme.tokens_issued == 2 and emulator.stats.count(origin="api", status=401) == 2
    assert_no_secret(tmp_path / "lake", result, emulator)


def test_oauth2_tokens_revoked_or_expiring_mid_run_are_refreshed(tmp_path: Path, emulator: Emulator) -> None:
    emulator.acme.config.token_uses = 2  # the vendor stops honouring a token after two calls
    emulator.config.faults = [Fault(match="/oauth/token", kind="status", status=500, times=1, origin="auth")]
    job = acme_job(tmp_path, emulator, [ACCOUNTS, PRODUCTS, STATS], concurrency=1)
    result = cli(job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(lake_objects(tmp_path / "lake")) == 7
    assert emulator.stats.count(origin="auth", status=500) == 1  # the token endpoint failed once, and was retried
    assert emulator.stats.count(origin="api", status=401) >= 2  # revoked tokens were refused ...
    assert emulator.acme.tokens_issued >= 3  # ... and each refusal renewed the token once
    assert_no_secret(tmp_path / "lake", result, emulator)

    emulator.acme.config.token_uses = None
    emulator.acme.config.token_ttl = 0.6  # short-lived: renewed before it expires (margin: half its life)
    emulator.config.latency_ms = 120
    issued = emulator.acme.tokens_issued
    assert cli(job, "--force").returncode == 0
    assert emulator.acme.tokens_issued - issued >= 2


# -- pagination ---------------------------------------------------------------------------------

STYLES = {
    "link": ("/items/link", {"type": "json_link", "next_url_path": "links.next"}, {}),
    "header": ("/items/header", {"type": "header_link"}, {}),
    "cursor": ("/items/cursor", {"type": "cursor", "cursor_path": "meta.next_cursor", "cursor_param": "cursor"}, {}),
    "stripe": (
        "/items/starting_after",
        {"type": "cursor", "cursor_path": "data[-1].id", "cursor_param": "starting_after", "has_more_path": "has_more"},
        {"limit": 10},
    ),
    "offset": (
        "/items/offset",
        {"type": "offset", "limit": 10, "offset_param": "offset", "limit_param": "limit", "records_path": "data", "total_path": "total"},
        {},
    ),
    "pages": ("/items/pages", {"type": "page_number", "page_param": "page", "start": 1, "records_path": "data", "total_pages_path": "meta.pages"}, {}),
}


def test_every_pagination_style_lands_every_record_once(tmp_path: Path, emulator: Emulator) -> None:
    endpoints = [{"name": name, "kind": "json", "path": path, "params": params, "paginate": paginate} for name, (path, paginate, params) in STYLES.items()]
    result = cli(acme_job(tmp_path, emulator, endpoints))
    assert result.returncode == 0, result.stdout + result.stderr
    objects = lake_objects(tmp_path / "lake")
    for name in STYLES:
        folder = f"acme/{name}/dt={DATE}/"
        keys = sorted(k for k in objects if k.startswith(folder))
        assert keys == [folder + "data.json", folder + "data.page-0002.json", folder + "data.page-0003.json"], name
        pages = [json.loads(objects[k]) for k in keys]
        assert [r for page in pages for r in (page if name == "header" else page["data"])] == ITEMS, name
    assert emulator.stats.count(origin="api") == 18  # 6 styles x 3 pages: no page fetched twice, none past the end


def test_paging_that_ends_on_an_empty_page_lands_the_pages_before_it_and_a_bare_array_needs_no_records_path(tmp_path: Path, emulator: Emulator) -> None:
    emulator.acme.config.items = 20  # two full pages of ten: the third page asked for is empty
    endpoints = [
        {"name": "offset", "kind": "json", "path": "/items/offset", "paginate": {"type": "offset", "limit": 10, "records_path": "data"}},
        {"name": "pages", "kind": "json", "path": "/items/pages", "paginate": {"type": "page_number", "records_path": "data"}},
        {"name": "bare", "kind": "json", "path": "/items/header", "paginate": {"type": "page_number"}},  # pages are bare arrays
    ]
    result = cli(acme_job(tmp_path, emulator, endpoints))
    assert result.returncode == 0, result.stdout + result.stderr
    objects = lake_objects(tmp_path / "lake")
    for name in ("offset", "pages", "bare"):
        keys = sorted(k for k in objects if k.startswith(f"acme/{name}/"))
        assert keys == [f"acme/{name}/dt={DATE}/data.json", f"acme/{name}/dt={DATE}/data.page-0002.json"], name
        pages = [json.loads(objects[k]) for k in keys]
        assert [r for page in pages for r in (page if name == "bare" else page["data"])] == acme_items(20), name
        assert emulator.stats.count(path_contains=f"/acme/items/{name.replace('bare', 'header')}") == 3  # the empty page was asked for
    assert records(tmp_path / "lake")[-1]["counts"] == {"landed": 3}


def test_an_empty_answer_means_no_data_where_the_endpoint_says_empty_ok(tmp_path: Path, emulator: Emulator) -> None:
    emulator.config.faults = [
        Fault(match="/acme/accounts", kind="body", body=b"", status=204),
        Fault(match=r"/acme/items/link\?page=2", kind="body", body=b"", status=204),  # ends the paging: not landed
        Fault(match="/acme/items/cursor", kind="body", body=b""),  # an empty 200 where no one said it may be
    ]
    link = {"type": "json_link", "next_url_path": "links.next"}
    endpoints = [
        {**ACCOUNTS, "empty": "ok"},
        PRODUCTS,
        {"name": "link", "kind": "json", "path": "/items/link", "paginate": link, "empty": "ok"},
        {"name": "cursor", "kind": "json", "path": "/items/cursor"},
    ]
    job = acme_job(tmp_path, emulator, endpoints)
    result = cli(job)
    assert result.returncode == 1
    objects = lake_objects(tmp_path / "lake")
    assert (
        objects
        == {
            f"acme/accounts/dt={DATE}/data.json": b"",  # as answered: no data, and no products fanned out of it
            f"acme/link/dt={DATE}/data.json": body({"data": ITEMS[:10], "links": {"next": emulator.api_url + "/acme/items/link?page=2"}}),
        }
    )
    units = {u["endpoint"]: u for u in records(tmp_path / "lake")[-1]["units"]}
    assert units["accounts"]["status"] == units["link"]["status"] == "landed"
    assert units["accounts"]["attempts"] == 1 and units["link"]["attempts"] == 2
    assert units["cursor"]["status"] == "failed" and units["cursor"]["attempts"] == 3  # retried like a maintenance page
    assert "the answer is empty (HTTP 200); if that means no data, say `empty: ok` on the endpoint" in units["cursor"]["error"]
    assert emulator.stats.count(path_contains="/acme/accounts/") == 0

    again = cli(job, "--only", "accounts")
    assert again.returncode == 0 and records(tmp_path / "lake")[-1]["counts"] == {"skipped": 1}  # no data is an answer: kept
    assert_no_secret(tmp_path / "lake", result, emulator)


def test_a_pagination_loop_a_foreign_next_link_and_max_pages_fail_their_units(tmp_path: Path, emulator: Emulator) -> None:
    link = {"type": "json_link", "next_url_path": "links.next"}
    endpoints = [
        {"name": "loop", "kind": "json", "path": "/items/loop", "paginate": link},
        {"name": "cross", "kind": "json", "path": "/items/cross", "paginate": link},
        {"name": "capped", "kind": "json", "path": "/items/link", "paginate": {**link, "max_pages": 2}},
    ]
    result = cli(acme_job(tmp_path, emulator, endpoints))
    assert result.returncode == 1
    assert lake_objects(tmp_path / "lake") == {}
    errors = {u["endpoint"]: u["error"] for u in records(tmp_path / "lake")[-1]["units"]}
    assert "pagination loop at page 3" in errors["loop"]
    assert "another origin" in errors["cross"]
    assert "max_pages (2)" in errors["capped"]
    assert emulator.stats.count(origin="files") == 0  # the foreign link was never followed
    assert_no_secret(tmp_path / "lake", result, emulator)


# -- POST and raw files -------------------------------------------------------------------------


def test_post_json_body_with_placeholders_is_sent_and_retried(tmp_path: Path, emulator: Emulator) -> None:
    emulator.config.faults = [Fault(match="/acme/search", kind="status", status=503, times=1)]
    search = {
        "name": "search",
        "kind": "json",
        "path": "/search",
        "method": "POST",
        "body": {"filter": {"from": "{date-6}", "to": "{date}"}, "q": "{country}"},
        "matrix": {"country": ["US"]},
    }
    result = cli(acme_job(tmp_path, emulator, [search]))
    assert result.returncode == 0, result.stdout + result.stderr
    landed = lake_objects(tmp_path / "lake")["acme/search/dt=2026-11-25/country=US.json"]
    expected = {"query": {"filter": {"from": "2026-11-19", "to": DATE}, "q": "US"}, "results": [i for i in ITEMS if i["n"] % 5 == 0]}
    assert landed == body(expected)
    assert records(tmp_path / "lake")[-1]["units"][0]["attempts"] == 2


def test_raw_file_endpoints_land_bytes_as_served_and_a_cut_body_lands_nothing(tmp_path: Path, emulator: Emulator) -> None:
    endpoints = [
        {"name": "csv", "kind": "file", "path": "/export.csv", "params": {"date": "{date}"}},
        {"name": "gz", "kind": "file", "path": "/export.csv.gz", "params": {"date": "{date}"}},
    ]
    job = acme_job(tmp_path, emulator, endpoints)
    result = cli(job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lake_objects(tmp_path / "lake") == {
        "acme/csv/dt=2026-11-25/data.csv": export_csv(DATE),
        "acme/gz/dt=2026-11-25/data.csv.gz": gzip.compress(export_csv(DATE), mtime=0),
    }
    assert {u["kind"] for u in records(tmp_path / "lake")[-1]["units"]} == {"file"}

    emulator.config.faults = [Fault(match="/acme/export", kind="cut")]  # every attempt cut half-way
    again = run_cli("run", str(job), "--date", "2026-11-24", env=ENV)
    assert again.returncode == 1
    assert not [k for k in lake_objects(tmp_path / "lake") if "2026-11-24" in k]


MAINTENANCE = b"<html><body>Down for maintenance</body></html>"


def test_an_html_page_where_a_file_is_expected_is_retried_and_never_lands(tmp_path: Path, emulator: Emulator) -> None:
    endpoints = [
        {"name": "csv", "kind": "file", "path": "/export.csv", "params": {"date": "{date}"}},
        {"name": "gz", "kind": "file", "path": "/export.csv.gz", "params": {"date": "{date}"}, "verify": "length"},
    ]
    job = acme_job(tmp_path, emulator, endpoints)
    emulator.config.faults = [
        Fault(match=rf"/acme/export\.{name}\?", kind="body", body=MAINTENANCE, content_type="text/html; charset=utf-8", times=1) for name in ("csv", r"csv\.gz")
    ]
    result = cli(job)  # each file meets the page once, and lands on its second attempt
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {"acme/csv/dt=2026-11-25/data.csv": export_csv(DATE), "acme/gz/dt=2026-11-25/data.csv.gz": gzip.compress(export_csv(DATE), mtime=0)}
    assert lake_objects(tmp_path / "lake") == expected
    assert {u["endpoint"]: u["attempts"] for u in records(tmp_path / "lake")[-1]["units"]} == {"csv": 2, "gz": 2}

    emulator.config.faults = [Fault(match="/acme/export", kind="body", body=MAINTENANCE, content_type="text/html")]
    down = run_cli("run", str(job), "--date", "2026-11-24", env=ENV)  # the page on every attempt
    assert down.returncode == 1
    assert "answered an HTML page (text/html) where a file was expected" in down.stdout
    assert not [k for k in lake_objects(tmp_path / "lake") if "2026-11-24" in k]
    emulator.config.faults = []
    again = run_cli("run", str(job), "--date", "2026-11-24", env=ENV)  # so the rerun fetches them, not skips them
    assert again.returncode == 0, again.stdout + again.stderr
    assert lake_objects(tmp_path / "lake")["acme/csv/dt=2026-11-24/data.csv"] == export_csv("2026-11-24")
    assert_no_secret(tmp_path / "lake", down, emulator)


# -- fan-out ------------------------------------------------------------------------------------


def test_fan_out_chain_lands_every_child_once(tmp_path: Path, emulator: Emulator) -> None:
    job = acme_job(tmp_path, emulator, [ACCOUNTS, PRODUCTS, STATS])
    dry = run_cli("run", str(job), "--date", DATE, "--dry-run")
    assert dry.returncode == 0 and emulator.stats.count() == 0
    assert "acme/products/2026-11-25\n    pending: one unit per accounts[].id in acme/accounts/2026-11-25" in dry.stdout

    result = cli(job)
    assert result.returncode == 0, result.stdout + result.stderr
    objects = lake_objects(tmp_path / "lake")
    products = {
        f"acme/products/dt={DATE}/account_id={a}.json": body({"account": a, "products": [{"id": f"{a}-p1"}, {"id": f"{a}-p2"}]}) for a in ("a1", "a2")
    }  # a1 is listed twice: one unit
    assert {k: v for k, v in objects.items() if "/products/" in k} == products
    stats = sorted(k for k in objects if "/stats/" in k)
    assert stats == [f"acme/stats/dt={DATE}/product_id={p}.json" for p in ("a1-p1", "a1-p2", "a2-p1", "a2-p2")]
    assert emulator.stats.count(path_contains="/products/a1-p1/stats") == 1
    assert records(tmp_path / "lake")[-1]["counts"] == {"landed": 7}

    status = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert status.returncode == 0, status.stdout
    (tmp_path / "lake" / stats[0]).unlink()
    status = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert status.returncode == 1
    assert "acme/stats/2026-11-25/product_id=a1-p1" in status.stdout


def test_fan_out_reads_a_parent_that_landed_in_an_earlier_run(tmp_path: Path, emulator: Emulator) -> None:
    job = acme_job(tmp_path, emulator, [ACCOUNTS, PRODUCTS])
    assert cli(job, "--only", "accounts").returncode == 0
    assert set(lake_objects(tmp_path / "lake")) == {"acme/accounts/dt=2026-11-25/data.json"}
    emulator.stats.reset()
    result = cli(job, "--only", "products")
    assert result.returncode == 0, result.stdout + result.stderr
    assert emulator.stats.count(path_contains="/acme/accounts?") == 0  # the parent came from the lake
    assert len([k for k in lake_objects(tmp_path / "lake") if "/products/" in k]) == 2
    assert records(tmp_path / "lake")[-1]["counts"] == {"skipped": 1, "landed": 2}


def test_a_failed_parent_marks_its_children_not_attempted(tmp_path: Path, emulator: Emulator) -> None:
    emulator.config.faults = [Fault(match="/acme/accounts", kind="status", status=400)]
    result = cli(acme_job(tmp_path, emulator, [ACCOUNTS, PRODUCTS, STATS]))
    assert result.returncode == 1
    units = {u["endpoint"]: u for u in records(tmp_path / "lake")[-1]["units"]}
    assert units["accounts"]["status"] == "failed"
    for child in ("products", "stats"):
        assert units[child]["status"] == "not_attempted"
        assert "parent acme/accounts/2026-11-25 did not land" in units[child]["error"]
    status = run_cli("status", str(tmp_path / "job.yaml"), "--from", DATE, "--to", DATE)
    assert status.returncode == 1
    for endpoint in ("accounts", "products", "stats"):
        assert f"acme/{endpoint}: missing {DATE}" in status.stdout


def test_a_fan_out_cycle_is_a_job_file_error(tmp_path: Path, emulator: Emulator) -> None:
    a = {**PRODUCTS, "name": "a", "for_each": {**PRODUCTS["for_each"], "endpoint": "b"}}
    b = {**PRODUCTS, "name": "b", "for_each": {**PRODUCTS["for_each"], "endpoint": "a"}}
    result = run_cli("validate", str(acme_job(tmp_path, emulator, [ACCOUNTS, a, b])), env=ENV)
    assert result.returncode == 2
    assert "for_each forms a cycle" in result.stderr and "Traceback" not in result.stderr


# -- report jobs --------------------------------------------------------------------------------


def expected_report(emu: Emulator, kind: str = "installs") -> dict[str, bytes]:
    return {
        f"acme/installs/dt={DATE}/{name.rsplit('/', 1)[1]}": emu.file_bytes_for(name)
        for name in report_file_names(kind, DATE, DATE, emu.acme.config.report_files)
    }


def test_report_is_created_once_polled_and_its_files_land(tmp_path: Path, emulator: Emulator) -> None:
    job = acme_job(tmp_path, emulator, [report()])
    result = cli(job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lake_objects(tmp_path / "lake") == expected_report(emulator)
    assert emulator.acme.reports_created == 1
    assert emulator.stats.count(path_contains="/acme/reports/rep-1") == 3  # pending, pending, done
    listing = next(u for u in records(tmp_path / "lake")[-1]["units"] if u["kind"] == "listing")
    assert listing["listing"]["report_id"] == "rep-1"
    emulator.stats.reset()
    again = cli(job)
    assert again.returncode == 0
    assert emulator.stats.requests == []  # every file of the report is in place: not even a poll
    assert records(tmp_path / "lake")[-1]["counts"] == {"skipped": 1}
    assert cli(job, "--force").returncode == 0
    assert emulator.acme.reports_created == 2  # --force asks for a fresh report
    assert records(tmp_path / "lake")[-1]["counts"] == {"listed": 1, "landed": 2}
    assert_no_secret(tmp_path / "lake", result, emulator)


def test_a_run_killed_while_polling_resumes_the_same_report(tmp_path: Path, emulator: Emulator) -> None:
    emulator.acme.config.report_polls = 10_000  # pending until the test says otherwise
    job = acme_job(tmp_path, emulator, [report()])
    process = start_cli("run", str(job), "--date", DATE, env=ENV)
    try:
        wait_for(lambda: emulator.stats.count(path_contains="/acme/reports/rep-1") >= 2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert emulator.acme.reports_created == 1
    emulator.acme.config.report_polls = 0
    result = cli(job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert emulator.acme.reports_created == 1  # no second report
    assert lake_objects(tmp_path / "lake") == expected_report(emulator)
    listing = next(u for u in records(tmp_path / "lake")[-1]["units"] if u["kind"] == "listing")
    assert listing["listing"]["report_id"] == "rep-1" and listing["listing"]["resumed"] is True


def test_a_failed_report_fails_its_unit_with_the_vendors_message_and_a_rerun_asks_again(tmp_path: Path, emulator: Emulator) -> None:
    job = acme_job(tmp_path, emulator, [report("broken")])
    result = cli(job)
    assert result.returncode == 1
    [unit] = records(tmp_path / "lake")[-1]["units"]
    assert "report rep-1 ended 'failed': the report engine ran out of memory" in unit["error"]
    assert cli(job).returncode == 1
    assert emulator.acme.reports_created == 2  # a failed report is not resumed


def test_polls_count_against_the_daily_quota(tmp_path: Path, emulator: Emulator) -> None:
    emulator.acme.config.report_polls = 5
    result = cli(acme_job(tmp_path, emulator, [report()], requests_per_day=4))
    assert result.returncode == 1
    assert emulator.stats.count(origin="api") == 4  # one create and three polls, then the quota was spent
    [unit] = records(tmp_path / "lake")[-1]["units"]
    assert "quota" in unit["error"]


def test_a_stopped_run_names_the_fan_out_children_its_parents_never_reached(tmp_path: Path, emulator: Emulator) -> None:
    stall = Fault(match="/acme/accounts", kind="stall", seconds=15, times=1)
    emulator.config.faults = [stall]
    process = start_cli("run", str(acme_job(tmp_path, emulator, [ACCOUNTS, PRODUCTS, STATS])), "--date", DATE, env=ENV)
    try:
        wait_for(lambda: stall.fired >= 1)  # the parent's request is in flight
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, out + err
    units = {u["unit"]: u for u in records(tmp_path / "lake")[-1]["units"]}
    for unit in (f"acme/accounts/{DATE}", f"acme/products/{DATE}", f"acme/stats/{DATE}"):
        assert units[unit]["status"] == "interrupted" and units[unit]["error"] == "run interrupted by SIGTERM", unit


def test_a_rerun_polls_again_only_for_a_report_with_a_file_missing(tmp_path: Path, emulator: Emulator) -> None:
    job = acme_job(tmp_path, emulator, [report()])
    result = run_cli("run", str(job), "--from", DATE, "--to", "2026-11-26", env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    lake = tmp_path / "lake"
    gone = lake / f"acme/installs/dt={DATE}/part-1.csv.gz"
    kept = lake_objects(lake)
    gone.unlink()
    emulator.stats.reset()
    again = run_cli("run", str(job), "--from", DATE, "--to", "2026-11-26", env=ENV)
    assert again.returncode == 0, again.stdout + again.stderr
    assert lake_objects(lake) == kept
    assert emulator.acme.reports_created == 2  # one per date, none created again
    polled = [r.target for r in emulator.stats.requests if r.origin == "api"]
    assert polled == ["/acme/reports/rep-1"] or polled == ["/acme/reports/rep-2"]  # only the report missing a file
    assert emulator.stats.count(origin="files") == 1  # and only the missing file
    counts = records(lake)[-1]["counts"]
    assert counts == {"skipped": 2, "listed": 1, "landed": 1}


def test_a_report_starts_before_single_requests_that_were_planned_first(tmp_path: Path, emulator: Emulator) -> None:
    singles = [{"name": f"single{n}", "kind": "json", "path": "/accounts", "params": {"date": "{date}", "n": str(n)}} for n in range(3)]
    job = acme_job(tmp_path, emulator, [*singles, report()], concurrency=1)
    result = cli(job)
    assert result.returncode == 0, result.stdout + result.stderr
    first = next(r.target for r in emulator.stats.requests if r.origin == "api")
    assert first == "/acme/reports"  # the longest chain (create, polls, files) took the one slot first
