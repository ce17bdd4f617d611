"""Daily operation end to end: backfills, profiles, logs, progress and the summary."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import yaml

from conftest import TOKEN, lake_objects, records, run_cli, write_job

DETAILS = {"name": "details", "kind": "json", "path": "/v1.3/apps/ios/app/{product_id}/details", "params": {"day": "{date}"}, "matrix": {"product_id": [1, 2]}}
COUNTRIES = {"name": "countries", "kind": "json", "path": "/v1.3/meta/countries"}


def test_backfill_lands_every_date_once_and_a_second_backfill_lands_nothing(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [DETAILS, COUNTRIES])
    first = run_cli("run", str(job), "--from", "2026-11-01", "--to", "2026-11-07")
    assert first.returncode == 0, first.stdout + first.stderr
    keys = sorted(lake_objects(tmp_path / "lake"))
    assert len(keys) == 7 * 3
    assert {k.split("/")[2] for k in keys} == {f"dt=2026-11-0{d}" for d in range(1, 8)}
    assert emulator.stats.count(origin="api") == 21

    emulator.stats.reset()
    second = run_cli("run", str(job), "--from", "2026-11-01", "--to", "2026-11-07")
    assert second.returncode == 0
    assert emulator.stats.count(origin="api") == 0
    assert records(tmp_path / "lake")[-1]["counts"] == {"skipped": 21}
    assert sorted(lake_objects(tmp_path / "lake")) == keys


def test_lag_shifts_the_requested_date(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [{**COUNTRIES, "lag": 3}])
    assert run_cli("run", str(job), "--date", "2026-11-25").returncode == 0
    assert list(lake_objects(tmp_path / "lake")) == ["dataai/countries/dt=2026-11-22/data.json"]


def test_profile_overrides_destination_and_source_settings(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [COUNTRIES])
    doc = yaml.safe_load(job.read_text())
    doc["sources"][0]["base_url"] = "http://127.0.0.1:9"  # nothing listens there: only the profile can make this work
    doc["profiles"] = {"dev": {"destination": str(tmp_path / "dev-lake"), "sources": {"dataai": {"base_url": emulator.api_url}}}}
    job.write_text(yaml.safe_dump(doc))
    by_option = run_cli("run", str(job), "--date", "2026-11-25", "--profile", "dev")
    assert by_option.returncode == 0, by_option.stderr
    assert list(lake_objects(tmp_path / "dev-lake")) == ["dataai/countries/dt=2026-11-25/data.json"]
    assert not (tmp_path / "lake").exists()
    by_env = run_cli("run", str(job), "--date", "2026-11-26", env={"APILAKE_PROFILE": "dev"})
    assert by_env.returncode == 0
    assert "dataai/countries/dt=2026-11-26/data.json" in lake_objects(tmp_path / "dev-lake")
    unknown = run_cli("run", str(job), "--date", "2026-11-26", "--profile", "prod")
    assert unknown.returncode == 2 and "no profile named 'prod'" in unknown.stderr


def test_json_logs_parse_carry_the_run_id_and_no_secret(tmp_path: Path, emulator) -> None:
    from apilake.emulator import Fault

    emulator.config.faults = [Fault(match="/app/2/details", kind="echo_secret", status=400)]
    log_file = tmp_path / "apilake.log"
    job = write_job(tmp_path, emulator, [DETAILS])
    result = run_cli("run", str(job), "--date", "2026-11-25", "--log-format", "json", "--verbose", "--log-file", str(log_file))
    assert result.returncode == 1
    run_id = records(tmp_path / "lake")[-1]["run_id"]
    for text in (result.stderr, log_file.read_text()):
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert len(lines) >= 3  # start, every landed object (verbose), the failure
        assert {line["run_id"] for line in lines} == {run_id}
        assert all({"time", "level", "message"} <= set(line) for line in lines)
        assert TOKEN not in text
    assert any(line["level"] == "warning" and "product_id=2" in line["message"] for line in map(json.loads, log_file.read_text().splitlines()))


def test_summary_table_and_plain_progress_when_not_a_terminal(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [DETAILS, COUNTRIES])
    result = run_cli("run", str(job), "--date", "2026-11-25")
    assert result.returncode == 0
    header, *rows = [line.split() for line in result.stdout.splitlines()[:3]]
    assert header == ["endpoint", "landed", "skipped", "ignored", "failed", "not", "run", "bytes", "wall", "time", "sum", "of", "unit", "times"]
    assert [r[:5] for r in rows] == [["dataai/countries", "1", "0", "0", "0"], ["dataai/details", "2", "0", "0", "0"]]
    assert "progress: 3/3 units" in result.stderr
    quiet = run_cli("run", str(job), "--date", "2026-11-25", "--quiet")
    assert quiet.stderr == ""


def test_summary_time_is_each_endpoints_wall_time_not_the_sum_of_its_units(tmp_path: Path, emulator) -> None:
    from apilake.emulator import Fault

    emulator.config.faults = [Fault(match="/details", kind="stall", seconds=0.8)]  # both units wait, side by side
    job = write_job(tmp_path, emulator, [DETAILS])
    result = run_cli("run", str(job), "--date", "2026-11-25")
    assert result.returncode == 0
    units = records(tmp_path / "lake")[-1]["units"]
    first = min(dt.datetime.fromisoformat(u["started"]) for u in units)
    last = max(dt.datetime.fromisoformat(u["finished"]) for u in units)
    wall, total = (last - first).total_seconds(), sum(u["seconds"] for u in units)
    row = result.stdout.splitlines()[1].split()
    assert row[0] == "dataai/details" and row[-2:] == [f"{wall:.1f}s", f"{total:.1f}s"]
    assert 0.8 <= wall < total  # the units overlapped: the sum would overstate the wait
