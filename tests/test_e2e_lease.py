"""End to end: the lease on an S3 destination, with real `apilake` processes and moto's server.

Two copies of a job file in different folders, each run with its own lock folder
(`APILAKE_LOCK_DIR`), stand for the same job on two hosts: their OS file locks differ (as on two
machines), so only the lease in the bucket keeps them apart.
"""

from __future__ import annotations

import json
import re
from datetime import UTC
from pathlib import Path

from filelock import FileLock

from apilake.emulator import Fault
from conftest import bulk_endpoint, details_endpoint, expected_bulk, hold, run_cli, start_cli, wait_for, write_job
from moto_server import s3

DATE = "2026-11-25"
LEASE = {"expiry_seconds": 5, "renew_seconds": 1}  # short, for tests: a loaded machine starts a run in ~1 s
HOLDER = re.compile(r"holds its lease \(host \S+, pid (\d+), run (\S+), since \S+;")


def s3_job(folder: Path, emulator, endpoint: str, endpoints: list, name: str = "job", lease: dict = LEASE) -> Path:
    path = write_job(folder, emulator, endpoints, destination="s3://lake/raw", s3={"endpoint_url": endpoint, "part_size_mb": 5}, lease=lease)
    return path.rename(path.with_name(f"{name}.yaml"))


def race(emulator, pairs: list[list[Path]], *args: str) -> list[list[tuple[int, str, int]]]:
    """Start every job at once; each pair's winner is held (its one request drips a byte at a time)
    until the pair's loser has exited, so the winner is still running when the loser looks, however
    slowly the processes start. Each run as (exit code, stderr, pid)."""
    gate = Fault(match="/details", kind="drip", chunk=1, interval=0.1)
    emulator.config.faults = [gate]
    started = [[start_cli("run", str(job), "--date", DATE, *args, env=host_of(job)) for job in pair] for pair in pairs]
    wait_for(lambda: all(any(p.poll() is not None for p in pair) for pair in started), timeout=60)
    hold([gate], 0)
    return [[(p.wait(timeout=60), p.communicate()[1], p.pid) for p in pair] for pair in started]


def host_of(job: Path) -> dict[str, str]:
    """The environment of a run on the host that job file stands for: its own OS lock folder."""
    return {"APILAKE_LOCK_DIR": str(job.parent / "locks")}


def lease_doc(endpoint: str, name: str = "job") -> dict:
    return json.loads(s3(endpoint).get_object(Bucket="lake", Key=f"raw/_apilake/leases/{name}.json")["Body"].read())


def data_keys(endpoint: str) -> set[str]:
    pages = s3(endpoint).get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix="raw/dataai/")
    return {o["Key"].removeprefix("raw/") for page in pages for o in page.get("Contents", [])}


def test_two_runs_started_together_on_two_hosts_exactly_one_runs_20_times(tmp_path: Path, emulator, bucket: str) -> None:
    pairs = 4  # four jobs at a time (each its own lease), five rounds: 20 races
    jobs = [
        [s3_job(tmp_path / f"pair{p}" / host, emulator, bucket, [details_endpoint(("ios",), (1,))], name=f"job{p}") for host in ("a", "b")]
        for p in range(pairs)
    ]
    for _round in range(5):
        # --force: every round fetches again, so each pair's winner is held until its loser is done
        for outcomes in race(emulator, jobs, "--force"):
            assert sorted(code for code, _err, _pid in outcomes) == [0, 3], outcomes
            [winner_pid] = [pid for code, _err, pid in outcomes if code == 0]
            [loser_err] = [err for code, err, _pid in outcomes if code == 3]
            named = HOLDER.search(loser_err)
            assert named and int(named.group(1)) == winner_pid, loser_err  # names the holder's host, pid, run
            assert "Traceback" not in loser_err
    assert lease_doc(bucket, "job0")["released"] is True


