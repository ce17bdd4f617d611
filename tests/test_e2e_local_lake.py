"""End to end: a local lake against hostile names, two spellings of one lake, a full disk at the
very end, and the folders failed and killed runs leave behind; through the `apilake` command."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

from apilake.emulator import Fault
from apilake.emulator.data import file_bytes, name_signature
from conftest import (
    TOKEN,
    all_text,
    bulk_endpoint,
    details_endpoint,
    expected_bulk,
    hold,
    lake_objects,
    records,
    run_cli,
    start_cli,
    temp_bytes,
    temp_files,
    wait_for,
    write_job,
)

DATE = "2026-11-25"
DAY = "metrics/app_downloads/daily/2026-11-25"


def offer(emulator, names: list[str]) -> None:
    """Make the vendor's bulk listing offer exactly these object names (signed as the vendor signs them)."""
    urls = [f"{emulator.api_url}/v2/bulk/data?name={quote(n)}&signature={name_signature(n)}" for n in names]
    body = json.dumps({"code": 200, "data": {"urls": urls}}).encode()
    emulator.config.faults = [Fault(match="get-bulk-urls", kind="body", body=body)]


def served(emulator, name: str) -> bytes:
    return file_bytes(name, emulator.config.file_size_for(name))


def empty_folders(lake: Path) -> list[Path]:
    return sorted(Path(d) for d, dirs, names in os.walk(lake) if not dirs and not names)


def no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr


# -- item: names apilake keeps for its own files ----------------------------------------------------


def test_vendor_names_that_look_like_apilake_markers_land_visible_and_stay(tmp_path: Path, emulator) -> None:
    names = [f"{DAY}/b.apilake-tmp-x.csv.gz", f"{DAY}/c.csv.gz.apilake-lock", f"{DAY}/.apilake-tmp/d.csv.gz"]
    offer(emulator, names)
    by_path = {**bulk_endpoint(), "name": "by_path", "key": "{source}/{endpoint}/{url_path}"}
    job = write_job(tmp_path, emulator, [bulk_endpoint(), by_path])
    lake = tmp_path / "lake"
    want = {
        "dataai/bulk_daily/metrics/dt=2026-11-25/b%2Eapilake-tmp-x.csv.gz": served(emulator, names[0]),
        "dataai/bulk_daily/metrics/dt=2026-11-25/c.csv.gz%2Eapilake-lock": served(emulator, names[1]),
        "dataai/bulk_daily/metrics/dt=2026-11-25/d.csv.gz": served(emulator, names[2]),
        f"dataai/by_path/{DAY}/b%2Eapilake-tmp-x.csv.gz": served(emulator, names[0]),
        f"dataai/by_path/{DAY}/c.csv.gz%2Eapilake-lock": served(emulator, names[1]),
        f"dataai/by_path/{DAY}/%2Eapilake-tmp/d.csv.gz": served(emulator, names[2]),
    }
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lake_objects(lake) == want
    status = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert status.returncode == 0, status.stdout  # every landed file is seen: none passes for a temporary file

    again = run_cli("run", str(job), "--date", DATE, "--force")  # writing the same folders again removes nothing of theirs
    assert again.returncode == 0, again.stdout + again.stderr
    assert lake_objects(lake) == want
    assert TOKEN not in all_text(lake, again)


# -- item: long file names --------------------------------------------------------------------------


def test_a_name_the_file_system_takes_lands_and_a_longer_one_fails_clearly(tmp_path: Path, emulator) -> None:
    fits = "f" * 237 + ".csv.gz"  # 244 bytes: the name fits, its temporary name would not
    wide = "é" * 120 + ".csv.gz"  # 247 bytes in UTF-8: a cut must not split a character
    too_long = "g" * 293 + ".csv.gz"  # 300 bytes: more than any common file system takes
    names = [f"{DAY}/{fits}", f"{DAY}/{wide}", f"{DAY}/{too_long}"]
    offer(emulator, names)
    job = write_job(tmp_path, emulator, [bulk_endpoint()])
    lake = tmp_path / "lake"
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1, result.stdout + result.stderr
    folder = "dataai/bulk_daily/metrics/dt=2026-11-25"
    assert lake_objects(lake) == {f"{folder}/{fits}": served(emulator, names[0]), f"{folder}/{wide}": served(emulator, names[1])}
    unit = f"dataai/bulk_daily/{DATE}/{DAY}/{too_long}"
    assert f"FAILED {unit}: cannot write '{folder}/{too_long}': its name '{too_long}' (300 bytes) is longer than" in result.stdout
    assert "`key:` template" in result.stdout
    assert temp_files(lake) == []
    assert TOKEN not in all_text(lake, result)
    no_traceback(result)


# -- item: one lock per job and real destination ---------------------------------------------------


def start_slow_run(emulator, job: Path, *args: str):
    emulator.config.file_size = 200_000
    emulator.config.file_sizes = {".2.csv.gz": 2_000_000}
    emulator.config.faults = [Fault(match=r"data\.\d+\.20261125\.2\.csv\.gz", kind="drip", origin="files", chunk=65536, interval=0.05)]
    return start_cli("run", str(job), "--date", DATE, *args)


