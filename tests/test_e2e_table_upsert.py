"""End to end: `table.primary_key` through the `apilake` command. Three incremental runs whose
windows overlap (the look-back) land several versions of each record; the table keeps exactly one
row per key, its latest version, and reruns (plain or `--force`) leave it as it is. A key on
data that is not JSON records is refused; a key column the records lack fails the refresh and
leaves the table as it was."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.emulator import Emulator
from conftest import TOKEN, all_text, bulk_endpoint, lake_objects, run_cli
from test_e2e_incremental import ISSUES, REPOS, job_file, run, with_params

TABLE = "github.issues"


def keyed_job(tmp_path: Path, emu: Emulator, primary_key: Any = "id") -> Path:
    """The GitHub recipe (issues read `since` a cursor, an hour's look-back) with tables, its issues keyed."""
    issues = {**with_params(ISSUES, per_page=5), "table": {"primary_key": primary_key}}
    path = job_file(tmp_path, emu, "github", [REPOS, issues])
    job = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**job, "tables": {}}, sort_keys=False))
    return path


def query(job: Path, sql: str) -> list[dict[str, Any]]:
    result = run_cli("query", str(job), sql, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def rows(job: Path) -> list[dict[str, Any]]:
    return query(job, f"SELECT * FROM {TABLE} ORDER BY id")


def newest_window(lake: Path) -> dict[int, str]:
    """Per record id, the latest run date whose landed pages hold it: where its latest version landed."""
    found: dict[int, str] = {}
    for key, body in lake_objects(lake).items():
        if key.startswith("github/issues/"):
            date = key.split("/dt=")[1][:10]
            for record in json.loads(body):
                found[record["id"]] = max(found.get(record["id"], date), date)
    return found


def test_three_incremental_runs_keep_one_row_per_key_its_latest_version_and_reruns_change_nothing(tmp_path: Path, emulator: Emulator) -> None:
    changes, lake = emulator.acme.changes, tmp_path / "lake"
    job = keyed_job(tmp_path, emulator)
    run(job, "2026-11-25")
    changes.touch(3, 4)
    run(job, "2026-11-26")
    changes.touch(5, at=int(time.time()) - 1800)  # a late update: stamped before the cursor, inside the look-back
    changes.touch(4)  # a second update of a record already updated once
    third = run(job, "2026-11-27")

    landed = [r for key, body in lake_objects(lake).items() if key.startswith("github/issues/") for r in json.loads(body)]
    latest = {v.id: v.issue() for v in changes.versions}  # the emulator's history, oldest first: the last is the latest
    assert len(landed) > len(latest)  # the windows overlap: appended, the table would hold several versions of a record
    found = rows(job)
    assert [r["id"] for r in found] == sorted(latest)  # exactly one row per key
    for row in found:
        assert {k: row[k] for k in latest[row["id"]]} == latest[row["id"]], row
    windows = newest_window(lake)
    assert {r["id"]: r["_date"][:10] for r in found} == windows  # `_date`: the window its version came from
    assert {windows[3], windows[4], windows[5]} == {"2026-11-27"} and found[0]["value"] == 1

    snapshot = current(lake)
    rerun = run_cli("run", str(job), "--date", "2026-11-27")  # lands nothing
    tables = run_cli("tables", str(job))  # every date's raw objects as built: no catalog, no commit
    forced = run_cli("run", str(job), "--date", "2026-11-27", "--force")  # the same window again, the same bytes
    for result in (rerun, tables, forced):
        assert result.returncode == 0, result.stdout + result.stderr
    assert current(lake) == snapshot
    again = run_cli("tables", str(job), "--force")  # rebuilt whole, in one new snapshot, to the same rows
    assert again.returncode == 0, again.stdout + again.stderr
    assert current(lake) != snapshot and rows(job) == found
    for result in (third, rerun, tables, forced, again):
        assert TOKEN not in all_text(lake, result)


def current(lake: Path) -> int:
    """The table's current snapshot id, read in this process."""
    from pyiceberg.catalog import load_catalog

    root = lake / "_apilake" / "tables"
    catalog = load_catalog("apilake", type="sql", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse")
    return catalog.load_table(TABLE).current_snapshot().snapshot_id


def test_a_json_endpoint_without_a_cursor_keeps_each_records_version_of_the_latest_run_date(tmp_path: Path, emulator: Emulator) -> None:
    changes = emulator.acme.changes
    issues = {k: v for k, v in with_params(ISSUES, per_page=5).items() if k != "incremental"}  # every issue, every run
    path = job_file(tmp_path, emulator, "github", [REPOS, {**issues, "table": {"primary_key": ["repo", "number"]}}])
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "tables": {}}, sort_keys=False))
    run(path, "2026-11-26")
    changes.touch(2, 7)
    run(path, "2026-11-25")  # run later, for an earlier date: the later run date's version still wins
    latest = {v.id: v.issue() for v in changes.versions}
    first = {v.id: v.issue() for v in changes.versions[: len(changes.versions) - 2]}  # as the 2026-11-26 run saw them
    found = rows(path)
    assert sorted((r["repo"], r["number"]) for r in found) == sorted({(v.repo, v.id) for v in changes.versions})  # one row per key
    assert {r["id"]: {k: r[k] for k in first[r["id"]]} for r in found} == first != latest
    assert {r["_date"][:10] for r in found} == {"2026-11-26"}


def test_a_key_column_the_records_lack_or_a_damaged_raw_object_fails_the_refresh_and_leaves_the_table_as_it_was(tmp_path: Path, emulator: Emulator) -> None:
    job = keyed_job(tmp_path, emulator, ["id"])
    run(job, "2026-11-25")
    emulator.acme.changes.touch(2)
    run(job, "2026-11-26")
    before = rows(job)
    keyed_job(tmp_path, emulator, ["id", "ticket_id"])  # a key the issues do not have: the table must be rebuilt, and cannot be
    result = run_cli("tables", str(job))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "primary key column 'ticket_id'" in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert rows(job) == before

    keyed_job(tmp_path, emulator, ["id"])
    page = next(p for p in sorted((tmp_path / "lake" / "github" / "issues").rglob("*.json")) if "2026-11-25" in p.as_posix())
    page.write_bytes(page.read_bytes()[:-1])  # one raw object of one date damaged: the whole table keeps what it had
    damaged = run_cli("tables", str(job), "--force")
    assert damaged.returncode == 1 and "raw zone incomplete" in damaged.stdout + damaged.stderr, damaged.stdout + damaged.stderr
    assert rows(job) == before


@pytest.mark.parametrize(
    ("endpoint", "says"),
    [
        pytest.param({**bulk_endpoint("app_downloads"), "table": {"primary_key": "product_id"}}, "kind: bulk", id="bulk"),
        pytest.param({**ISSUES, "table": {"primary_key": ["id"], "format": "csv"}}, "table.format: csv", id="json-read-as-csv"),
        pytest.param({**ISSUES, "table": {"primary_key": []}}, "at least 1 item", id="empty"),
    ],
)
def test_a_primary_key_on_rows_that_are_not_json_records_is_refused(tmp_path: Path, emulator: Emulator, endpoint: dict[str, Any], says: str) -> None:
    path = job_file(tmp_path, emulator, "github", [REPOS, endpoint])
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "tables": {}}, sort_keys=False))
    for command in ("validate", "run"):
        result = run_cli(command, str(path), "--date", "2026-11-25") if command == "run" else run_cli(command, str(path))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "primary_key" in result.stderr and says in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not lake_objects(tmp_path / "lake")
