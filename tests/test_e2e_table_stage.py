"""End to end: the table refresh is a stage of the run (`runner`), so `apilake schedule` refreshes
after each fire like `apilake run`, and a failed refresh fails the run in its exit code, summary
and record, never undoing what landed."""

from __future__ import annotations

import datetime as dt
import json
import signal
from pathlib import Path
from typing import Any

from apilake.emulator import Emulator, Fault
from conftest import HISTORY_TABLE as HISTORY
from conftest import TOKEN, all_text, lake_objects, records, run_cli, start_cli, wait_for, write_job

DATE = "2026-11-25"


def landed_rows(lake: Path) -> int:
    return sum(len(json.loads(body)["list"]) for key, body in lake_objects(lake).items() if "/history/" in key)


def test_a_scheduled_fire_refreshes_the_tables_it_landed(tmp_path: Path, emulator: Emulator) -> None:
    job = write_job(tmp_path, emulator, [HISTORY], schedule="0 9 * * *", tables={})
    lake, state = tmp_path / "lake", tmp_path / "state.json"
    missed = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)  # a missed fire: the scheduler makes it up at once
    state.write_text(json.dumps({"last_fire": {"0 9 * * * | *": missed.isoformat()}}))
    log = tmp_path / "apilake.log"
    scheduler = start_cli("schedule", str(job), "--state-file", str(state), "--log-file", str(log))
    try:
        wait_for(lambda: log.exists() and "finished with exit code" in log.read_text(), timeout=60)
    finally:
        scheduler.send_signal(signal.SIGTERM)
        out, err = scheduler.communicate(timeout=30)
    assert scheduler.returncode == 0, out + err
    (record,) = records(lake)
    (date,) = record["dates"]
    assert record["status"] == "succeeded" and record["tables"]["status"] == "succeeded"
    [table] = record["tables"]["tables"]
    assert (table["table"], table["built"], table["failed"]) == ("dataai.history", [date], {})
    assert table["rows"] == landed_rows(lake) > 0
    counted = run_cli("query", str(job), "SELECT _date, count(*) AS n FROM dataai.history GROUP BY 1", "--format", "json")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == [{"_date": date, "n": landed_rows(lake)}]
    assert "dataai.history" in err  # the scheduler's log has the table summary
    assert TOKEN not in out + err + all_text(lake, counted)


def test_a_failed_refresh_fails_the_run_and_keeps_what_landed(tmp_path: Path, emulator: Emulator) -> None:
    job = write_job(tmp_path, emulator, [{**HISTORY, "table": {"records": "code"}}], tables={})  # a records path to a scalar
    lake = tmp_path / "lake"
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "the records path 'code' finds a int" in result.stdout and f"dataai.history {DATE}" in result.stdout  # the summary
    (record,) = records(lake)
    assert record["status"] == "failed" and record["finished"]
    assert {u["status"] for u in record["units"]} == {"landed"}  # what landed stays landed and recorded
    section: dict[str, Any] = record["tables"]
    assert section["status"] == "failed"
    [table] = section["tables"]
    assert table["built"] == [] and list(table["failed"]) == [DATE] and "finds a int" in table["failed"][DATE]
    landed = lake_objects(lake)
    assert any("/history/" in key for key in landed)
    again = run_cli("run", str(job), "--date", DATE)  # it lands nothing, so it refreshes nothing: `apilake tables` does
    assert again.returncode == 0 and lake_objects(lake) == landed and "tables:" not in again.stdout
    behind = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert behind.returncode == 1 and "dataai.history" in behind.stdout
    assert TOKEN not in all_text(lake, result) + again.stdout + again.stderr + behind.stdout + behind.stderr


def test_an_interrupted_run_does_not_refresh(tmp_path: Path, emulator: Emulator) -> None:
    two = {**HISTORY, "matrix": {"market": ["ios"], "product_id": [7, 8]}}
    job = write_job(tmp_path, emulator, [two], tables={})
    emulator.config.faults = [Fault(match="/app/8/history", kind="stall", seconds=30, times=1)]
    lake = tmp_path / "lake"
    run = start_cli("run", str(job), "--date", DATE)
    pages_of_7 = {f"dataai/history/dt={DATE}/market=ios,product_id=7{page}.json" for page in ("", ".page-0002")}
    wait_for(lambda: lake.exists() and pages_of_7 <= set(lake_objects(lake)))  # product 7 landed whole (its first page lands last); 8 stalls
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130, out + err
    (record,) = records(lake)
    assert record["status"] == "interrupted" and "tables" not in record
    assert "landed" in {u["status"] for u in record["units"]}  # product 7 landed; its table is left to the next run
    assert not (lake / "_apilake" / "tables").exists() and "tables:" not in out
