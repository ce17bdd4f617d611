"""Crash safety, graceful interruption and the run lock, with real processes and real signals."""

from __future__ import annotations

import signal
from pathlib import Path

from apilake.emulator import Fault
from conftest import bulk_endpoint, expected_bulk, hold, lake_objects, records, run_cli, start_cli, temp_bytes, temp_files, wait_for, write_job

DATE = "2026-11-25"
BULK = bulk_endpoint()
SLOW = r"data\.\d+\.20261125\.2\.csv\.gz"  # the metric file #2 of each bundle drips slowly


def expected(emulator) -> dict[str, bytes]:
    return expected_bulk(emulator, "app_downloads,usage", DATE, DATE)


def mid_transfer(lake: Path) -> bool:
    """Some files landed while a slow one is half-way: its temporary file holds bytes."""
    return bool(lake_objects(lake)) and temp_bytes(lake) > 0


def wait_mid_transfer(lake: Path, emulator) -> None:
    """Wait until the run is mid-transfer, then keep it there (its slow files drip slower still)."""
    wait_for(lambda: mid_transfer(lake))
    hold(emulator.config.faults)


def start_slow_run(tmp_path: Path, emulator):
    emulator.config.file_size = 400_000
    emulator.config.file_sizes = {".2.csv.gz": 3_000_000}  # the slow files; writes come in 1 MiB chunks
    emulator.config.faults = [Fault(match=SLOW, kind="drip", origin="files", chunk=65536, interval=0.05)]
    job = write_job(tmp_path, emulator, [BULK])
    return job, start_cli("run", str(job), "--date", DATE)


def assert_only_whole_objects(lake: Path, emulator) -> dict[str, bytes]:
    want = expected(emulator)
    landed = lake_objects(lake)
    assert set(landed) <= set(want)
    for key, body in landed.items():
        assert body == want[key], f"{key} is damaged"
    return landed


def test_kill_9_mid_transfer_then_rerun_lands_exactly_what_is_missing(tmp_path: Path, emulator) -> None:
    lake = tmp_path / "lake"
    job, process = start_slow_run(tmp_path, emulator)
    wait_mid_transfer(lake, emulator)
    process.kill()
    process.wait(timeout=10)
    assert all(p.name.startswith(".") for p in temp_files(lake))  # what a kill leaves is hidden
    before = assert_only_whole_objects(lake, emulator)
    assert len(before) < len(expected(emulator))  # the slow files did not land
    killed = records(lake)[-1]["run_id"]
    status = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert f"{killed}  abandoned" in status.stdout and "was abandoned: its process died" in status.stdout, status.stdout

    emulator.config.faults = []
    emulator.stats.reset()
    rerun = run_cli("run", str(job), "--date", DATE)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert lake_objects(lake) == expected(emulator)
    assert temp_files(lake) == []  # the killed run's temporary file is gone
    assert emulator.stats.count(origin="files") == len(expected(emulator)) - len(before)  # nothing twice
    assert records(lake)[-1]["counts"]["skipped"] == len(before)


def test_sigterm_stops_gracefully_records_interrupted_and_exits_130(tmp_path: Path, emulator) -> None:
    lake = tmp_path / "lake"
    job, process = start_slow_run(tmp_path, emulator)
    wait_mid_transfer(lake, emulator)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, out + err
    assert temp_files(lake) == []  # in-flight transfers were aborted cleanly
    assert_only_whole_objects(lake, emulator)
    record = records(lake)[-1]
    assert record["status"] == "interrupted"
    assert "SIGTERM" in err
    cut = [u for u in record["units"] if u["kind"] == "file" and u["status"] == "interrupted"]
    assert cut and all(u["error"] == "run interrupted by SIGTERM" for u in cut)  # files in flight are named too
    assert f"INTERRUPTED {cut[0]['unit']}: run interrupted by SIGTERM" in out

    emulator.config.faults = []
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    assert lake_objects(lake) == expected(emulator)


def test_sigint_also_stops_gracefully(tmp_path: Path, emulator) -> None:
    lake = tmp_path / "lake"
    _job, process = start_slow_run(tmp_path, emulator)
    wait_mid_transfer(lake, emulator)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert process.returncode == 130
    assert temp_files(lake) == []
    assert records(lake)[-1]["status"] == "interrupted"


def test_second_run_exits_3_at_once_and_a_killed_runs_lock_does_not_block(tmp_path: Path, emulator) -> None:
    lake = tmp_path / "lake"
    job, process = start_slow_run(tmp_path, emulator)
    wait_mid_transfer(lake, emulator)
    second = run_cli("run", str(job), "--date", DATE, timeout=10)
    assert second.returncode == 3
    assert "still going" in second.stderr and "Traceback" not in second.stderr
    live = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert f"{records(lake)[-1]['run_id']}  running" in live.stdout and "abandoned" not in live.stdout, live.stdout
    process.kill()
    process.wait(timeout=10)

    emulator.config.faults = []
    third = run_cli("run", str(job), "--date", DATE)  # the dead run's lock is gone with its process
    assert third.returncode == 0, third.stderr
    assert lake_objects(lake) == expected(emulator)
