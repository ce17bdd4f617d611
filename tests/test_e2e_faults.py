"""The fault matrix: every transient and permanent fault, end to end through the CLI.

For each: the lake holds exactly the expected objects (none missing unless the fault is
permanent, none duplicated, none corrupt), the exit code and summary are right, and no secret
appears in any output.
"""

from __future__ import annotations

import email.utils
import json
import time
from pathlib import Path

import httpx
import pytest

from apilake.emulator import Fault
from conftest import TOKEN, all_text, bulk_endpoint, expected_bulk, lake_objects, records, run_cli, write_job

DATE = "2026-11-25"
MAINTENANCE = b"<html>maintenance</html>"  # what a proxy in front of the vendor answers, with 200


def details(products: int) -> dict:
    return {
        "name": "details",
        "kind": "json",
        "path": "/v1.3/apps/{market}/app/{product_id}/details",
        "matrix": {"market": ["ios"], "product_id": list(range(1, products + 1))},
    }


def units_by_product(lake: Path) -> dict[int, dict]:
    return {int(u["unit"].rsplit("=", 1)[1]): u for u in records(lake)[-1]["units"]}


TRANSIENT = [
    pytest.param(Fault(match="/app/2/details", kind="status", status=503, times=2), 3, id="503-burst"),
    pytest.param(Fault(match="/app/2/details", kind="status", status=500, times=1), 2, id="500"),
    pytest.param(Fault(match="/app/2/details", kind="status", status=428, times=1), 2, id="428-blacklisting"),
    pytest.param(Fault(match="/app/2/details", kind="status", status=429, times=1), 2, id="429-no-retry-after"),
    pytest.param(Fault(match="/app/2/details", kind="cut", times=1), 2, id="reset-mid-body"),
    pytest.param(Fault(match="/app/2/details", kind="stall", seconds=3, times=1), 2, id="stall"),
    pytest.param(Fault(match="/app/2/details", kind="echo_secret", status=502, times=1), 2, id="echoed-secret-502"),
    pytest.param(Fault(match="/app/2/details", kind="body", body=MAINTENANCE, content_type="text/html", times=1), 2, id="html-200-once"),
    pytest.param(Fault(match="/app/2/details", kind="body", body=MAINTENANCE, content_type="text/html", times=2), 3, id="html-200-twice"),
]


@pytest.mark.parametrize("fault, attempts", TRANSIENT)
def test_transient_faults_are_retried_and_everything_lands_once(tmp_path: Path, emulator, fault: Fault, attempts: int) -> None:
    emulator.config.faults = [fault]
    job = write_job(tmp_path, emulator, [details(3)], source={"timeouts": {"read": 0.5}})
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout + result.stderr
    lake = tmp_path / "lake"
    assert len(lake_objects(lake)) == 3
    units = units_by_product(lake)
    assert units[2]["attempts"] == attempts
    assert units[1]["attempts"] == units[3]["attempts"] == 1
    if fault.kind != "stall":  # the emulator records a request when it answers; a stalled one answers late
        assert emulator.stats.count(path_contains="/app/2/details") == attempts
    assert TOKEN not in all_text(lake, result)


PERMANENT = [
    pytest.param(Fault(match="/app/2/details", kind="status", status=400), "HTTP 400", 1, id="400"),
    pytest.param(Fault(match="/app/2/details", kind="status", status=401), "HTTP 401", 1, id="401"),
    pytest.param(Fault(match="/app/2/details", kind="status", status=403), "HTTP 403", 1, id="403"),
    pytest.param(Fault(match="/app/2/details", kind="status", status=404), "HTTP 404", 1, id="404"),
    pytest.param(Fault(match="/app/2/details", kind="status", status=503), "HTTP 503", 3, id="503-forever"),
    pytest.param(Fault(match="/app/2/details", kind="body", body=MAINTENANCE, content_type="text/html"), "not JSON", 3, id="html-200-forever"),
    pytest.param(Fault(match="/app/2/details", kind="body", body=b'{"code": 403, "error": "not in subscription"}'), "code 403", 1, id="error-envelope-200"),
    pytest.param(Fault(match="/app/2/details", kind="deep_json", depth=10_000), "nested too deeply", 1, id="deep-json"),
    pytest.param(Fault(match="/app/2/details", kind="stall", seconds=5), "timed out", 3, id="stall-forever"),
    pytest.param(Fault(match="/app/2/details", kind="echo_secret", status=400), "HTTP 400", 1, id="echoed-secret"),
]


@pytest.mark.parametrize("fault, reason, attempts", PERMANENT)
def test_permanent_faults_fail_only_their_unit(tmp_path: Path, emulator, fault: Fault, reason: str, attempts: int) -> None:
    emulator.config.faults = [fault]
    job = write_job(tmp_path, emulator, [details(3)], source={"timeouts": {"read": 0.5}})
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1
    lake = tmp_path / "lake"
    assert sorted(lake_objects(lake)) == [
        "dataai/details/dt=2026-11-25/market=ios,product_id=1.json",
        "dataai/details/dt=2026-11-25/market=ios,product_id=3.json",
    ]
    failed = units_by_product(lake)[2]
    assert failed["status"] == "failed" and reason in failed["error"]
    assert failed["attempts"] == attempts
    assert f"FAILED dataai/details/{DATE}/market=ios,product_id=2: " in result.stdout
    assert TOKEN not in all_text(lake, result)


