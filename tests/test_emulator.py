"""Tests of the vendor emulator: data, endpoints, bulk flow, faults, quota, lifecycle."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apilake.emulator import (
    Emulator,
    EmulatorConfig,
    Fault,
    expected_file_names,
    expected_records,
    file_bytes,
    file_length,
    file_sha256,
    gunzip_members,
    iter_file_chunks,
)
from apilake.emulator.data import member_boundaries
from apilake.emulator.stats import RequestRecord, Stats
from conftest import wait_for

TOKEN = "test-token"
HISTORY = "/v1.3/intelligence/apps/ios/app/310633997/history"
HISTORY_Q = {"countries": "US+FR", "start_date": "2024-01-01", "end_date": "2024-01-09", "feeds": "downloads", "granularity": "daily"}
METRIC_1 = r"name=metrics/.*\.1\.csv\.gz"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    e = Emulator(EmulatorConfig(token=TOKEN, file_size=16 * 1024), host="127.0.0.1").start()
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.api_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as c:
        yield c


def _query(params: dict[str, str]) -> str:
    """Build a query string the way the vendor expects: '+' joins stay literal."""
    return "&".join(f"{k}={v}" for k, v in params.items())


def _all_pages(client: httpx.Client, path: str, params: dict[str, str], key: str) -> list[dict[str, Any]]:
    url: str | None = f"{path}?{_query(params)}"
    out: list[dict[str, Any]] = []
    index = 0
    while url:
        r = client.get(url)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["code"] == 200 and body["page_index"] == index
        assert (body["prev_page"] is None) == (index == 0)
        out.extend(body[key])
        url = body["next_page"]
        index += 1
    assert index == body["page_num"]
    return out


def _listing(client: httpx.Client, bundles: str = "b1,b2", end: str = "2024-01-02") -> list[str]:
    r = client.get(f"/v2/bulk/get-bulk-urls?metric_bundles={bundles}&country_codes=all&granularity=daily&start_date=2024-01-01&end_date={end}")
    assert r.status_code == 200, r.text
    return r.json()["data"]["urls"]


def _name(url: str) -> str:
    return httpx.URL(url).params["name"]


# ---------------------------------------------------------------- pure data


def test_file_bytes_are_deterministic_multi_member_gzip() -> None:
    name = "metrics/b1/all/all/daily/2024-01-01/data.12345.20240101.1.csv.gz"
    for size in (100, 1000, 64 * 1024, 300_000):
        raw = file_bytes(name, size)
        assert len(raw) == file_length(name, size)
        assert size <= 439 or len(raw) == size  # exact except for tiny targets
        assert raw == file_bytes(name, size)
        assert hashlib.sha256(raw).hexdigest() == file_sha256(name, size)
        text = gzip.decompress(raw)
        assert text == gunzip_members(raw)
        lines = text.decode().splitlines()
        assert lines[0] == "date,country,product_id,metric,value"
        assert all(line.count(",") == 4 for line in lines)
    other = file_bytes(name.replace(".1.csv", ".2.csv"), 64 * 1024)
    assert other != file_bytes(name, 64 * 1024)
    assert b"".join(iter_file_chunks(name, 300_000, chunk=7000)) == file_bytes(name, 300_000)


def test_expected_records_are_pure() -> None:
    a = expected_records(HISTORY, HISTORY_Q)
    assert a == expected_records(HISTORY + "?" + _query(HISTORY_Q))
    assert len(a) == 9 * 2 * 2
    assert {r["device"] for r in a} == {"iphone", "ipad"} and {r["country"] for r in a} == {"US", "FR"}
    assert any(r["estimate"] == "N/A" for r in a) and any(isinstance(r["estimate"], int) for r in a)


# ---------------------------------------------------------------- JSON API


def test_history_paging_matches_expected_records(client: httpx.Client) -> None:
    got = _all_pages(client, HISTORY, HISTORY_Q, "list")
    assert got == expected_records(HISTORY, HISTORY_Q)
    first = client.get(f"{HISTORY}?{_query(HISTORY_Q)}").json()
    assert first["next_page"] == f"{HISTORY}?{_query(HISTORY_Q)}&page_index=1"
    assert first["page_num"] == 4


@pytest.mark.parametrize(
    ("path", "params", "key"),
    [
        ("/v1.3/apps/ios/app/42/reviews", {"start_date": "2024-01-01", "end_date": "2024-02-01", "countries": "US"}, "reviews"),
        ("/v1.3/accounts", {}, "accounts"),
        ("/v1.3/accounts/100007/products", {}, "products"),
        ("/v1.3/accounts/100007/products/55/sales", {"start_date": "2024-01-01", "end_date": "2024-01-12", "break_down": "date+country"}, "sales_list"),
    ],
)
def test_other_paged_endpoints(client: httpx.Client, path: str, params: dict[str, str], key: str) -> None:
    assert _all_pages(client, path, params, key) == expected_records(path, params)


def test_unpaged_endpoints(client: httpx.Client) -> None:
    for path, key in [("/v1.3/apps/ios/app/42/ratings", "ratings"), ("/v1.3/meta/countries", "country_list")]:
        body = client.get(path).json()
        assert "page_num" not in body and body[key] == expected_records(path)
    assert client.get("/v1.3/apps/ios/app/42/details").json()["product"] == expected_records("/v1.3/apps/ios/app/42/details")[0]


def test_vendor_errors(client: httpx.Client) -> None:
    r = client.get(f"{HISTORY}?{_query(HISTORY_Q)}&page_index=99")
    assert r.status_code == 400 and r.json()["code"] == 400
    r = client.get(f"{HISTORY}?countries=US&start_date=2024-01-01")
    assert r.status_code == 400 and "end_date" in r.json()["error"]
    assert client.get(f"{HISTORY}?start_date=2024-13-01&end_date=2024-01-02").status_code == 400
    r = client.get("/v1.3/nope")
    assert r.status_code == 404 and r.json() == {"code": 404, "error": "unknown endpoint: /v1.3/nope"}


def test_auth(emu: Emulator) -> None:
    url = f"{emu.api_url}/v1.3/meta/countries"
    r = httpx.get(url)
    assert r.status_code == 401 and r.json()["code"] == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    assert emu.stats.count(origin="api", status=401) == 2


# ---------------------------------------------------------------- bulk


def test_bulk_listing_redirect_and_files_without_auth(emu: Emulator, client: httpx.Client) -> None:
    urls = _listing(client)
    names = [_name(u) for u in urls]
    assert names == expected_file_names("b1,b2", "2024-01-01", "2024-01-02", "daily", emu.config)
    assert len(names) == 2 * 2 * (2 + 2) and len(set(names)) == len(names)
    assert all(u.startswith(f"{emu.api_url}/v2/bulk/data?name=") and "&signature=" in u for u in urls)
    with httpx.Client(timeout=10) as anon:
        for url, name in zip(urls, names, strict=True):
            r = client.get(url)
            assert r.status_code == 302
            loc = r.headers["location"]
            assert loc.startswith(f"{emu.files_url}/objects/") and "X-Amz-Signature=" in loc
            f = anon.get(loc)
            assert f.status_code == 200 and f.headers["content-type"] == "application/gzip"
            assert f.content == emu.file_bytes_for(name)
            assert int(f.headers["content-length"]) == emu.file_length_for(name)
            gzip.decompress(f.content)
    assert emu.stats.auth_headers("files") == 0
    assert emu.stats.count(origin="files", status=200) == len(urls)
    # wrong signatures on either origin
    assert client.get(urls[0].replace("&signature=", "&signature=00")).status_code == 403
    assert httpx.get(client.get(urls[0]).headers["location"].replace("Signature=", "Signature=0")).status_code == 403
    # the data endpoint needs the key too
    assert httpx.get(urls[0]).status_code == 401


def test_files_range_and_size_override(emu: Emulator, client: httpx.Client) -> None:
    emu.config.file_sizes = {".2.csv.gz": 200_000}
    url = _listing(client, "b1", "2024-01-01")[1]
    name = _name(url)
    assert ".2.csv.gz" in name and emu.file_length_for(name) == 200_000
    loc = client.get(url).headers["location"]
    full = file_bytes(name, 200_000)
    r = httpx.get(loc, headers={"Range": "bytes=1000-"})
    assert r.status_code == 206 and r.content == full[1000:]
    assert r.headers["content-range"] == "bytes 1000-199999/200000"
    assert httpx.get(loc, headers={"Range": "bytes=0-9"}).content == full[:10]
    assert emu.stats.auth_headers("files") == 0
    httpx.get(loc, headers={"Authorization": "Bearer leaked"})
    assert emu.stats.auth_headers("files") == 1


def test_a_large_file_streams_whole_and_byte_exact(emu: Emulator, client: httpx.Client) -> None:
    # Its speed is the bench's business (bench/: curl against this emulator); here, that it is whole.
    emu.config.file_size = 24 << 20
    loc = client.get(_listing(client, "big", "2024-01-01")[0]).headers["location"]
    h, n = hashlib.sha256(), 0
    with httpx.stream("GET", loc, timeout=30) as r:
        for c in r.iter_raw(1 << 20):
            h.update(c)
            n += len(c)
    assert n == 24 << 20 and h.hexdigest() == file_sha256(_name(_listing(client, "big", "2024-01-01")[0]), 24 << 20)


# ---------------------------------------------------------------- faults


def test_fault_status_burst_then_recovery(emu: Emulator, client: httpx.Client) -> None:
    emu.config.faults = [Fault("/meta/countries", "status", times=2)]
    r = client.get("/v1.3/meta/countries")
    assert r.status_code == 503 and r.json() == {"code": 503, "error": "service under maintenance"}
    assert client.get("/v1.3/meta/countries").status_code == 503
    assert client.get("/v1.3/meta/countries").status_code == 200
    assert emu.config.faults[0].times == 0 and emu.config.faults[0].fired == 2


@pytest.mark.parametrize(("status", "retry_after"), [(429, "3"), (429, None), (428, None), (401, None), (500, None)])
def test_fault_status_codes(emu: Emulator, client: httpx.Client, status: int, retry_after: str | None) -> None:
    emu.config.faults = [Fault("product_id=310633997|/history", "status", status=status, retry_after=retry_after)]
    r = client.get(f"{HISTORY}?{_query(HISTORY_Q)}")
    assert r.status_code == status and r.json()["code"] == status
    assert r.headers.get("retry-after") == retry_after


def test_fault_origin_filter(emu: Emulator, client: httpx.Client) -> None:
    emu.config.faults = [Fault(".", "status", origin="files")]
    url = _listing(client, "b1", "2024-01-01")[0]
    loc = client.get(url).headers["location"]
    assert httpx.get(loc).status_code == 503


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"<html><body>Maintenance</body></html>", "text/html"),
        (b"not json at all", "application/json"),
        (b'{"code": 200, "data": {"urls": []}}', "application/json"),
    ],
)
def test_fault_body(emu: Emulator, client: httpx.Client, body: bytes, ctype: str) -> None:
    emu.config.faults = [Fault("get-bulk-urls", "body", body=body, content_type=ctype)]
    r = client.get("/v2/bulk/get-bulk-urls?metric_bundles=b1&start_date=2024-01-01&end_date=2024-01-01")
    assert r.status_code == 200 and r.content == body and r.headers["content-type"] == ctype


def test_fault_body_duplicate_urls(emu: Emulator, client: httpx.Client) -> None:
    urls = _listing(client, "b1", "2024-01-01")
    dup = json.dumps({"code": 200, "data": {"urls": urls + urls[:2]}}).encode()
    emu.config.faults = [Fault("get-bulk-urls", "body", body=dup, times=1)]
    assert len(_listing(client, "b1", "2024-01-01")) == len(urls) + 2
    assert _listing(client, "b1", "2024-01-01") == urls


def test_fault_deep_json(emu: Emulator, client: httpx.Client) -> None:
    emu.config.faults = [Fault("/history", "deep_json", depth=5000)]
    r = client.get(f"{HISTORY}?{_query(HISTORY_Q)}")
    assert r.status_code == 200 and r.content.count(b'{"a":') == 5000
    with pytest.raises(RecursionError):
        json.loads(r.content)


def test_fault_huge_json_streams(emu: Emulator, client: httpx.Client) -> None:
    size = 8 << 20
    emu.config.faults = [Fault("/history", "huge_json", size=size)]
    with client.stream("GET", f"{HISTORY}?{_query(HISTORY_Q)}") as r:
        assert int(r.headers["content-length"]) == size
        chunks = r.iter_raw(1 << 20)
        first = next(chunks)
        assert first.startswith(b'{"code":200')
        total = len(first) + sum(len(c) for c in chunks)
    assert total == size


@pytest.mark.parametrize("kind", ["cut", "reset_mid_body"])
def test_fault_cut_json_and_file(emu: Emulator, client: httpx.Client, kind: str) -> None:
    url = _listing(client, "b1", "2024-01-01")[0]
    loc = client.get(url).headers["location"]
    emu.config.faults = [Fault("/history", kind, origin="api"), Fault(METRIC_1, kind, origin="files")]
    with pytest.raises(httpx.TransportError):
        client.get(f"{HISTORY}?{_query(HISTORY_Q)}")
    got = bytearray()
    with pytest.raises(httpx.TransportError), httpx.stream("GET", loc) as r:
        assert int(r.headers["content-length"]) == emu.file_length_for(_name(url))
        for c in r.iter_raw():
            got += c
    assert len(got) < emu.file_length_for(_name(url))
    assert client.get("/v1.3/meta/countries").status_code == 200  # server still fine


def test_fault_truncate_gzip(emu: Emulator, client: httpx.Client) -> None:
    emu.config.file_size = 200_000
    url = _listing(client, "b1", "2024-01-01")[0]
    name = _name(url)
    emu.config.faults = [Fault(METRIC_1, "truncate_gzip")]  # origin "any": skips the API redirect
    r = httpx.get(client.get(url).headers["location"])
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    assert 0 < len(r.content) < file_length(name, 200_000)
    assert r.content == file_bytes(name, 200_000)[: len(r.content)]
    assert len(r.content) not in member_boundaries(name, 200_000)
    with pytest.raises((EOFError, zlib.error, OSError)):
        gzip.decompress(r.content)


def test_fault_gzip_encoding(emu: Emulator, client: httpx.Client) -> None:
    url = _listing(client, "b1", "2024-01-01")[0]
    emu.config.faults = [Fault(METRIC_1, "gzip_encoding")]
    loc = client.get(url).headers["location"]
    with httpx.stream("GET", loc) as r:
        assert r.headers["content-encoding"] == "gzip"
        raw = b"".join(r.iter_raw())
    assert raw == emu.file_bytes_for(_name(url))  # unchanged bytes on the wire
    naive = httpx.get(loc).content  # a naive client decompresses: it gets the first member only
    assert naive != raw and naive.startswith(b"date,country,product_id,metric,value")


def test_fault_stall_and_drip(emu: Emulator, client: httpx.Client) -> None:
    emu.config.faults = [Fault("/meta/countries", "stall", seconds=0.4, times=1)]
    t0 = time.monotonic()
    assert client.get("/v1.3/meta/countries").status_code == 200
    assert time.monotonic() - t0 >= 0.4
    with pytest.raises(httpx.ReadTimeout):
        emu.config.faults = [Fault("/meta/countries", "stall", seconds=5, times=1)]
        client.get("/v1.3/meta/countries", timeout=0.3)
    emu.config.faults = [Fault("/meta/countries", "drip", chunk=200, interval=0.05)]
    t0 = time.monotonic()
    r = client.get("/v1.3/meta/countries")
    assert r.json()["country_list"] == expected_records("/v1.3/meta/countries")
    assert time.monotonic() - t0 >= 0.05 * (len(r.content) // 200 - 1)


def test_fault_echo_secret(emu: Emulator, client: httpx.Client) -> None:
    emu.config.faults = [Fault("/history", "echo_secret")]
    r = client.get(f"{HISTORY}?{_query(HISTORY_Q)}&api_key=sekrit")
    assert r.status_code == 503
    err = r.json()["error"]
    assert f"Bearer {TOKEN}" in err and "api_key=sekrit" in err and "countries=US+FR" in err
    emu.config.faults = [Fault("/history", "echo_secret", status=400)]
    assert client.get(HISTORY).status_code == 400


def test_fault_kind_validation() -> None:
    with pytest.raises(ValueError):
        Fault(".", "explode")


# ---------------------------------------------------------------- quota, stats


def test_quota_429_with_and_without_retry_after(emu: Emulator, client: httpx.Client) -> None:
    emu.config.requests_per_minute = 3
    codes = [client.get("/v1.3/meta/countries").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    r = client.get("/v1.3/meta/countries")
    assert r.json() == {"code": 429, "error": "rate limit exceeded"} and "retry-after" not in r.headers
    emu.config.quota_retry_after = 7
    assert client.get("/v1.3/meta/countries").headers["retry-after"] == "7"
    assert emu.stats.max_in_window(60, "api", status=200) == 3
    assert emu.stats.max_in_window(60, "api") == 7
    emu.config.quota_window_s = 0.3  # the window slides: calls are admitted again once the 3 admitted ones leave it
    wait_for(lambda: client.get("/v1.3/meta/countries").status_code == 200, timeout=5)


def test_stats_windows() -> None:
    stats = Stats()
    for mono in (10.0, 10.05, 10.1, 10.5, 10.55):  # three calls in 0.1 s, two more 0.4 s later
        stats.record(RequestRecord(mono, mono, "api", "/v1.3/meta/countries", 200, None))
    stats.record(RequestRecord(10.56, 10.56, "files", "/objects/x", 200, None))
    assert stats.max_in_window(0.2, "api") == 3
    assert stats.max_in_window(60, "api") == 5
    assert stats.max_in_window(60, None) == 6


def test_stats_count_and_reset(emu: Emulator, client: httpx.Client) -> None:
    for _ in range(5):
        client.get("/v1.3/meta/countries")
    assert emu.stats.count(path_contains="/meta/") == 5
    rec = emu.stats.requests[0]
    assert rec.origin == "api" and rec.status == 200 and rec.authorization == f"Bearer {TOKEN}"
    summary = httpx.get(f"{emu.api_url}/_emulator/stats").json()
    assert summary["api"] == 5 and summary["auth_headers"] == {"api": 5, "files": 0}
    emu.stats.reset()
    assert emu.stats.count() == 0


# ---------------------------------------------------------------- lifecycle


def test_stop_is_prompt_with_stall_and_download_in_flight() -> None:
    emu = Emulator(EmulatorConfig(token=TOKEN, file_size=256 << 20)).start()
    emu.config.faults = [
        Fault("/meta/countries", "stall", seconds=60),
        Fault("/objects/", "drip", chunk=1024, interval=0.2),
    ]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    loc = httpx.get(
        httpx.get(f"{emu.api_url}/v2/bulk/get-bulk-urls?metric_bundles=b&start_date=2024-01-01&end_date=2024-01-01", headers=headers).json()["data"]["urls"][0],
        headers=headers,
    ).headers["location"]
    errors: list[BaseException] = []

    def call(url: str, h: dict[str, str]) -> None:
        try:
            with httpx.stream("GET", url, headers=h, timeout=30) as r:
                for _ in r.iter_raw():
                    pass
        except BaseException as e:  # noqa: BLE001 - we only record that it failed
            errors.append(e)

    threads = [
        threading.Thread(target=call, args=(f"{emu.api_url}/v1.3/meta/countries", headers)),
        threading.Thread(target=call, args=(loc, {})),
    ]
    for t in threads:
        t.start()
    wait_for(lambda: all(fault.fired for fault in emu.config.faults))  # the stall and the drip are both under way
    t0 = time.monotonic()
    emu.stop()
    assert time.monotonic() - t0 < 2
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert len(errors) == 2


def test_context_manager_and_standalone_serve() -> None:
    with Emulator() as emu:
        assert httpx.get(f"{emu.api_url}/v1.3/meta/countries", headers={"Authorization": "Bearer demo-token"}).status_code == 200
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "apilake.emulator", "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines[0].startswith("api: http://127.0.0.1:") and lines[1].startswith("files: http://127.0.0.1:")
        assert lines[2] == "token: demo-token"
        api = lines[0].split(" ", 1)[1]
        assert httpx.get(f"{api}/_emulator/stats").json()["total"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
