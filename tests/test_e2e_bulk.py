"""End to end: bulk listings and streamed .csv.gz files against the emulator's two origins."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from apilake.emulator import Fault
from conftest import TOKEN, all_text, bulk_endpoint, expected_bulk, lake_objects, records, run_cli, write_job

BULK = bulk_endpoint()


def expected_lake(emulator, start: str, end: str, kinds: tuple[str, ...] = ("metrics", "dimensions")) -> dict[str, bytes]:
    return expected_bulk(emulator, "app_downloads,usage", start, end, kinds)


def test_every_listed_file_lands_byte_identical_once_and_the_token_stays_home(tmp_path: Path, emulator) -> None:
    emulator.config.file_size = 300_000
    job = write_job(tmp_path, emulator, [BULK])
    result = run_cli("run", str(job), "--from", "2026-11-24", "--to", "2026-11-25")
    assert result.returncode == 0, result.stdout + result.stderr
    expected = expected_lake(emulator, "2026-11-24", "2026-11-25")
    assert len(expected) == 16
    assert lake_objects(tmp_path / "lake") == expected
    for body in expected.values():
        assert gzip.decompress(body).startswith(b"date,")
    assert emulator.stats.auth_headers("api") > 0
    assert emulator.stats.auth_headers("files") == 0  # the pre-signed origin never saw the token
    assert emulator.stats.count(origin="files") == 16  # each file fetched once
    listings = [u for u in records(tmp_path / "lake")[-1]["units"] if u["kind"] == "listing"]
    assert [one["listing"]["selected"] for one in listings] == [8, 8]
    assert all("signature=***" in url for one in listings for url in one["listing"]["urls"])
    assert TOKEN not in all_text(tmp_path / "lake", result)


@pytest.mark.parametrize("files, kinds", [("metrics", ("metrics",)), ("dimensions", ("dimensions",))])
def test_files_filter(tmp_path: Path, emulator, files: str, kinds: tuple[str, ...]) -> None:
    job = write_job(tmp_path, emulator, [{**BULK, "files": files}])
    assert run_cli("run", str(job), "--date", "2026-11-25").returncode == 0
    assert lake_objects(tmp_path / "lake") == expected_lake(emulator, "2026-11-25", "2026-11-25", kinds)


def test_include_and_exclude_patterns(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [{**BULK, "include": ["*/usage/*"], "exclude": ["*/company_id.*"]}])
    assert run_cli("run", str(job), "--date", "2026-11-25").returncode == 0
    keys = sorted(lake_objects(tmp_path / "lake"))
    assert len(keys) == 3  # usage: 2 metric files + the product_id dimension
    assert not any("company_id" in k for k in keys)


def test_second_run_downloads_nothing_and_force_downloads_again(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [BULK])
    assert run_cli("run", str(job), "--date", "2026-11-25").returncode == 0
    emulator.stats.reset()
    again = run_cli("run", str(job), "--date", "2026-11-25")
    assert again.returncode == 0
    assert emulator.stats.count(origin="files") == 0
    assert emulator.stats.count(path_contains="/v2/bulk/data") == 0
    assert records(tmp_path / "lake")[-1]["counts"] == {"listed": 1, "skipped": 8}
    forced = run_cli("run", str(job), "--date", "2026-11-25", "--force")
    assert forced.returncode == 0
    assert emulator.stats.count(origin="files") == 8


@pytest.mark.parametrize("kind", ["cut", "truncate_gzip"])
def test_damaged_transfer_leaves_nothing_and_fails_only_its_unit(tmp_path: Path, emulator, kind: str) -> None:
    emulator.config.file_size = 200_000
    emulator.config.faults = [Fault(match=r"data\.\d+\.20261125\.1\.csv\.gz", kind=kind, origin="files")]
    job = write_job(tmp_path, emulator, [BULK])
    result = run_cli("run", str(job), "--date", "2026-11-25")
    assert result.returncode == 1
    landed = lake_objects(tmp_path / "lake")
    expected = expected_lake(emulator, "2026-11-25", "2026-11-25")
    damaged = {k for k in expected if k.endswith(".1.csv.gz") and "/metrics/" in k}
    assert len(damaged) == 2
    assert landed == {k: v for k, v in expected.items() if k not in damaged}
    leftovers = [p for p in (tmp_path / "lake").rglob("*") if p.is_file() and ".apilake-tmp-" in p.name]
    assert leftovers == []
    failed = [u for u in records(tmp_path / "lake")[-1]["units"] if u["status"] == "failed"]
    assert len(failed) == 2 and all(u["attempts"] == 3 for u in failed)


@pytest.mark.parametrize("kind", ["cut", "truncate_gzip"])
def test_damaged_transfer_succeeds_on_retry(tmp_path: Path, emulator, kind: str) -> None:
    emulator.config.faults = [Fault(match=r"data\.\d+\.20261125\.1\.csv\.gz", kind=kind, origin="files", times=1)]
    job = write_job(tmp_path, emulator, [BULK])
    result = run_cli("run", str(job), "--date", "2026-11-25")
    assert result.returncode == 0, result.stdout
    assert lake_objects(tmp_path / "lake") == expected_lake(emulator, "2026-11-25", "2026-11-25")
    retried = [u for u in records(tmp_path / "lake")[-1]["units"] if u["attempts"] == 2]
    assert len(retried) == 1


def test_content_encoding_gzip_is_stored_as_served(tmp_path: Path, emulator) -> None:
    emulator.config.faults = [Fault(match=".csv.gz", kind="gzip_encoding", origin="files")]
    job = write_job(tmp_path, emulator, [BULK])
    assert run_cli("run", str(job), "--date", "2026-11-25").returncode == 0
    assert lake_objects(tmp_path / "lake") == expected_lake(emulator, "2026-11-25", "2026-11-25")


@pytest.mark.parametrize(
    "key, message",
    [
        ("{dimension}", "key template rendered to an empty key"),  # metric files have no dimension
        ("{source}/{file_kind}.csv.gz", "two listed files would land on key 'dataai/metrics.csv.gz'"),
    ],
)
def test_bulk_key_problems_fail_the_listing_with_a_clear_message(tmp_path: Path, emulator, key: str, message: str) -> None:
    job = write_job(tmp_path, emulator, [{**BULK, "key": key}])
    result = run_cli("run", str(job), "--date", "2026-11-25")
    assert result.returncode == 1
    assert message in result.stdout
    assert "internal error" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert lake_objects(tmp_path / "lake") == {}
    assert emulator.stats.count(origin="files") == 0


def test_gzip_is_verified_by_the_served_file_name_whatever_the_key(tmp_path: Path, emulator) -> None:
    emulator.config.faults = [Fault(match=r"data\.\d+\.20261125\.1\.csv\.gz", kind="truncate_gzip", origin="files")]
    job = write_job(tmp_path, emulator, [{**BULK, "key": "{source}/{url_path}.bin"}])
    result = run_cli("run", str(job), "--date", "2026-11-25")
    assert result.returncode == 1
    assert "gzip" in result.stdout
    assert not any(".1.csv.gz" in k and "metrics" in k for k in lake_objects(tmp_path / "lake"))