def test_a_holder_killed_with_kill_9_is_taken_over_after_the_expiry(tmp_path: Path, emulator, bucket: str) -> None:
    emulator.config.file_size = 200_000
    emulator.config.faults = [Fault(match=r"data\.\d+\.20261125\.2\.csv\.gz", kind="drip", origin="files", chunk=4096, interval=0.05)]
    lease_options = {**LEASE, "expiry_seconds": 15}  # time for two commands to look before it expires, under load
    job = s3_job(tmp_path / "a", emulator, bucket, [bulk_endpoint("app_downloads")], lease=lease_options)
    other_host = s3_job(tmp_path / "b", emulator, bucket, [bulk_endpoint("app_downloads")], lease=lease_options)
    holder = start_cli("run", str(job), "--date", DATE, env=host_of(job))
    wait_for(lambda: len(data_keys(bucket)) >= 1)
    hold(emulator.config.faults)  # the holder is still running when it is killed
    lease = lease_doc(bucket)
    assert lease["pid"] == holder.pid and not lease["released"]
    holder.kill()
    holder.wait(timeout=10)
    # The dead holder's OS lock is taken again, as it looks from this host when the run was on
    # another one: only the lease's expiry can tell that it died.
    with FileLock(lease["lock"], timeout=5):
        blocked = run_cli("run", str(other_host), "--date", DATE, timeout=30, env=host_of(other_host))
        assert blocked.returncode == 3, blocked.stdout + blocked.stderr
        assert f"pid {holder.pid}" in blocked.stderr and lease["run_id"] in blocked.stderr
        status = run_cli("status", str(other_host), "--from", DATE, "--to", DATE)
        assert "running" in status.stdout and "abandoned" not in status.stdout, status.stdout  # its lease has not expired yet

        emulator.config.faults = []
        wait_for(lambda: lease_expired(bucket), timeout=30)
        status = run_cli("status", str(other_host), "--from", DATE, "--to", DATE)
        assert f"{lease['run_id']}  abandoned" in status.stdout, status.stdout  # expired lease: the run is dead
        taken = run_cli("run", str(other_host), "--date", DATE, timeout=60, env=host_of(other_host))
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert "taking over the lease" in taken.stderr
    assert data_keys(bucket) == set(expected_bulk(emulator, "app_downloads", DATE, DATE))


def lease_expired(endpoint: str) -> bool:
    from datetime import datetime

    return datetime.fromisoformat(lease_doc(endpoint)["expires"]) < datetime.now(UTC)


def test_a_run_that_loses_its_lease_stops_and_exits_1(tmp_path: Path, emulator, bucket: str) -> None:
    emulator.config.file_size = 200_000
    emulator.config.faults = [Fault(match=r"data\.\d+\.20261125\.2\.csv\.gz", kind="drip", origin="files", chunk=8192, interval=0.1)]
    job = s3_job(tmp_path, emulator, bucket, [bulk_endpoint("app_downloads")])
    process = start_cli("run", str(job), "--date", DATE)
    wait_for(lambda: len(data_keys(bucket)) >= 1)
    hold(emulator.config.faults)  # the slow file is still in flight when the run learns it lost its lease
    # Another host decided this run was dead and took the lease over.
    thief = {**lease_doc(bucket), "run_id": "20261125T000000.000000Z-other", "host": "elsewhere", "pid": 1}
    s3(bucket).put_object(Bucket="lake", Key="raw/_apilake/leases/job.json", Body=json.dumps(thief).encode())
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1, out + err
    assert "was taken over by another run" in err
    (record_key,) = [o["Key"] for o in s3(bucket).list_objects_v2(Bucket="lake", Prefix="raw/_apilake/runs/")["Contents"]]
    record = json.loads(s3(bucket).get_object(Bucket="lake", Key=record_key)["Body"].read())
    assert record["status"] == "failed"
    (slow,) = [u for u in record["units"] if u["unit"].endswith("data.22129.20261125.2.csv.gz")]
    assert slow["status"] == "interrupted" and "taken over by another run" in slow["error"]  # dropped, and named
    assert not any(k.endswith(".2.csv.gz") for k in data_keys(bucket))
    assert s3(bucket).list_multipart_uploads(Bucket="lake").get("Uploads", []) == []
    assert lease_doc(bucket)["run_id"] == thief["run_id"]  # the loser never writes over the new holder's lease


def test_a_shared_folder_with_lease_mode_always_keeps_two_hosts_apart(tmp_path: Path, emulator) -> None:
    lake = tmp_path / "shared-lake"  # as a folder on NFS, mounted by both hosts
    jobs = [
        write_job(tmp_path / host, emulator, [details_endpoint(("ios",), (1,))], destination=str(lake), lease={**LEASE, "mode": "always"})
        for host in ("a", "b")
    ]
    [outcomes] = race(emulator, [jobs])
    assert sorted(code for code, _err, _pid in outcomes) == [0, 3], outcomes
    assert any(HOLDER.search(err) for _code, err, _pid in outcomes)
    assert json.loads((lake / "_apilake" / "leases" / "job.json").read_text())["released"] is True
