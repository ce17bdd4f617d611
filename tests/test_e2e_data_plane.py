"""The bulk data plane end to end through the CLI: `verify:`, `checksum:`, records written before
checksums had names, and critical-path-first ordering."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import google_crc32c

from apilake.emulator import Fault
from conftest import bulk_endpoint, details_endpoint, lake_objects, records, run_cli, write_job

DATE = "2026-11-25"
FIRST_FILE = r"data\.\d+\.20261125\.1\.csv\.gz"


def file_units(lake: Path) -> list[dict]:
    return [u for u in records(lake)[-1]["units"] if u["kind"] == "file"]


def test_verify_gzip_refuses_a_damaged_gzip_that_verify_length_lets_through(tmp_path: Path, emulator) -> None:
    # A body of the announced length whose gzip is damaged: only inflating it can tell.
    emulator.config.file_size = 100_000
    emulator.config.faults = [Fault(match=FIRST_FILE, kind="body", body=b"\x1f\x8b" + b"\x00" * 200, origin="files")]
    strict = write_job(tmp_path / "gzip", emulator, [bulk_endpoint("app_downloads")], source={"retry": {"attempts": 1}})
    result = run_cli("run", str(strict), "--date", DATE)
    assert result.returncode == 1, result.stdout
    failed = [u for u in file_units(tmp_path / "gzip" / "lake") if u["status"] == "failed"]
    assert len(failed) == 1 and "gzip" in failed[0]["error"]
    assert not any(k.endswith(".1.csv.gz") and "/metrics/" in k for k in lake_objects(tmp_path / "gzip" / "lake"))

    trusting = write_job(tmp_path / "length", emulator, [bulk_endpoint("app_downloads", verify="length")], source={"retry": {"attempts": 1}})
    result = run_cli("run", str(trusting), "--date", DATE)
    assert result.returncode == 0, result.stdout
    landed = lake_objects(tmp_path / "length" / "lake")
    assert b"\x1f\x8b" + b"\x00" * 200 in landed.values()  # landed as served: its length was right


def test_verify_length_still_refuses_a_cut_body(tmp_path: Path, emulator) -> None:
    emulator.config.file_size = 100_000
    emulator.config.faults = [Fault(match=FIRST_FILE, kind="cut", origin="files")]
    job = write_job(tmp_path, emulator, [bulk_endpoint("app_downloads")], source={"verify": "length", "retry": {"attempts": 1}})
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1
    failed = [u for u in file_units(tmp_path / "lake") if u["status"] == "failed"]
    assert len(failed) == 1
    assert not any(k.endswith(".1.csv.gz") and "/metrics/" in k for k in lake_objects(tmp_path / "lake"))


def test_a_file_server_that_never_answers_times_out_by_timeouts_read_while_other_files_flow(tmp_path: Path, emulator) -> None:
    # libcurl's own low-speed timer can go unserved on a multi handle shared with other transfers:
    # the first try of the stalled file then waited the whole stall out instead of `timeouts.read`.
    emulator.config.file_size = 100_000
    emulator.config.faults = [Fault(match=FIRST_FILE, kind="stall", seconds=30, origin="files", times=1)]
    retry = {"backoff_initial": 0.1, "backoff_max": 0.2}
    job = write_job(tmp_path, emulator, [bulk_endpoint("app_downloads")], source={"timeouts": {"read": 0.5}, "retry": retry})
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout + result.stderr
    units = file_units(tmp_path / "lake")
    assert len(units) > 1 and all(u["status"] == "landed" for u in units)
    # The stalled file timed out and landed on its retry; the others landed at once.
    assert sorted(u["attempts"] for u in units) == [1] * (len(units) - 1) + [2]
    stalled = max(units, key=lambda u: u["attempts"])
    assert stalled["seconds"] < 5  # 0.5 s of silence, a short back-off and the file (libcurl alone: 10 s and more)


def test_checksums_are_recorded_with_their_algorithm(tmp_path: Path, emulator) -> None:
    emulator.config.file_size = 50_000
    endpoints = [bulk_endpoint("app_downloads"), bulk_endpoint("usage", name="bulk_sha", checksum="sha256")]
    job = write_job(tmp_path, emulator, endpoints)
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    lake = lake_objects(tmp_path / "lake")
    seen = set()
    for unit in file_units(tmp_path / "lake"):
        (obj,) = unit["objects"]
        body = lake[obj["key"]]
        algorithm, value = obj["checksum"].split(":")
        seen.add((unit["endpoint"], algorithm))
        if algorithm == "sha256":
            assert value == obj["sha256"] == hashlib.sha256(body).hexdigest()
        else:
            assert value == f"{google_crc32c.value(body):08x}" and obj["sha256"] is None
    assert seen == {("bulk_daily", "crc32c"), ("bulk_sha", "sha256")}


def test_a_lake_written_before_checksums_had_names_still_reports_and_skips(tmp_path: Path, emulator) -> None:
    emulator.config.file_size = 50_000
    job = write_job(tmp_path, emulator, [bulk_endpoint("app_downloads")])
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    for path in (tmp_path / "lake" / "_apilake" / "runs").glob("*.json"):  # as the old version wrote them
        record = json.loads(path.read_text())
        for unit in record["units"]:
            for obj in unit["objects"]:
                obj.pop("checksum", None)
                obj["sha256"] = "0" * 64
        path.write_text(json.dumps(record))
    status = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert status.returncode == 0, status.stdout + status.stderr
    again = run_cli("run", str(job), "--date", DATE)
    assert again.returncode == 0
    assert emulator.stats.count(origin="files") == 4  # the first run's files only: the rerun skipped them
    assert {u["status"] for u in file_units(tmp_path / "lake")} == {"skipped"}


def test_bulk_listings_and_their_files_go_before_single_requests(tmp_path: Path, emulator) -> None:
    emulator.config.file_size = 20_000
    singles = details_endpoint(markets=("ios",), products=tuple(range(1, 9)))
    job = write_job(tmp_path, emulator, [singles, bulk_endpoint("app_downloads")], concurrency=1)
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    kinds = {"get-bulk-urls": "listing", "/v2/bulk/data": "files", "/objects/": "files", "/details": "single"}
    order = [next(kind for part, kind in kinds.items() if part in r.target) for r in emulator.stats.requests]
    # The listing first (though planned last); its files before any single request waiting meanwhile.
    assert order[0] == "listing"
    assert order.index("single") > max(i for i, kind in enumerate(order) if kind == "files")
    assert order.count("single") == 8


def test_a_key_that_climbs_out_of_a_local_lake_is_refused(tmp_path: Path) -> None:
    import asyncio

    import pytest

    from apilake.destinations.local import LocalDestination
    from apilake.errors import DestinationError

    dest = LocalDestination(tmp_path / "lake")
    for key in ("../outside.bin", "a/../../outside.bin", "."):
        with pytest.raises(DestinationError, match="outside the destination"):
            asyncio.run(dest.put(key, b"x"))
    asyncio.run(dest.put("a/./b/../c.bin", b"x"))
    assert (tmp_path / "lake" / "a" / "c.bin").read_bytes() == b"x"
    assert not (tmp_path / "outside.bin").exists()
