"""End to end: what the store kept is checked, after every upload and on every later look.

A store that keeps other bytes than it was sent (here: a proxy in front of moto appending the
569 bytes a real S3-compatible server kept of the aws-chunked framing) fails the unit and leaves
nothing counted as landed; an object changed on the store after it landed is a gap for
`apilake status` and is landed again by the next run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from altering_proxy import AlteringProxy
from conftest import bulk_endpoint, details_endpoint, expected_bulk, lake_objects, records, run_cli, write_job
from moto_server import s3

DATE = "2026-11-25"
BULK = bulk_endpoint("app_downloads")
DETAILS = details_endpoint(("ios",), (1, 2))
PREFIX = "raw/"


def data_objects(endpoint: str) -> dict[str, bytes]:
    client = s3(endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=PREFIX + "dataai/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k.removeprefix(PREFIX): client.get_object(Bucket="lake", Key=k)["Body"].read() for k in keys}


def test_a_store_that_alters_uploads_fails_the_units_and_keeps_nothing_counted_as_landed(tmp_path: Path, emulator, bucket: str) -> None:
    emulator.config.file_sizes = {"data.": 7 * 1024 * 1024}  # metric files go up in two 5 MiB parts
    with AlteringProxy(bucket) as proxy_url:
        job = write_job(tmp_path, emulator, [DETAILS, BULK], destination="s3://lake/raw", s3={"endpoint_url": proxy_url, "part_size_mb": 5})
        result = run_cli("run", str(job), "--date", DATE)
        assert result.returncode == 1, result.stdout + result.stderr
        status = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    units = records_in(bucket)[-1]["units"]
    failed = [u for u in units if u["status"] == "failed"]
    assert {u["kind"] for u in failed} == {"json", "file"} and len(failed) == 2 + 4  # every upload of data
    for unit in failed:
        assert "bytes were sent" in unit["error"] and "AWS_REQUEST_CHECKSUM_CALCULATION=when_required" in unit["error"]
    big = next(u for u in failed if "/data." in u["unit"])
    kept, sent = (int(n.replace(",", "")) for n in re.search(r"kept ([\d,]+) bytes .* after ([\d,]+) bytes were sent", big["error"]).groups())
    assert sent > 7_000_000 and kept - sent == 2 * 569  # a multipart object of two parts, each kept 569 bytes longer
    assert data_objects(bucket) == {}  # nothing damaged is left under a key
    assert status.returncode == 1


def records_in(endpoint: str) -> list[dict]:
    import json

    client = s3(endpoint)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="lake", Prefix=PREFIX + "_apilake/runs/")["Contents"])
    return [json.loads(client.get_object(Bucket="lake", Key=k)["Body"].read()) for k in keys]


@pytest.mark.parametrize("store", ["local", "s3"])
def test_an_object_changed_after_it_landed_is_a_gap_and_lands_again(tmp_path: Path, emulator, store: str, request: pytest.FixtureRequest) -> None:
    if store == "s3":
        endpoint = request.getfixturevalue("bucket")
        job = write_job(tmp_path, emulator, [DETAILS, BULK], destination="s3://lake/raw", s3={"endpoint_url": endpoint})
        read_all = lambda: data_objects(endpoint)  # noqa: E731

        def change(key: str, body: bytes) -> None:
            s3(endpoint).put_object(Bucket="lake", Key=PREFIX + key, Body=body)
    else:
        job = write_job(tmp_path, emulator, [DETAILS, BULK])
        read_all = lambda: lake_objects(tmp_path / "lake")  # noqa: E731

        def change(key: str, body: bytes) -> None:
            (tmp_path / "lake" / key).write_bytes(body)

    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    whole = read_all()
    assert whole.keys() >= expected_bulk(emulator, "app_downloads", DATE, DATE).keys()
    json_key = f"dataai/details/dt={DATE}/market=ios,product_id=2.json"
    file_key = next(k for k in whole if "/product_id/" in k)
    change(json_key, whole[json_key] + b"\n")
    change(file_key, whole[file_key][:100])

    status = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert status.returncode == 1, status.stdout
    assert f"dataai/details/{DATE}/market=ios,product_id=2" in status.stdout
    assert "dataai/bulk_daily" in status.stdout and "market=ios,product_id=1" not in status.stdout

    emulator.stats.reset()
    rerun = run_cli("run", str(job), "--date", DATE)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert read_all() == whole  # both landed again, byte-exact
    assert emulator.stats.count(path_contains="/app/2/details") == 1 and emulator.stats.count(path_contains="/app/1/details") == 0
    assert emulator.stats.count(origin="files") == 1  # only the changed file was downloaded again
    assert "landing it again" in rerun.stderr
    assert run_cli("status", str(job), "--from", DATE, "--to", DATE).returncode == 0
    if store == "local":
        assert records(tmp_path / "lake")[-1]["counts"]["landed"] == 2


def test_a_store_that_ignores_conditional_writes_is_refused_before_anything_is_fetched(tmp_path: Path, emulator, bucket: str) -> None:
    with AlteringProxy(bucket, match="(nothing)", drop_conditions=True) as proxy_url:
        job = write_job(tmp_path, emulator, [DETAILS], destination="s3://lake/raw", s3={"endpoint_url": proxy_url})
        result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "ignores conditional writes (If-None-Match: *)" in result.stderr and "Traceback" not in result.stderr
    assert "set `lease: {mode: off}`" in result.stderr  # what a user who runs the job from one host can do
    assert emulator.stats.count() == 0 and data_objects(bucket) == {}
