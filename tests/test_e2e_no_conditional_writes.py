"""End to end: S3-compatible stores without conditional writes are named right, and usable from
one host with `lease: {mode: off}`.

The stores are `AlteringProxy` in front of moto, not s3rver (the store these faults were met
on): s3rver needs Node.js and npm in CI, and the proxy reproduces both of its faults on the wire,
where apilake sees them. Dropping `If-None-Match` / `If-Match` before moto sees them is exactly a
store that ignores conditions (each write simply lands); appending the bytes of aws-chunked
framing to the lease's `PutObject` is what s3rver kept of botocore's checksummed uploads. (Run
by hand against s3rver 3 over HTTPS, apilake gives the same messages: the altered lease by
default, ignored conditions with `AWS_REQUEST_CHECKSUM_CALCULATION=when_required`, and with
`lease: {mode: off}` a run that lands.)
"""

from __future__ import annotations

import json
from pathlib import Path

from altering_proxy import AlteringProxy
from apilake.emulator import Fault
from conftest import TOKEN, details_endpoint, hold, run_cli, start_cli, wait_for, write_job
from moto_server import s3

DATE = "2026-11-25"
PER_DAY = 100


def own_keys(endpoint: str) -> set[str]:
    listed = s3(endpoint).list_objects_v2(Bucket="lake", Prefix="raw/_apilake/")
    return {o["Key"].removeprefix("raw/_apilake/").split("/")[0] for o in listed.get("Contents", [])}


def test_a_store_that_alters_the_lease_object_is_named_with_its_fix_not_as_another_run(tmp_path: Path, emulator, bucket: str) -> None:
    with AlteringProxy(bucket, match="/_apilake/leases/", drop_conditions=True) as proxy_url:  # s3rver over HTTPS
        job = write_job(tmp_path, emulator, [details_endpoint(("ios",), (1,))], destination="s3://lake/raw", s3={"endpoint_url": proxy_url})
        result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the store altered the lease object _apilake/leases/job.json" in result.stderr
    assert "AWS_REQUEST_CHECKSUM_CALCULATION=when_required" in result.stderr
    assert "keep changing it" not in result.stderr and "Traceback" not in result.stderr
    assert emulator.stats.count() == 0 and own_keys(bucket) == {"leases"}  # nothing fetched, no run recorded
    assert TOKEN not in result.stdout + result.stderr


def test_lease_mode_off_runs_on_a_store_that_ignores_conditions_warns_every_run_and_counts_quota_per_host(tmp_path: Path, emulator, bucket: str) -> None:
    host = {"APILAKE_QUOTA_DIR": str(tmp_path / "host-quota")}
    gate = Fault(match="/details", kind="drip", chunk=1, interval=0.1)
    with AlteringProxy(bucket, match="(nothing)", drop_conditions=True) as proxy_url:
        job = write_job(
            tmp_path,
            emulator,
            [details_endpoint(("ios",), (1, 2))],
            destination="s3://lake/raw",
            s3={"endpoint_url": proxy_url},
            lease={"mode": "off"},
            source={"requests_per_day": PER_DAY},
        )
        job.write_text(job.read_text().replace("mode: 'off'", "mode: off"))  # as a user writes it: YAML's boolean false
        runs = []
        for _ in range(2):  # every run warns
            log_file = tmp_path / f"run{len(runs)}.log"
            runs.append((run_cli("run", str(job), "--date", DATE, "--force", "--log-file", str(log_file), env=host), log_file))

        emulator.config.faults = [gate]
        first = start_cli("run", str(job), "--date", DATE, "--force", env=host)
        try:
            wait_for(lambda: emulator.stats.count(origin="api") > 4)  # the held run has reached the source
            second = run_cli("run", str(job), "--date", DATE, env=host)
        finally:
            hold([gate], 0)
            out, err = first.communicate(timeout=60)
        status = run_cli("status", str(job), "--from", DATE, "--to", DATE, env=host)

    for result, log_file in runs:
        assert result.returncode == 0, result.stdout + result.stderr
        for text in (result.stderr, log_file.read_text()):
            assert "lease: {mode: off}" in text and "kept apart only on this host" in text, text
            assert "requests_per_day is counted per host" in text
    assert second.returncode == 3 and "is still going" in second.stderr, second.stdout + second.stderr  # the host's OS lock
    assert first.returncode == 0, out + err
    assert "leases" not in own_keys(bucket) and "quota" not in own_keys(bucket)  # no lease, no ledger in the store
    (ledger,) = (tmp_path / "host-quota" / "_apilake" / "quota").glob("*.json")
    (day,) = json.loads(ledger.read_text())["days"].values()
    assert day["used"] == emulator.stats.count(origin="api") == 6  # every request counted, blocks given back
    assert f"dataai: 6 of {PER_DAY} requests" in status.stdout, status.stdout + status.stderr
    written = [r.stdout + r.stderr + f.read_text() for r, f in runs] + [out, err, second.stderr, status.stdout, ledger.read_text()]
    assert all(TOKEN not in text for text in written)
