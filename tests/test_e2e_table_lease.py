"""End to end: building tables holds the job's lease as a run does (`lease.mode: always`, so a
local lake shows what an S3 lake does), both `apilake tables` and the refresh after `apilake run`.

A job file copy in another folder with its own lock folder (`APILAKE_LOCK_DIR`) stands for the
same job on another host: only the lease keeps the two apart.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import sqlalchemy

from apilake.emulator import Emulator
from conftest import HISTORY_TABLE as HISTORY
from conftest import TOKEN, run_cli, start_cli, wait_for, write_job

DATE = "2026-11-25"
LEASE = {"mode": "always", "expiry_seconds": 5, "renew_seconds": 1}


def lease_doc(lake: Path) -> dict[str, Any]:
    return json.loads((lake / "_apilake" / "leases" / "job.json").read_text())


def other_host(job: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The same job on another host: a copy of its file, its own OS lock folder."""
    twin = tmp_path / "host-b" / "job.yaml"
    twin.parent.mkdir()
    shutil.copy(job, twin)
    return twin, {"APILAKE_LOCK_DIR": str(twin.parent / "locks")}


def test_tables_is_refused_while_another_host_holds_the_jobs_lease(tmp_path: Path, emulator: Emulator) -> None:
    job = write_job(tmp_path, emulator, [HISTORY], tables={}, lease=LEASE)
    lake = tmp_path / "lake"
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    now = dt.datetime.now(dt.UTC)
    held = {
        "job": "job",
        "run_id": "20261125T000000.000000Z-other",
        "host": "elsewhere",
        "pid": 4242,
        "lock": "/nonexistent",
        "since": now.isoformat(),
        "renewed": now.isoformat(),
        "expires": (now + dt.timedelta(minutes=10)).isoformat(),
        "released": False,
    }
    (lake / "_apilake" / "leases" / "job.json").write_text(json.dumps(held))

    refused = run_cli("tables", str(job), "--force")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "holds its lease (host elsewhere, pid 4242, run 20261125T000000.000000Z-other" in refused.stderr
    assert "Traceback" not in refused.stderr and "dataai.history" not in refused.stdout  # nothing was built
    assert lease_doc(lake) == held  # another holder's lease is left alone

    (lake / "_apilake" / "leases" / "job.json").write_text(json.dumps({**held, "released": True}))
    built = run_cli("tables", str(job), "--force")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "dataai.history" in built.stdout
    done = lease_doc(lake)
    assert done["released"] is True and done["run_id"].startswith("tables-") and done["pid"] != 4242
    assert TOKEN not in refused.stdout + refused.stderr + built.stdout + built.stderr


def test_the_refresh_after_a_run_holds_the_runs_own_lease_until_its_commit(tmp_path: Path, emulator: Emulator, postgres_uri: str) -> None:
    tables = {"catalog": {"type": "sql", "uri": postgres_uri}, "warehouse": (tmp_path / "warehouse").as_uri()}
    job = write_job(tmp_path, emulator, [HISTORY], tables=tables, lease=LEASE)
    lake = tmp_path / "lake"
    assert run_cli("run", str(job), "--date", "2026-11-24").returncode == 0  # the catalog's own tables exist now
    twin, env = other_host(job, tmp_path)

    engine = sqlalchemy.create_engine(postgres_uri)
    try:
        with engine.connect() as blocker:  # the catalog answers nothing until the test lets it
            blocker.execute(sqlalchemy.text("LOCK TABLE iceberg_tables IN ACCESS EXCLUSIVE MODE"))
            run = start_cli("run", str(job), "--date", DATE)
            try:
                wait_for(lambda: _refreshing(lake, run.pid) is not None, timeout=60)  # landed; now refreshing, under the lease
                lease, record = _refreshing(lake, run.pid) or ({}, {})
                # the lease the run took before its units started, never let go: no gap for another run
                assert lease["run_id"] == record["run_id"] and lease["since"] <= min(u["started"] for u in record["units"])
                renewed = lease["renewed"]
                wait_for(lambda: lease_doc(lake)["renewed"] != renewed, timeout=10)  # renewed while the refresh waits
                for command in (["tables", str(twin)], ["run", str(twin), "--date", DATE, "--force"]):
                    refused = run_cli(*command, env=env)
                    assert refused.returncode == 3, refused.stdout + refused.stderr
                    assert f"pid {run.pid}" in refused.stderr
                assert run.poll() is None
                assert lease_doc(lake)["since"] == lease["since"]
            finally:
                blocker.rollback()
            out, err = run.communicate(timeout=120)
    finally:
        engine.dispose()
    assert run.returncode == 0, out + err
    assert "dataai.history" in out
    done = lease_doc(lake)
    assert done["released"] is True and done["pid"] == run.pid and done["since"] == lease["since"]
    final = json.loads((lake / "_apilake" / "runs" / f"{record['run_id']}.json").read_text())
    assert final["status"] == "succeeded" and final["finished"]
    assert [(t["table"], t["built"], t["failed"]) for t in final["tables"]["tables"]] == [("dataai.history", [DATE], {})]
    counts = run_cli("query", str(job), "SELECT _date, count(*) AS n FROM dataai.history GROUP BY 1 ORDER BY 1", "--format", "json")
    assert [r["_date"] for r in json.loads(counts.stdout)] == ["2026-11-24", DATE]


def _refreshing(lake: Path, pid: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The live lease held by process `pid` and its run's record, once that record lists what
    landed but is not finished yet (the run is refreshing its tables)."""
    try:
        doc = lease_doc(lake)
        records = [json.loads(p.read_text()) for p in (lake / "_apilake" / "runs").glob("*.json")]
    except (OSError, ValueError):
        return None
    landed = [r for r in records if r.get("dates") == [DATE] and r.get("units") and not r.get("finished")]
    if landed and doc.get("pid") == pid and not doc.get("released"):
        return doc, landed[0]
    return None