def test_whole_request_timeout_stops_a_slow_drip(tmp_path: Path, emulator) -> None:
    emulator.config.faults = [Fault(match="/app/2/details", kind="drip", chunk=1, interval=0.2)]
    job = write_job(tmp_path, emulator, [details(2)], source={"timeouts": {"total": 1}, "retry": {"attempts": 1}})
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1
    assert "no complete response within 1 s" in units_by_product(tmp_path / "lake")[2]["error"]


@pytest.mark.parametrize("as_date", [False, True], ids=["seconds", "http-date"])
def test_retry_after_is_honoured(tmp_path: Path, emulator, as_date: bool) -> None:
    # An HTTP date names an instant, in whole seconds: 4-5 s ahead is well after the 429 even when
    # the command is slow to start on a loaded machine.
    until = int(time.time()) + 5
    value = email.utils.formatdate(until, usegmt=True) if as_date else "1"
    emulator.config.faults = [Fault(match="/app/1/details", kind="status", status=429, retry_after=value, times=1)]
    job = write_job(tmp_path, emulator, [details(1)])
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    first, second = [r.wall for r in emulator.stats.requests if "/app/1/details" in r.target]
    if as_date:
        assert first < until - 1  # the 429 came well before the named instant ...
        assert second >= until - 0.05  # ... and the retry waited for it (back-off alone would be ~0.05 s)
    else:
        assert second - first >= 0.9


def test_rate_limit_is_respected_with_high_concurrency(tmp_path: Path, emulator) -> None:
    emulator.config.requests_per_minute = 5  # the emulator's quota: 5 calls ...
    emulator.config.quota_window_s = 1.0  # ... in any 1 s window, else 429
    job = write_job(tmp_path, emulator, [details(16)], source={"concurrency": 16, "requests_per_second": 5})
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout
    assert emulator.stats.count(status=429) == 0
    assert emulator.stats.max_in_window(1.0) <= 5
    assert len(lake_objects(tmp_path / "lake")) == 16


def test_quota_429s_without_client_limit_are_retried_until_everything_lands(tmp_path: Path, emulator) -> None:
    emulator.config.requests_per_minute = 4
    emulator.config.quota_window_s = 1.0
    emulator.config.quota_retry_after = 1
    job = write_job(tmp_path, emulator, [details(8)], source={"concurrency": 8, "retry": {"attempts": 6, "backoff_initial": 0.05}})
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout
    assert emulator.stats.count(status=429) > 0
    assert len(lake_objects(tmp_path / "lake")) == 8


def test_daily_quota_stops_new_units_and_exits_1(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [details(8)], source={"concurrency": 1, "requests_per_day": 5})
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1
    assert emulator.stats.count(origin="api") == 5
    assert len(lake_objects(tmp_path / "lake")) == 5
    statuses = sorted(u["status"] for u in records(tmp_path / "lake")[-1]["units"])
    assert statuses == ["landed"] * 5 + ["not_attempted"] * 3
    assert "daily request quota" in result.stdout


@pytest.mark.parametrize(
    "body, content_type",
    [
        pytest.param(MAINTENANCE, "text/html", id="html-200"),
        pytest.param(b'{"code": 200, "data": {}}', "application/json", id="no-urls"),
    ],
)
def test_a_listing_answered_once_with_a_transient_body_is_retried_and_the_lake_completes(tmp_path: Path, emulator, body: bytes, content_type: str) -> None:
    emulator.config.faults = [Fault(match="get-bulk-urls", kind="body", body=body, content_type=content_type, times=1)]
    job = write_job(tmp_path, emulator, [bulk_endpoint("app_downloads")])
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout + result.stderr
    lake = tmp_path / "lake"
    assert lake_objects(lake) == expected_bulk(emulator, "app_downloads", DATE, DATE)
    listing = next(u for u in records(lake)[-1]["units"] if u["kind"] == "listing")
    assert listing["attempts"] == 2
    assert emulator.stats.count(path_contains="get-bulk-urls") == 2


def test_a_listed_url_that_is_not_http_fails_its_file_and_reads_nothing_local(tmp_path: Path, emulator) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-local-file-content")
    endpoint = bulk_endpoint("app_downloads")
    query = {k: v.replace("{date}", DATE) for k, v in endpoint["params"].items()}
    offered = httpx.get(f"{emulator.api_url.rstrip('/')}{endpoint['path']}", params=query, headers={"Authorization": f"Bearer {TOKEN}"})
    listing = offered.json()
    listing["data"]["urls"].insert(0, f"file://{secret}")
    emulator.config.faults = [Fault(match="get-bulk-urls", kind="body", body=json.dumps(listing).encode())]
    result = run_cli("run", str(write_job(tmp_path, emulator, [endpoint])), "--date", DATE)
    assert result.returncode == 1, result.stdout + result.stderr
    files = [u for u in records(tmp_path / "lake")[-1]["units"] if u["kind"] == "file"]
    refused = [u for u in files if u["url"].startswith("file://")]
    assert len(refused) == 1 and refused[0]["status"] == "failed" and "not an http or https URL" in refused[0]["error"]
    assert {u["status"] for u in files if u not in refused} == {"landed"}  # the listing's other files are not held back
    assert "TOPSECRET" not in all_text(tmp_path / "lake", result)
