"""End to end: `apilake run --executor dask` against a real multi-process Dask cluster.

One `distributed.LocalCluster` (scheduler over TCP on loopback, three worker processes with one
thread each) serves the whole module; every run is the real `apilake` command in its own process,
talking to the emulator (and moto) on loopback, exactly like the local-executor tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from apilake.emulator import Fault, expected_file_names, file_bytes
from conftest import TOKEN, all_text, bulk_endpoint, details_endpoint, lake_objects, records, run_cli, start_cli, temp_bytes, temp_files, wait_for, write_job
from moto_server import DUMMY_AWS_ENV

distributed = pytest.importorskip("distributed")

DATE = "2026-11-25"
WORKERS = 3
BULK = bulk_endpoint()
DETAILS = details_endpoint()
HISTORY = {  # paginated: several pages per unit
    "name": "history",
    "kind": "json",
    "path": "/v1.3/intelligence/apps/{market}/app/{product_id}/history",
    "params": {"countries": "US", "start_date": "{date-6}", "end_date": "{date}"},
    "matrix": {"market": ["ios"], "product_id": [1, 2]},
    "paginate": "next_page",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """A LocalCluster of worker processes and a client of the test's own (to inspect workers)."""
    no_aws = tmp_path_factory.mktemp("no-aws")
    env = {
        **DUMMY_AWS_ENV,
        "AWS_CONFIG_FILE": str(no_aws / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(no_aws / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with (
        distributed.LocalCluster(
            n_workers=WORKERS,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address=None,
            env=env,
        ) as local_cluster,
        distributed.Client(local_cluster) as client,
    ):
        client.get_task_stream()  # installs the scheduler's task-stream plugin: which worker ran what
        yield local_cluster, client


def run_dask(cluster: tuple[Any, Any], job: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", str(job), "--date", DATE, "--executor", "dask", "--scheduler", cluster[0].scheduler_address, *args)


def expected_bulk(emulator, bundles: str = "app_downloads,usage") -> dict[str, bytes]:
    out = {}
    for name in expected_file_names(bundles, DATE, DATE, "daily", emulator.config):
        kind, *_, date, file_name = name.split("/")
        folder = "metrics" if kind == "metrics" else f"dimensions/{file_name.split('.')[0]}"
        out[f"dataai/bulk_daily/{folder}/dt={date}/{file_name}"] = file_bytes(name, emulator.config.file_size_for(name))
    return out


def cluster_logs(client: Any) -> str:
    """Everything the scheduler and the workers logged (Dask keeps recent lines in memory)."""
    lines = [message for _level, message in client.get_scheduler_logs(n=10_000)]
    lines += [message for worker in client.get_worker_logs(n=10_000).values() for _level, message in worker]
    return "\n".join(lines)


def test_same_lake_as_the_local_executor_byte_identical_and_exactly_once(tmp_path: Path, emulator, cluster) -> None:
    _cluster, client = cluster
    emulator.config.file_size = 300_000
    # a careless vendor echoes the token in a 502 body once: the retry's warning must come back redacted
    emulator.config.faults = [Fault(match="/app/2/details", kind="echo_secret", status=502, times=1)]
    local_job = write_job(tmp_path / "local", emulator, [DETAILS, HISTORY, BULK])
    local = run_cli("run", str(local_job), "--date", DATE)
    assert local.returncode == 0, local.stdout + local.stderr

    emulator.config.faults = [Fault(match="/app/2/details", kind="echo_secret", status=502, times=1)]
    emulator.stats.reset()
    started = time.time()
    dask_job = write_job(tmp_path / "dask", emulator, [DETAILS, HISTORY, BULK])
    result = run_dask(cluster, dask_job)
    assert result.returncode == 0, result.stdout + result.stderr

    local_lake, dask_lake = lake_objects(tmp_path / "local" / "lake"), lake_objects(tmp_path / "dask" / "lake")
    assert dask_lake == local_lake  # byte-identical, same keys
    assert {k: v for k, v in dask_lake.items() if "/bulk_daily/" in k} == expected_bulk(emulator)
    assert any(".page-0002." in k for k in dask_lake)  # pagination really happened
    assert emulator.stats.count(origin="files") == len(expected_bulk(emulator))  # every file fetched once
    assert emulator.stats.auth_headers("files") == 0  # the token stayed with the API's origin
    record = records(tmp_path / "dask" / "lake")[-1]
    assert record["counts"] == records(tmp_path / "local" / "lake")[-1]["counts"] == {"landed": 14, "listed": 1}
    assert len(records(tmp_path / "dask" / "lake")) == 1  # one run record, written by the client
    assert temp_files(tmp_path / "dask" / "lake") == []

    tasks = [t for t in client.get_task_stream(start=started) if str(t["key"]).startswith("apilake_file-")]
    assert len({t["worker"] for t in tasks}) >= 2  # the files of one listing spread over workers

    assert "retrying" in result.stderr and "Bearer ***" in result.stderr  # worker log lines come home, redacted
    assert TOKEN not in all_text(tmp_path / "dask" / "lake", result)
    assert TOKEN not in cluster_logs(client)


def test_rerun_skips_what_landed_and_force_lands_again(tmp_path: Path, emulator, cluster) -> None:
    job = write_job(tmp_path, emulator, [DETAILS, BULK])
    assert run_dask(cluster, job).returncode == 0
    landed = lake_objects(tmp_path / "lake")
    emulator.stats.reset()
    again = run_dask(cluster, job)
    assert again.returncode == 0, again.stdout + again.stderr
    assert emulator.stats.count(origin="files") == 0
    assert records(tmp_path / "lake")[-1]["counts"] == {"skipped": 12, "listed": 1}
    forced = run_dask(cluster, job, "--force")
    assert forced.returncode == 0
    assert emulator.stats.count(origin="files") == 8
    assert lake_objects(tmp_path / "lake") == landed


def test_requests_per_second_holds_across_the_cluster(tmp_path: Path, emulator, cluster) -> None:
    emulator.config.requests_per_minute = 5  # the vendor's quota: 5 calls ...
    emulator.config.quota_window_s = 1.0  # ... in any 1 s window, else 429
    job = write_job(
        tmp_path, emulator, [{**DETAILS, "matrix": {"market": ["ios"], "product_id": list(range(1, 17))}}], source={"concurrency": 16, "requests_per_second": 5}
    )
    result = run_dask(cluster, job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert emulator.stats.count(status=429) == 0
    assert emulator.stats.max_in_window(1.0) <= 5
    assert len(lake_objects(tmp_path / "lake")) == 16


def test_daily_quota_holds_across_the_cluster(tmp_path: Path, emulator, cluster) -> None:
    job = write_job(
        tmp_path, emulator, [{**DETAILS, "matrix": {"market": ["ios"], "product_id": list(range(1, 9))}}], source={"concurrency": 4, "requests_per_day": 5}
    )
    result = run_dask(cluster, job)
    assert result.returncode == 1
    assert emulator.stats.count(origin="api") == 5  # not one more, with 3 workers drawing from it
    assert len(lake_objects(tmp_path / "lake")) == 5
    statuses = sorted(u["status"] for u in records(tmp_path / "lake")[-1]["units"])
    assert statuses == ["landed"] * 5 + ["not_attempted"] * 3
    assert "daily request quota" in result.stdout


def test_source_concurrency_holds_across_the_cluster(tmp_path: Path, emulator, cluster) -> None:
    emulator.config.file_size = 400_000  # each file drips for ~0.35 s
    emulator.config.faults = [Fault(match="name=", kind="drip", origin="files", chunk=65536, interval=0.05)]
    job = write_job(tmp_path, emulator, [BULK], source={"concurrency": 2})
    result = run_dask(cluster, job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lake_objects(tmp_path / "lake") == expected_bulk(emulator)
    # A transfer lasts > 0.3 s, so three starting within 0.3 s would be three at once: never, with
    # three workers free; two at once: yes.
    assert emulator.stats.max_in_window(0.3, origin="files") == 2


def test_a_worker_killed_mid_transfer_its_file_lands_elsewhere_once_and_whole(tmp_path: Path, emulator, cluster) -> None:
    _cluster, client = cluster
    lake = tmp_path / "lake"
    slow = r"data\.\d+\.20261125\.2\.csv\.gz"
    emulator.config.file_size = 300_000
    emulator.config.file_sizes = {".2.csv.gz": 3_000_000}  # ~2.3 s at 64 KiB every 50 ms
    emulator.config.faults = [Fault(match=slow, kind="drip", origin="files", chunk=65536, interval=0.05)]
    job = write_job(tmp_path, emulator, [{**BULK, "params": {**BULK["params"], "metric_bundles": "app_downloads"}}])
    process = start_cli("run", str(job), "--date", DATE, "--executor", "dask", "--scheduler", cluster[0].scheduler_address)
    try:
        pids: dict[str, int] = client.run(os.getpid)
        holder: list[int] = []

        def writing_slow_file() -> bool:
            holder[:] = [pid for pid in pids.values() if _holds_temp_file(pid, lake, ".2.csv.gz")]
            return bool(holder) and temp_bytes(lake) > 0

        wait_for(writing_slow_file, timeout=30)
        os.kill(holder[0], signal.SIGKILL)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out + err
    expected = expected_bulk(emulator, "app_downloads")
    assert lake_objects(lake) == expected  # whole, byte-identical
    assert temp_files(lake) == []  # the dead worker's temporary file was cleared by the retry
    files = [u for u in records(lake)[-1]["units"] if u["kind"] == "file"]
    assert sorted(u["unit"] for u in files) == sorted(set(u["unit"] for u in files))  # each file once
    assert {u["status"] for u in files} == {"landed"} and len(files) == len(expected)
    assert emulator.stats.count(origin="files") == len(expected) + 1  # only the killed transfer twice
    assert TOKEN not in out + err
    client.wait_for_workers(WORKERS, timeout=30)  # the nanny restarts the killed worker


def _holds_temp_file(pid: int, lake: Path, suffix: str) -> bool:
    """Whether process `pid` has a temporary file of a key ending in `suffix` open in the lake."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(lake)) and f"{suffix}.apilake-tmp-" in target:
            return True
    return False


def s3_objects(endpoint: str, prefix: str = "raw/") -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k[len(prefix) :]: client.get_object(Bucket="lake", Key=k)["Body"].read() for k in keys}


def test_s3_destination_through_the_cluster(tmp_path: Path, emulator, moto_endpoint: str, cluster) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    emulator.config.file_sizes = {"data.": 6 * 1024 * 1024}  # metric files go up in two 5 MiB parts
    job = write_job(tmp_path, emulator, [DETAILS, BULK], destination="s3://lake/raw", s3={"endpoint_url": moto_endpoint, "part_size_mb": 5})
    result = run_dask(cluster, job)
    assert result.returncode == 0, result.stdout + result.stderr
    landed = s3_objects(moto_endpoint)
    assert {k: v for k, v in landed.items() if "/bulk_daily/" in k} == expected_bulk(emulator)
    assert len([k for k in landed if "/details/" in k]) == 4
    assert len([k for k in landed if k.startswith("_apilake/runs/")]) == 1
    assert s3.list_multipart_uploads(Bucket="lake").get("Uploads", []) == []
    assert TOKEN not in json.dumps({k: v.decode("utf-8", "replace") for k, v in landed.items() if not k.endswith(".gz")})


def test_a_folder_the_workers_cannot_see_fails_loudly(tmp_path: Path, emulator, cluster) -> None:
    """A worker that does not see the client's run record must not land into its own local folder."""
    lake = tmp_path / "lake"
    job = write_job(tmp_path, emulator, [DETAILS])
    _cluster, client = cluster
    client.run(_hide_records, str(lake))  # as if the workers had another disk at the same path
    try:
        result = run_dask(cluster, job)
    finally:
        client.run(_show_records)
    assert result.returncode == 1
    assert "must be shared by every worker" in result.stdout
    assert lake_objects(lake) == {}


def _hide_records(lake: str) -> None:
    from apilake.destinations.local import LocalDestination

    original = LocalDestination.stat

    async def stat(self, key):  # type: ignore[no-untyped-def]
        return None if key.startswith("_apilake/") and str(self.root) == lake else await original(self, key)

    stat.original = original  # type: ignore[attr-defined]
    LocalDestination.stat = stat  # type: ignore[method-assign]


def _show_records() -> None:
    from apilake.destinations.local import LocalDestination

    LocalDestination.stat = getattr(LocalDestination.stat, "original", LocalDestination.stat)  # type: ignore[method-assign]


def test_without_the_dask_extra_the_error_is_clear_and_exit_2(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [DETAILS])
    code = (
        "import sys; sys.modules['distributed'] = None; sys.modules['dask'] = None\n"
        "from apilake.cli import main\n"
        f"sys.argv = ['apilake', 'run', {str(job)!r}, '--date', {DATE!r}, '--executor', 'dask', '--scheduler', 'tcp://127.0.0.1:9']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, "DATAAI_TOKEN": TOKEN})
    assert result.returncode == 2, result.stderr
    assert "pip install 'apilake[dask]'" in result.stderr and "Traceback" not in result.stderr
    assert emulator.stats.count() == 0
    assert not (tmp_path / "lake").exists()


def test_unreachable_scheduler_exits_2_and_writes_no_record(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [DETAILS])
    result = run_cli("run", str(job), "--date", DATE, "--scheduler", "tcp://127.0.0.1:9", env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"})
    assert result.returncode == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr
    assert emulator.stats.count() == 0
    assert records(tmp_path / "lake") == []


def test_sigterm_cancels_the_cluster_work_records_interrupted_and_exits_130(tmp_path: Path, emulator, cluster) -> None:
    lake = tmp_path / "lake"
    emulator.config.file_size = 300_000
    emulator.config.file_sizes = {".2.csv.gz": 3_000_000}
    emulator.config.faults = [Fault(match=r"data\.\d+\.20261125\.2\.csv\.gz", kind="drip", origin="files", chunk=65536, interval=0.05)]
    job = write_job(tmp_path, emulator, [BULK])
    process = start_cli("run", str(job), "--date", DATE, "--executor", "dask", "--scheduler", cluster[0].scheduler_address)
    try:
        wait_for(lambda: temp_bytes(lake) > 0, timeout=30)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    assert records(lake)[-1]["status"] == "interrupted"
    wait_for(lambda: temp_files(lake) == [], timeout=5)  # the workers dropped their in-flight transfers
    time.sleep(3)  # nothing lands after the run said it stopped (the slow files would by now)
    landed = lake_objects(lake)
    assert all(landed[k] == v for k, v in expected_bulk(emulator).items() if k in landed)
    assert not any(k.endswith(".2.csv.gz") and "/metrics/" in k for k in landed)

    emulator.config.faults = []
    assert run_dask(cluster, job).returncode == 0
    assert lake_objects(lake) == expected_bulk(emulator)


def test_any_vendor_on_the_cluster_oauth2_fan_out_and_a_report(tmp_path: Path, emulator, cluster) -> None:
    from test_e2e_vendors import ACCOUNTS, ENV, PRODUCTS, acme_job, expected_report, report, secrets_of

    job = acme_job(tmp_path, emulator, [ACCOUNTS, PRODUCTS, report()])
    result = run_cli("run", str(job), "--date", DATE, "--executor", "dask", "--scheduler", cluster[0].scheduler_address, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    objects = lake_objects(tmp_path / "lake")
    assert {k: v for k, v in objects.items() if "/installs/" in k} == expected_report(emulator)
    assert sorted(k for k in objects if "/products/" in k) == [f"acme/products/dt={DATE}/account_id={a}.json" for a in ("a1", "a2")]
    assert emulator.acme.reports_created == 1
    assert 1 <= emulator.acme.tokens_issued <= WORKERS  # at most one token per worker process
    text = all_text(tmp_path / "lake", result) + cluster_logs(cluster[1])
    for secret in secrets_of(emulator):
        assert secret not in text


def test_the_workers_of_a_cluster_spend_one_rotating_refresh_token_once(tmp_path: Path, emulator, cluster) -> None:
    """Every worker process needs an access token at once: one spends the refresh token, the
    others wait for its claim and take the access token it stored."""
    from test_e2e_refresh_tokens import ACCOUNTS, assert_no_token, env, job_file

    vendor = emulator.acme.refresh_tokens
    first = vendor.grant()
    accounts = {**ACCOUNTS, "params": {"date": "{date}", "part": "{part}"}, "matrix": {"part": list(range(7))}}  # 7 units at once
    job = job_file(tmp_path / "job.yaml", emulator, str(tmp_path / "lake"), [accounts], {"concurrency": 8})
    runs = []
    for date in ("2026-11-24", DATE):
        emulator.acme.expire_access_tokens()
        runs.append(run_cli("run", str(job), "--date", date, "--executor", "dask", "--scheduler", cluster[0].scheduler_address, env=env(first)))
        assert runs[-1].returncode == 0, runs[-1].stdout + runs[-1].stderr
    assert len(lake_objects(tmp_path / "lake")) == 14
    assert vendor.refreshes == 2 and vendor.refused == 0  # one spend a run, whatever the number of workers
    assert_no_token(emulator, tmp_path / "lake", *(r.stdout + r.stderr for r in runs), cluster_logs(cluster[1]))


def test_a_local_run_and_a_dask_run_sharing_a_credential_send_at_most_the_daily_quota(tmp_path: Path, emulator, cluster) -> None:
    ledger = tmp_path / "ledger"
    endpoint = {**DETAILS, "matrix": {"market": ["ios"], "product_id": list(range(1, 71))}}
    jobs = [
        write_job(tmp_path / name, emulator, [endpoint], quota_ledger=str(ledger), source={"concurrency": 4, "requests_per_day": 100})
        for name in ("local", "dask")
    ]
    runs = [
        start_cli("run", str(jobs[0]), "--date", DATE),
        start_cli("run", str(jobs[1]), "--date", DATE, "--executor", "dask", "--scheduler", cluster[0].scheduler_address),
    ]
    outputs = [process.communicate(timeout=120) for process in runs]
    codes = [process.returncode for process in runs]
    assert 1 in codes and set(codes) <= {0, 1}, outputs  # 140 units, 100 requests a day: one run at least runs out
    sent = emulator.stats.count(origin="api")
    assert 100 - 3 * 5 <= sent <= 100  # three workers and the local run each strand at most a block of 5 meanwhile
    assert len(lake_objects(tmp_path / "local" / "lake")) + len(lake_objects(tmp_path / "dask" / "lake")) == sent
    assert all("resets at" in out for (out, _err), code in zip(outputs, codes, strict=True) if code == 1)


def test_an_object_changed_after_it_landed_lands_again_on_the_cluster(tmp_path: Path, emulator, cluster) -> None:
    job = write_job(tmp_path, emulator, [DETAILS])
    assert run_dask(cluster, job).returncode == 0
    lake = tmp_path / "lake"
    whole = lake_objects(lake)
    changed = next(iter(whole))
    (lake / changed).write_bytes(whole[changed][:-1])  # one byte short: no longer what landed
    emulator.stats.reset()
    rerun = run_dask(cluster, job)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert lake_objects(lake) == whole
    assert emulator.stats.count(origin="api") == 1  # only the changed one was fetched again
    assert records(lake)[-1]["counts"] == {"landed": 1, "skipped": len(whole) - 1}


def test_tables_are_converted_on_the_workers_with_the_local_builds_rows(tmp_path: Path, emulator, cluster) -> None:
    """The run's table stage on the cluster: one task per (table, date) partition, the data files
    written by worker processes, one commit per table made by the client, the same rows as a
    table built locally."""
    _cluster, client = cluster
    endpoints = [{**HISTORY, "table": {"records": "list"}}, {**BULK, "table": {"name": "bulk_{file_kind}_{dimension}"}}]
    local = run_cli("run", str(write_job(tmp_path / "local", emulator, endpoints, tables={})), "--date", DATE)
    assert local.returncode == 0, local.stdout + local.stderr
    started = time.time()
    dask_job = write_job(tmp_path / "dask", emulator, endpoints, tables={})
    result = run_dask(cluster, dask_job)
    assert result.returncode == 0, result.stdout + result.stderr

    record = records(tmp_path / "dask" / "lake")[-1]
    built = {(t["table"], d) for t in record["tables"]["tables"] for d in t["built"]}
    assert len({table for table, _ in built}) >= 3 and record["tables"]["status"] == "succeeded"
    tasks = [t for t in client.get_task_stream(start=started) if str(t["key"]).startswith(f"apilake_table-{record['run_id']}-")]
    assert len(tasks) == len(built)  # one task per partition, run by the cluster
    writers = {int(pid) for pid in re.findall(r"written by process (\d+)", result.stderr)}
    assert len(re.findall(r"written by process", result.stderr)) == len(built)
    assert writers and writers <= set(client.run(os.getpid).values())  # worker processes wrote every data file

    from pyiceberg.catalog import load_catalog

    rows: dict[str, dict[str, list[str]]] = {}
    for name in ("local", "dask"):
        root = tmp_path / name / "lake" / "_apilake" / "tables"
        catalog = load_catalog("apilake", type="sql", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse")
        for table in sorted({table for table, _ in built}):
            loaded = catalog.load_table(table)
            assert len(loaded.snapshots()) == 1  # one commit per table
            read = loaded.scan().to_arrow().drop_columns(["_apilake_run_id"]).to_pylist()
            rows.setdefault(table, {})[name] = sorted(json.dumps(row, sort_keys=True, default=str) for row in read)
    for table, by in rows.items():
        assert by["dask"] == by["local"] and by["local"], table
    assert TOKEN not in all_text(tmp_path / "dask" / "lake", result) and TOKEN not in cluster_logs(client)


def test_incremental_cursors_open_and_advance_on_the_client_while_pages_land_on_workers(tmp_path: Path, emulator, cluster) -> None:
    from test_e2e_incremental import ISSUES, REPOS, job_file, landed_records, sent, states, with_params

    job = job_file(tmp_path, emulator, "github", [REPOS, with_params(ISSUES, per_page=5)])
    for date, touched in (("2026-11-25", ()), ("2026-11-26", (1, 2))):
        emulator.acme.changes.touch(*touched)
        emulator.stats.reset()
        result = run_cli("run", str(job), "--date", date, "--executor", "dask", "--scheduler", cluster[0].scheduler_address)
        assert result.returncode == 0, result.stdout + result.stderr
    found = states(tmp_path / "lake")
    for repo in ("r1", "r2"):  # each parent's window came from its own cursor, and it moved once all pages landed
        state = found[f"github/issues/repo={repo}"]
        assert {q["since"] for q in sent(emulator, f"/repos/acme/{repo}/issues")} == {state["windows"]["2026-11-26"]["start"]}
        assert all(window["done"] for window in state["windows"].values())
    assert {json.dumps(r, sort_keys=True) for r in landed_records(tmp_path / "lake", "github/issues/")} == {
        json.dumps(v.issue(), sort_keys=True) for v in emulator.acme.changes.versions
    }


def test_a_primary_keyed_table_is_built_whole_by_the_client_the_others_on_workers(tmp_path: Path, emulator, cluster) -> None:
    from test_e2e_table_upsert import TABLE, keyed_job, rows

    job = keyed_job(tmp_path, emulator)
    for date, touched in (("2026-11-25", ()), ("2026-11-26", (1, 2))):
        emulator.acme.changes.touch(*touched)
        result = run_cli("run", str(job), "--date", date, "--executor", "dask", "--scheduler", cluster[0].scheduler_address)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"table {TABLE} has a primary key: built whole by this process" in result.stderr
        assert re.search(r"table github\.repos, [0-9-]+: .* written by process", result.stderr), result.stderr  # a table without one: on the workers
    latest = {v.id: v.issue() for v in emulator.acme.changes.versions}
    assert [{k: row[k] for k in latest[row["id"]]} for row in rows(job)] == [latest[i] for i in sorted(latest)]