@pytest.mark.parametrize("spelling", ["a copy of the job file in another folder", "the lake through a symlink"])
def test_a_second_spelling_of_the_same_job_and_lake_waits_for_the_first(tmp_path: Path, emulator, spelling: str) -> None:
    lake = tmp_path / "lake"
    job = write_job(tmp_path / "a", emulator, [bulk_endpoint()], destination=str(lake))
    first = start_slow_run(emulator, job)
    wait_for(lambda: bool(lake_objects(lake)) and temp_bytes(lake) > 0)
    hold(emulator.config.faults)  # the first run stays mid-transfer while the second tries
    if spelling == "the lake through a symlink":
        (tmp_path / "link").symlink_to(lake, target_is_directory=True)
        second = run_cli("run", str(job), "--date", DATE, "--dest", str(tmp_path / "link"), timeout=30)
    else:
        (tmp_path / "b").mkdir()
        copy = tmp_path / "b" / "job.yaml"
        shutil.copy(job, copy)
        second = run_cli("run", str(copy), "--date", DATE, timeout=30)
    assert second.returncode == 3, second.stdout + second.stderr
    assert "another run of job 'job' into" in second.stderr and str(lake.resolve()) in second.stderr and "still going" in second.stderr
    assert TOKEN not in second.stdout + second.stderr
    no_traceback(second)

    hold(emulator.config.faults, 0)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err  # nothing of the first run's was removed under it
    assert lake_objects(lake) == expected_bulk(emulator, "app_downloads,usage", DATE, DATE)
    assert [r["status"] for r in records(lake)] == ["succeeded"]


# -- item: a full disk at the final record ----------------------------------------------------------


def test_a_final_record_that_cannot_be_written_fails_the_run_truthfully(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [details_endpoint()])
    lake = tmp_path / "lake"
    running_record = 2048  # bytes: the objects and the `running` record fit, the final record (4 units) does not

    def small_files() -> None:  # in the child: writing past this size fails with EFBIG, as a full disk fails
        resource.setrlimit(resource.RLIMIT_FSIZE, (running_record, running_record))

    result = run_cli("run", str(job), "--date", DATE, preexec_fn=small_files)
    assert result.returncode == 1, result.stdout + result.stderr
    objects = lake_objects(lake)
    assert len(objects) == 4 and max(len(b) for b in objects.values()) < running_record
    assert re.search(r"dataai/details +4 +0 +0 +0 ", result.stdout), result.stdout  # the summary tells what landed
    assert "could not be finished (cannot write '_apilake/runs/" in result.stdout
    assert "it stays 'running' and 'apilake status' shows the run as abandoned" in result.stdout
    [record] = records(lake)
    assert record["status"] == "running" and record["finished"] is None
    assert TOKEN not in all_text(lake, result)
    no_traceback(result)

    status = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert f"{record['run_id']}  abandoned" in status.stdout, status.stdout
    emulator.stats.reset()
    rerun = run_cli("run", str(job), "--date", DATE)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert records(lake)[-1]["counts"] == {"skipped": 4} and emulator.stats.count() == 0  # nothing fetched twice
    assert lake_objects(lake) == objects


# -- item: no empty folder left behind -------------------------------------------------------------


def test_failed_file_units_leave_no_empty_folder_and_the_users_folders_stay(tmp_path: Path, emulator) -> None:
    raw = {**details_endpoint(), "name": "raw", "kind": "file"}
    job = write_job(tmp_path, emulator, [raw])
    lake = tmp_path / "lake"
    (lake / "mine" / "empty").mkdir(parents=True)  # the user's: never apilake's to remove
    assert run_cli("run", str(job), "--date", "2026-11-24").returncode == 0  # dataai/raw/ exists and holds a day

    emulator.config.faults = [Fault(match="/details", kind="cut")]  # every attempt of every unit cut half-way
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1, result.stdout + result.stderr
    assert not (lake / "dataai" / "raw" / "dt=2026-11-25").exists()
    assert empty_folders(lake) == [lake / "mine" / "empty"]
    assert TOKEN not in all_text(lake, result)
    assert sorted(lake_objects(lake)) == sorted(
        f"dataai/raw/dt=2026-11-24/market={m},product_id={p}.json"  # by its Content-Type
        for m in ("ios", "google-play")
        for p in (1, 2)
    )


def test_the_next_run_removes_the_empty_temporary_folders_of_a_killed_one(tmp_path: Path, emulator) -> None:
    lake = tmp_path / "lake"
    job = write_job(tmp_path, emulator, [bulk_endpoint()])
    process = start_slow_run(emulator, job)

    def emptied_temp_folders() -> list[Path]:  # of folders whose files all landed (a dimension's), not the records'
        return [f for f in empty_folders(lake) if f.name == ".apilake-tmp" and "dimensions" in f.parts]

    wait_for(lambda: temp_bytes(lake) > 0 and bool(emptied_temp_folders()))  # while a slow file is mid-transfer
    hold(emulator.config.faults)
    process.kill()
    process.wait(timeout=10)
    assert emptied_temp_folders()

    emulator.config.faults = []
    rerun = run_cli("run", str(job), "--date", DATE)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert lake_objects(lake) == expected_bulk(emulator, "app_downloads,usage", DATE, DATE)
    assert [p for p in lake.rglob("*") if ".apilake-" in p.name] == []  # no temporary folder, file or journal left
    assert empty_folders(lake) == []
    assert TOKEN not in all_text(lake, rerun)
