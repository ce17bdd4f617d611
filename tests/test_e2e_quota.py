"""End to end: `requests_per_day` counted per credential across runs and jobs, in a ledger.

The emulator counts what reached it: that count, not apilake's own, is what must stay within
the quota.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3

from conftest import TOKEN, details_endpoint, lake_objects, run_cli, start_cli, wait_for, write_job

DATE = "2026-11-25"
PER_DAY = 100


def quota_job(folder: Path, emulator, ledger: Path, products: int = 70, **source) -> Path:
    endpoint = details_endpoint(("ios",), tuple(range(1, products + 1)))
    return write_job(folder, emulator, [endpoint], quota_ledger=str(ledger), source={"requests_per_day": PER_DAY, "concurrency": 4, **source})


def ledger_used(ledger: Path) -> int:
    (path,) = (ledger / "_apilake" / "quota").glob("*.json")
    doc = json.loads(path.read_text())
    (day,) = doc["days"].values()
    return day["used"]


def test_two_s3_jobs_sharing_a_credential_and_an_s3_ledger_send_at_most_the_daily_quota(tmp_path: Path, emulator, moto_endpoint: str) -> None:
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket="lake")
    endpoint = details_endpoint(("ios",), tuple(range(1, 71)))
    jobs = [
        write_job(
            tmp_path / name,
            emulator,
            [endpoint],
            destination=f"s3://lake/{name}",
            quota_ledger="s3://lake/shared",
            s3={"endpoint_url": moto_endpoint},
            source={"requests_per_day": PER_DAY, "concurrency": 4},
        )
        for name in ("first", "second")
    ]
    runs = [start_cli("run", str(job), "--date", DATE) for job in jobs]
    outputs = [process.communicate(timeout=120) for process in runs]
    assert 1 in [process.returncode for process in runs], outputs
    assert PER_DAY - 2 * 5 <= emulator.stats.count(origin="api") <= PER_DAY  # S3 conditional writes kept the count
    status = run_cli("status", str(jobs[0]), "--from", DATE, "--to", DATE)
    assert f"dataai: {emulator.stats.count(origin='api')} of {PER_DAY} requests" in status.stdout, status.stdout


def test_two_jobs_sharing_a_credential_run_together_and_send_at_most_the_daily_quota(tmp_path: Path, emulator) -> None:
    ledger = tmp_path / "shared-ledger"
    first, second = (quota_job(tmp_path / name, emulator, ledger) for name in ("first", "second"))
    runs = [start_cli("run", str(job), "--date", DATE) for job in (first, second)]
    outputs = [process.communicate(timeout=120) for process in runs]
    codes = [process.returncode for process in runs]
    assert 1 in codes and set(codes) <= {0, 1}, outputs  # 140 units, 100 requests a day: one run at least runs out
    sent = emulator.stats.count(origin="api")
    assert sent <= PER_DAY  # what the vendor saw, across both runs
    assert sent >= PER_DAY - 2 * 5  # at most a block per run is stranded while the other still wants some
    landed = len(lake_objects(tmp_path / "first" / "lake")) + len(lake_objects(tmp_path / "second" / "lake"))
    assert landed == sent
    assert ledger_used(ledger) == sent  # what was reserved and not sent went back at the end
    for (out, _err), code in zip(outputs, codes, strict=True):
        assert code == 0 or ("daily request quota of source 'dataai' (100 requests_per_day" in out and "resets at" in out and "UTC" in out)
    ledger_text = "\n".join(p.read_text() for p in ledger.rglob("*.json"))
    assert TOKEN not in ledger_text and TOKEN not in "".join(p.name for p in ledger.rglob("*"))

    status = run_cli("status", str(first), "--from", DATE, "--to", DATE)
    assert f"dataai: {sent} of {PER_DAY} requests" in status.stdout, status.stdout


def test_the_ledger_survives_kill_9_without_over_spending(tmp_path: Path, emulator) -> None:
    emulator.config.latency_ms = 100
    ledger = tmp_path / "ledger"
    job = quota_job(tmp_path / "killed", emulator, ledger, products=60)
    process = start_cli("run", str(job), "--date", DATE)
    wait_for(lambda: emulator.stats.count(origin="api") >= 10)
    process.kill()
    process.wait(timeout=10)
    sent_before = emulator.stats.count(origin="api")
    reserved = ledger_used(ledger)
    assert reserved >= sent_before  # every request that went out was reserved first

    emulator.config.latency_ms = 0
    again = run_cli("run", str(quota_job(tmp_path / "again", emulator, ledger, products=120)), "--date", DATE)
    assert again.returncode == 1
    assert emulator.stats.count(origin="api") <= PER_DAY  # the killed run's unused block stays counted
    assert ledger_used(ledger) == PER_DAY
