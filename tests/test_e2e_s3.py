"""End to end: `apilake run` into s3://bucket/prefix on moto's standalone S3 server and on SeaweedFS."""

from __future__ import annotations

import datetime as dt
import json
import signal
from pathlib import Path

import pytest

from apilake.emulator import Fault
from apilake.sizes import human_bytes
from conftest import TOKEN, bulk_endpoint, details_endpoint, expected_bulk, hold, run_cli, start_cli, wait_for, write_job
from moto_server import MotoServer, s3

DATE = "2026-11-25"
BULK = bulk_endpoint("app_downloads")
DETAILS = details_endpoint()


def bucket_objects(endpoint: str, bucket: str = "lake", prefix: str = "raw/") -> dict[str, bytes]:
    client = s3(endpoint)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]
    return {k[len(prefix) :]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def data_objects(endpoint: str) -> dict[str, bytes]:
    return {k: v for k, v in bucket_objects(endpoint).items() if not k.startswith("_apilake/")}


def s3_job(tmp_path: Path, emulator, endpoint: str, endpoints: list, s3_options: dict | None = None, **top) -> Path:
    s3_settings = {"endpoint_url": endpoint, "part_size_mb": 5, **(s3_options or {})}
    return write_job(tmp_path, emulator, endpoints, destination="s3://lake/raw", s3=s3_settings, **top)


def test_json_and_bulk_land_byte_identical_once_and_rerun_uploads_nothing(tmp_path: Path, emulator, s3_bucket: str) -> None:
    emulator.config.file_sizes = {"data.": 12 * 1024 * 1024}  # metric files span three 5 MiB parts
    job = s3_job(tmp_path, emulator, s3_bucket, [DETAILS, BULK])
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout + result.stderr
    landed = data_objects(s3_bucket)
    bulk = {k: v for k, v in landed.items() if "/bulk_daily/" in k}
    assert bulk == expected_bulk(emulator, "app_downloads", DATE, DATE)
    assert max(len(v) for v in bulk.values()) > 10 * 1024 * 1024  # multipart really happened
    details = {k: json.loads(v) for k, v in landed.items() if "/details/" in k}
    assert sorted(details) == [f"dataai/details/dt={DATE}/market={m},product_id={p}.json" for m in ("google-play", "ios") for p in (1, 2)]
    records = [k for k in bucket_objects(s3_bucket) if k.startswith("_apilake/runs/")]
    assert len(records) == 1
    assert s3(s3_bucket).list_multipart_uploads(Bucket="lake").get("Uploads", []) == []

    emulator.stats.reset()
    again = run_cli("run", str(job), "--date", DATE)
    assert again.returncode == 0
    assert emulator.stats.count(origin="files") == 0
    assert data_objects(s3_bucket) == landed
    record = json.loads(bucket_objects(s3_bucket)[sorted(k for k in bucket_objects(s3_bucket) if k.startswith("_apilake/runs/"))[-1]])
    assert record["counts"] == {"skipped": 8, "listed": 1}


def test_transfer_cut_half_way_leaves_no_object_and_no_open_upload(tmp_path: Path, emulator, s3_bucket: str) -> None:
    emulator.config.file_sizes = {"data.": 12 * 1024 * 1024}
    emulator.config.faults = [Fault(match=r"data\.\d+\.20261125\.1\.csv\.gz", kind="cut", origin="files")]
    job = s3_job(tmp_path, emulator, s3_bucket, [BULK])
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1
    expected = expected_bulk(emulator, "app_downloads", DATE, DATE)
    cut = [k for k in expected if k.endswith(".1.csv.gz") and "/metrics/" in k]
    assert data_objects(s3_bucket) == {k: v for k, v in expected.items() if k not in cut}
    assert s3(s3_bucket).list_multipart_uploads(Bucket="lake").get("Uploads", []) == []


def test_missing_bucket_exits_2_before_any_work(tmp_path: Path, emulator, moto_endpoint: str) -> None:
    job = s3_job(tmp_path, emulator, moto_endpoint, [DETAILS])
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 2
    assert "bucket 'lake'" in result.stderr and "Traceback" not in result.stderr
    assert emulator.stats.count() == 0


def test_bad_credentials_exit_2_and_are_never_printed(tmp_path: Path, emulator, aws_env: None, monkeypatch) -> None:
    secret = "wrongSecretKey0123456789"
    with MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as endpoint:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        job = s3_job(tmp_path, emulator, endpoint, [DETAILS])
        result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 2
    assert "credentials" in result.stderr
    assert secret not in result.stdout + result.stderr
    assert emulator.stats.count() == 0


def test_exit_codes_are_right_every_time_in_fresh_processes(tmp_path: Path, emulator, bucket: str) -> None:
    """The S3 path must never turn a result into a crash at interpreter exit (cron relies on it).
    About the client, not the store: moto alone."""
    emulator.config.faults = [Fault(match="/app/2/details", kind="status", status=404)]
    good = s3_job(tmp_path / "good", emulator, bucket, [{**DETAILS, "matrix": {"market": ["ios"], "product_id": [1]}}])
    bad = s3_job(tmp_path / "bad", emulator, bucket, [DETAILS])
    codes = [(run_cli("run", str(good), "--date", DATE, "--force").returncode, run_cli("run", str(bad), "--date", DATE).returncode) for _ in range(8)]
    assert codes == [(0, 1)] * 8
    assert TOKEN not in json.dumps({k: v.decode("utf-8", "replace") for k, v in bucket_objects(bucket).items()})


def open_uploads(endpoint: str) -> list[str]:
    return [u["Key"] for u in s3(endpoint).list_multipart_uploads(Bucket="lake").get("Uploads", [])]


def upload_ages(endpoint: str) -> list[float]:
    """Seconds since each open multipart upload of the bucket began, by the store's clock."""
    uploads = s3(endpoint).list_multipart_uploads(Bucket="lake").get("Uploads", [])
    return [(dt.datetime.now(dt.UTC) - u["Initiated"]).total_seconds() for u in uploads]


def part_bytes(endpoint: str) -> int:
    """Bytes in the parts of every open multipart upload of the bucket."""
    client = s3(endpoint)
    uploads = client.list_multipart_uploads(Bucket="lake").get("Uploads", [])
    return sum(p["Size"] for u in uploads for p in client.list_parts(Bucket="lake", Key=u["Key"], UploadId=u["UploadId"]).get("Parts", []))


def start_slow_multipart_run(tmp_path: Path, emulator, endpoint: str):
    """A run whose metric files (12 MiB, three parts) drip slowly, so it can be stopped mid-upload."""
    emulator.config.file_sizes = {"data.": 12 * 1024 * 1024}
    emulator.config.faults = [Fault(match=r"data\.\d+\.20261125\.\d\.csv\.gz", kind="drip", origin="files", chunk=256 * 1024, interval=0.05)]
    job = s3_job(tmp_path, emulator, endpoint, [BULK])
    return job, start_cli("run", str(job), "--date", DATE)


def test_sigterm_aborts_open_multipart_uploads(tmp_path: Path, emulator, s3_bucket: str) -> None:
    _job, process = start_slow_multipart_run(tmp_path, emulator, s3_bucket)
    wait_for(lambda: open_uploads(s3_bucket))
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 130
    assert open_uploads(s3_bucket) == []
    assert not any("/metrics/" in k for k in data_objects(s3_bucket))


def test_kill_9_mid_upload_then_rerun_completes_and_clears_the_orphan(tmp_path: Path, emulator, s3_bucket: str) -> None:
    job, process = start_slow_multipart_run(tmp_path, emulator, s3_bucket)
    wait_for(lambda: open_uploads(s3_bucket))
    process.kill()
    process.wait(timeout=10)
    orphans = open_uploads(s3_bucket)
    assert orphans  # a killed process cannot abort: the next run must clean up after it
    assert not any("/metrics/" in k for k in data_objects(s3_bucket))

    emulator.config.faults = []
    rerun = run_cli("run", str(job), "--date", DATE)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert data_objects(s3_bucket) == expected_bulk(emulator, "app_downloads", DATE, DATE)
    assert open_uploads(s3_bucket) == []


def test_status_reads_records_from_s3_and_reports_a_deleted_object_as_a_gap(tmp_path: Path, emulator, s3_bucket: str) -> None:
    job = s3_job(tmp_path, emulator, s3_bucket, [DETAILS])
    assert run_cli("run", str(job), "--from", "2026-11-24", "--to", "2026-11-25").returncode == 0
    whole = run_cli("status", str(job), "--from", "2026-11-24", "--to", "2026-11-25")
    assert whole.returncode == 0, whole.stdout + whole.stderr
    s3(s3_bucket).delete_object(Bucket="lake", Key="raw/dataai/details/dt=2026-11-24/market=ios,product_id=2.json")
    gap = run_cli("status", str(job), "--from", "2026-11-24", "--to", "2026-11-25")
    assert gap.returncode == 1
    assert "dataai/details: 2026-11-24 incomplete, 1 of 4 units missing" in gap.stdout
    assert "dataai/details/2026-11-24/market=ios,product_id=2" in gap.stdout
    assert "2026-11-25" not in gap.stdout.split("gaps for run dates", 1)[1].split("\n", 1)[1]


def test_fan_out_and_a_report_on_s3_a_rerun_reads_the_parent_and_the_report_state_from_the_bucket(tmp_path: Path, emulator, s3_bucket: str) -> None:
    from test_e2e_vendors import ACCOUNTS, ENV, PRODUCTS, acme_job, expected_report, report

    top = {"destination": "s3://lake/raw", "s3": {"endpoint_url": s3_bucket}}
    emulator.acme.config.report_polls = 10_000  # pending: the first run times out polling
    job = acme_job(tmp_path, emulator, [ACCOUNTS, {**report(), "poll": {**report()["poll"], "timeout_seconds": 0.3}}], top=top)
    first = run_cli("run", str(job), "--date", DATE, env=ENV)
    assert first.returncode == 1 and "a rerun resumes polling it" in first.stdout
    assert [k for k in bucket_objects(s3_bucket) if k.startswith("_apilake/reports/acme/installs/")]  # the report id is kept

    emulator.acme.config.report_polls = 0
    emulator.stats.reset()
    job = acme_job(tmp_path, emulator, [ACCOUNTS, PRODUCTS, report()], top=top)
    again = run_cli("run", str(job), "--date", DATE, env=ENV)
    assert again.returncode == 0, again.stdout + again.stderr
    assert emulator.acme.reports_created == 1  # resumed, not created again
    assert emulator.stats.count(path_contains="/acme/accounts?") == 0  # the parent's pages came from the bucket
    landed = data_objects(s3_bucket)
    assert {k: v for k, v in landed.items() if "/installs/" in k} == expected_report(emulator)
    assert sorted(k for k in landed if "/products/" in k) == [f"acme/products/dt={DATE}/account_id={a}.json" for a in ("a1", "a2")]


def test_a_part_memory_budget_of_one_part_still_lands_every_multipart_file_whole(tmp_path: Path, emulator, s3_bucket: str) -> None:
    # Two 12 MiB files into 5 MiB parts with room for one part at a time across both transfers:
    # they take turns (each download pauses meanwhile) and neither deadlocks nor loses a byte.
    emulator.config.file_sizes = {"data.": 12 * 1024 * 1024}
    job = write_job(tmp_path, emulator, [BULK], destination="s3://lake/raw",
                    s3={"endpoint_url": s3_bucket, "part_size_mb": 5, "part_memory_mb": 5})  # fmt: skip
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout + result.stderr
    landed = {k: v for k, v in data_objects(s3_bucket).items() if "/bulk_daily/" in k}
    assert landed == expected_bulk(emulator, "app_downloads", DATE, DATE)
    assert s3(s3_bucket).list_multipart_uploads(Bucket="lake").get("Uploads", []) == []


def run_records(endpoint: str) -> list[dict]:
    return [json.loads(v) for k, v in sorted(bucket_objects(endpoint).items()) if k.startswith("_apilake/runs/")]


def test_status_after_a_forced_rerun_stopped_by_sigterm_counts_the_files_that_landed_before(tmp_path: Path, emulator, s3_bucket: str) -> None:
    job = s3_job(tmp_path, emulator, s3_bucket, [BULK])
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    landed = data_objects(s3_bucket)
    assert landed == expected_bulk(emulator, "app_downloads", DATE, DATE)

    drip = Fault(match=r"data\.\d+\.20261125\.\d\.csv\.gz", kind="drip", origin="files", chunk=1024)
    hold([drip])  # the forced run's transfers cannot finish before the signal
    emulator.config.faults = [drip]
    emulator.stats.reset()
    forced = start_cli("run", str(job), "--date", DATE, "--force")
    wait_for(lambda: emulator.stats.count(origin="files") > 0)  # listed: its files are under way
    forced.send_signal(signal.SIGTERM)
    forced.communicate(timeout=30)
    assert forced.returncode == 130
    stopped = [u for u in run_records(s3_bucket)[-1]["units"] if u["kind"] == "file"]
    assert stopped and {u["status"] for u in stopped} <= {"interrupted", "landed"} and "interrupted" in {u["status"] for u in stopped}
    assert data_objects(s3_bucket) == landed  # the stopped uploads changed nothing

    status = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "none: all 1 expected unit(s) are in the destination" in status.stdout

    s3(s3_bucket).delete_object(Bucket="lake", Key="raw/" + next(k for k in landed if "/metrics/" in k))
    gap = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert gap.returncode == 1 and f"dataai/bulk_daily: missing {DATE}" in gap.stdout  # what is gone still counts


def test_an_upload_orphaned_by_kill_9_during_a_forced_run_is_aborted_by_a_later_run_that_skips_its_key(
    tmp_path: Path, emulator, s3_bucket: str, request: pytest.FixtureRequest
) -> None:
    emulator.config.file_sizes = {"data.": 12 * 1024 * 1024}  # metric files are multipart uploads
    job = s3_job(tmp_path, emulator, s3_bucket, [BULK])
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    landed = data_objects(s3_bucket)

    drip = Fault(match=r"data\.\d+\.20261125\.\d\.csv\.gz", kind="drip", origin="files", chunk=256 * 1024, interval=0.05)
    emulator.config.faults = [drip]
    forced = start_cli("run", str(job), "--date", DATE, "--force")
    wait_for(lambda: part_bytes(s3_bucket) > 0)
    hold([drip])  # no upload may finish before the kill
    forced.kill()
    forced.wait(timeout=10)
    orphans, stored = open_uploads(s3_bucket), part_bytes(s3_bucket)
    assert orphans and set(orphans) <= {f"raw/{k}" for k in landed}  # keys that had landed: a rerun skips them
    emulator.config.faults = []
    emulator.stats.reset()

    # Soon after, the uploads could be another job's live ones (the lease keeps out only this job's
    # runs): younger than s3.stale_upload_minutes, they are left, and the run says so. moto dates
    # every upload 2010-11-10, so there they are old at once, as they are on a store hours later.
    runs = [run_cli("run", str(job), "--date", DATE)]
    if request.node.callspec.params["s3_bucket"] != "moto":
        assert sorted(open_uploads(s3_bucket)) == sorted(orphans)
        assert f"left {len(orphans)} multipart upload(s) under s3://lake/raw/dataai/bulk_daily/ begun less than 120 min ago" in runs[0].stderr
        # Once older than the guard (here 3 s, with transfers bounded to 2 s), the next run aborts them.
        short = s3_job(tmp_path, emulator, s3_bucket, [BULK], {"stale_upload_minutes": 0.05}, source={"timeouts": {"total": 2}})
        wait_for(lambda: all(age > 3 for age in upload_ages(s3_bucket)), timeout=10)
        runs.append(run_cli("run", str(short), "--date", DATE))

    assert [r.returncode for r in runs] == [0] * len(runs), runs[-1].stdout + runs[-1].stderr
    assert open_uploads(s3_bucket) == []  # though the run skipped every key
    assert f"aborted {len(orphans)} multipart upload(s) under s3://lake/raw/dataai/bulk_daily/ begun over" in runs[-1].stderr
    assert f"({human_bytes(stored)} of parts)" in runs[-1].stderr
    assert data_objects(s3_bucket) == landed  # whole, byte-exact, and not fetched again
    assert emulator.stats.count(origin="files") == 0
    assert TOKEN not in "".join(r.stdout + r.stderr for r in runs)


def test_a_job_whose_keys_start_with_a_placeholder_sweeps_no_one_elses_uploads(tmp_path: Path, emulator, moto_endpoint: str) -> None:
    """`key: "{date}/…"` owns no prefix of its own: the start-of-run sweep would reach every other
    job's (and tool's) uploads in the bucket, so it is skipped with a warning. On moto every
    upload looks years old, so without the skip the other tool's upload would be aborted."""
    client = s3(moto_endpoint)
    client.create_bucket(Bucket="lake")
    other = client.create_multipart_upload(Bucket="lake", Key="raw/another-tool/big.bin")["UploadId"]
    job = s3_job(tmp_path, emulator, moto_endpoint, [{**DETAILS, "key": "{date}/{source}-{endpoint}-{market}-{product_id}.json"}])
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [u["UploadId"] for u in client.list_multipart_uploads(Bucket="lake").get("Uploads", [])] == [other]
    assert "owns no prefix of its own" in result.stderr
