"""End to end: `apilake run` with JSON endpoints against the emulator on loopback."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from apilake.emulator import Fault, expected_records
from conftest import APILAKE, TOKEN, all_text, lake_objects, records, run_cli, write_job

DATE = "2026-11-25"
HISTORY = {
    "name": "app_history",
    "kind": "json",
    "path": "/v1.3/intelligence/apps/{market}/app/{product_id}/history",
    "params": {"countries": ["US", "FR", "KR"], "start_date": "{date-6}", "end_date": "{date}"},
    "matrix": {"market": ["ios", "google-play"], "product_id": [284882215, 310633997]},
    "paginate": "next_page",
}
REVIEWS = {
    "name": "reviews",
    "kind": "json",
    "path": "/v1.3/apps/{market}/app/{product_id}/reviews",
    "params": {"countries": "US", "start_date": "{date-6}", "end_date": "{date}"},
    "matrix": {"market": ["ios"], "product_id": [1, 2, 3, 4]},
    "paginate": "page_index",
}


def landed_records(lake: Path, prefix: str, list_key: str) -> dict[str, list]:
    """Records per unit file stem, across its pages, in page order."""
    units: dict[str, list] = {}
    for key, body in lake_objects(lake).items():
        if key.startswith(prefix):
            stem = key.rsplit("/", 1)[1].split(".")[0]
            units.setdefault(stem, []).append((key, json.loads(body)[list_key]))
    return {stem: [r for _, page in sorted(pages, key=lambda kp: (".page-" in kp[0], kp[0])) for r in page] for stem, pages in units.items()}


def test_every_record_lands_exactly_once_across_pages_and_matrix(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [HISTORY, REVIEWS])
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stderr
    lake = tmp_path / "lake"

    history = landed_records(lake, "dataai/app_history/dt=2026-11-25/", "list")
    assert len(history) == 4
    for market in ("ios", "google-play"):
        for product in (284882215, 310633997):
            expected = expected_records(
                f"/v1.3/intelligence/apps/{market}/app/{product}/history",
                {"countries": "US+FR+KR", "start_date": "2026-11-19", "end_date": DATE},
            )
            assert len(expected) > 10  # spans several pages
            assert history[f"market=ios,product_id={product}" if market == "ios" else f"market=google-play,product_id={product}"] == expected

    reviews = landed_records(lake, "dataai/reviews/", "reviews")
    for product in (1, 2, 3, 4):
        expected = expected_records(f"/v1.3/apps/ios/app/{product}/reviews", {"countries": "US", "start_date": "2026-11-19", "end_date": DATE})
        assert reviews[f"market=ios,product_id={product}"] == expected
    [record] = records(lake)
    assert record["status"] == "succeeded" and record["counts"] == {"landed": 8}


def test_compressed_json_answers_land_as_the_json_itself(tmp_path: Path, emulator) -> None:
    plain = write_job(tmp_path / "plain", emulator, [HISTORY])
    assert run_cli("run", str(plain), "--date", DATE).returncode == 0
    emulator.config.compress_json = True
    emulator.stats.reset()
    gzipped = write_job(tmp_path / "gzipped", emulator, [HISTORY])
    result = run_cli("run", str(gzipped), "--date", DATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {r.encoding for r in emulator.stats.requests} == {"gzip"}  # every page came compressed
    landed = lake_objects(tmp_path / "gzipped" / "lake")
    assert landed == lake_objects(tmp_path / "plain" / "lake") and len(landed) > 4  # pages, inflated
    for unit in records(tmp_path / "gzipped" / "lake")[-1]["units"]:
        for obj in unit["objects"]:
            assert obj["bytes"] == len(landed[obj["key"]])
            assert obj["sha256"] == hashlib.sha256(landed[obj["key"]]).hexdigest()


def test_an_upper_case_http_proxy_variable_carries_the_requests(tmp_path: Path, emulator) -> None:
    # libcurl reads only `http_proxy`; users (and httpx) expect `HTTP_PROXY` to work too.
    seen: list[str] = []
    upstream = urlsplit(emulator.api_url)

    class ForwardProxy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)  # absolute-form: the proxy is asked for http://vendor.invalid/...
            target = urlsplit(self.path)
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=10)
            conn.request("GET", f"{target.path}?{target.query}", headers={"Authorization": self.headers["Authorization"]})
            answer = conn.getresponse()
            body = answer.read()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.getheader("Content-Type") or "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            conn.close()

        def log_message(self, *args: object) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), ForwardProxy)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        job = write_job(tmp_path, emulator, [REVIEWS], source={"base_url": "http://vendor.invalid"})
        env = {"HTTP_PROXY": f"http://127.0.0.1:{proxy.server_port}", "http_proxy": "", "NO_PROXY": "", "no_proxy": ""}
        result = run_cli("run", str(job), "--date", DATE, env=env)
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(landed_records(tmp_path / "lake", "dataai/reviews/", "reviews")) == 4
    assert seen and all(path.startswith("http://vendor.invalid/v1.3/apps/ios/app/") for path in seen)


def test_second_run_skips_what_landed(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [HISTORY])
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    before = lake_objects(tmp_path / "lake")
    emulator.stats.reset()
    again = run_cli("run", str(job), "--date", DATE)
    assert again.returncode == 0
    assert emulator.stats.count(origin="api") == 0
    assert lake_objects(tmp_path / "lake") == before
    assert records(tmp_path / "lake")[-1]["counts"] == {"skipped": 4}


def test_401_503_and_html_fail_their_units_and_the_rest_land(tmp_path: Path, emulator) -> None:
    emulator.config.faults = [
        Fault(match="/app/1/reviews", kind="status", status=401),
        Fault(match="/app/2/reviews", kind="status", status=503),
        Fault(match="/app/3/reviews", kind="body", body=b"<html><body>Maintenance</body></html>", content_type="text/html"),
    ]
    job = write_job(tmp_path, emulator, [REVIEWS])
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1
    keys = set(lake_objects(tmp_path / "lake"))
    assert keys == {"dataai/reviews/dt=2026-11-25/market=ios,product_id=4.json"}
    failed = {u["unit"]: u for u in records(tmp_path / "lake")[-1]["units"] if u["status"] == "failed"}
    assert set(failed) == {f"dataai/reviews/{DATE}/market=ios,product_id={p}" for p in (1, 2, 3)}
    assert "HTTP 401" in failed[f"dataai/reviews/{DATE}/market=ios,product_id=1"]["error"]
    assert failed[f"dataai/reviews/{DATE}/market=ios,product_id=1"]["attempts"] == 1  # never retried
    assert failed[f"dataai/reviews/{DATE}/market=ios,product_id=2"]["attempts"] == 3  # retried, then given up
    assert "not JSON" in failed[f"dataai/reviews/{DATE}/market=ios,product_id=3"]["error"]
    for product in (1, 2, 3):
        assert f"product_id={product}" in result.stdout  # the summary names every failed unit


def test_dry_run_prints_units_and_keys_and_touches_no_network(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [HISTORY])
    result = run_cli("run", str(job), "--date", DATE, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert emulator.stats.count() == 0
    assert not (tmp_path / "lake").exists()
    assert "dataai/app_history/dt=2026-11-25/market=ios,product_id=284882215.json" in result.stdout
    assert f"{emulator.api_url}/v1.3/intelligence/apps/google-play/app/310633997/history?countries=US+FR+KR" in result.stdout
    assert "4 unit(s)" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_bad_job_file_exits_2_with_the_key_path(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [{**HISTORY, "kind": "xml"}])
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 2
    assert "sources[0].endpoints[0].kind" in result.stderr
    assert str(job) in result.stderr
    assert "Traceback" not in result.stderr
    assert emulator.stats.count() == 0


def test_hostile_parameter_value_stays_inside_the_destination(tmp_path: Path, emulator) -> None:
    hostile = {**REVIEWS, "matrix": {"market": ["ios"], "product_id": ["../../../etc", "..", "a/../../b"]}, "key": "{source}/{market}/{product_id}/data.json"}
    job = write_job(tmp_path, emulator, [hostile])
    run_cli("run", str(job), "--date", DATE)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path / "lake") and p.name != "job.yaml"]
    assert outside == []
    for key in lake_objects(tmp_path / "lake"):
        assert ".." not in key.split("/")


def test_token_never_reaches_logs_or_records(tmp_path: Path, emulator) -> None:
    emulator.config.faults = [Fault(match="/app/1/reviews", kind="echo_secret", status=400)]
    job = write_job(tmp_path, emulator, [REVIEWS, HISTORY])
    result = run_cli("run", str(job), "--date", DATE, "--verbose", "--log-format", "json")
    assert result.returncode == 1
    assert emulator.stats.auth_headers("api") > 0  # the token was really sent to the API
    echoed = [u for u in records(tmp_path / "lake")[-1]["units"] if "product_id=1" in u["unit"]]
    assert echoed and echoed[0]["status"] == "failed"
    assert TOKEN not in all_text(tmp_path / "lake", result)


def test_dry_run_needs_no_token_but_a_real_run_does(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [HISTORY])
    environ = {k: v for k, v in os.environ.items() if k != "DATAAI_TOKEN"}
    dry = subprocess.run([APILAKE, "run", str(job), "--date", DATE, "--dry-run"], capture_output=True, text=True, env=environ)
    assert dry.returncode == 0, dry.stderr
    real = subprocess.run([APILAKE, "run", str(job), "--date", DATE], capture_output=True, text=True, env=environ)
    assert real.returncode == 2 and "DATAAI_TOKEN is not set" in real.stderr


def test_a_shorter_refetch_removes_pages_left_from_before(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [{**HISTORY, "matrix": {"market": ["ios"], "product_id": [284882215]}}])
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    folder = tmp_path / "lake" / "dataai/app_history/dt=2026-11-25"
    assert len(list(folder.iterdir())) == 5  # 42 records in pages of 10
    emulator.config.page_size = 100
    assert run_cli("run", str(job), "--date", DATE, "--force").returncode == 0
    [only] = folder.iterdir()
    assert len(json.loads(only.read_bytes())["list"]) == 42


def test_a_relanding_cut_short_leaves_the_unit_missing_not_mixed(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [{**HISTORY, "matrix": {"market": ["ios"], "product_id": [284882215]}}])
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    folder = tmp_path / "lake" / "dataai/app_history/dt=2026-11-25"
    first, second = sorted(folder.glob("*.json"))[:2]  # page 1 (the unit's key), page 2
    second.unlink()
    second.mkdir()  # page 2 can no longer be written: the forced re-landing stops after pages 5, 4, 3
    assert run_cli("run", str(job), "--date", DATE, "--force").returncode == 1
    assert not first.exists()  # so the unit reads as missing, never as old page 1 beside new pages
    second.rmdir()
    assert run_cli("run", str(job), "--date", DATE).returncode == 0  # and the next run lands it whole
    assert len(list(folder.glob("*.json"))) == 5 and first.exists()
