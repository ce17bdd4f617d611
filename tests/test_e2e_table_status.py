"""End to end: `apilake status`, the dashboard and the metrics file show per table its rows and
the dates whose partition is behind the raw zone; a job without `tables:` never loads pyiceberg."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from selenium.webdriver.common.by import By

from apilake.emulator import Emulator
from browser import chromium, screenshot
from conftest import HISTORY_TABLE as HISTORY
from conftest import TOKEN, run_cli, write_job

DATES = ("2026-11-24", "2026-11-25")
SPAN = ["--from", DATES[0], "--to", DATES[1]]


def rows(job: Path) -> int:
    result = run_cli("query", str(job), "SELECT count(*) AS n FROM dataai.history", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]["n"]


def metric(text: str, name: str) -> float:
    [value] = re.findall(rf'^{name}{{apilake_job="[^"]*",table="dataai.history"}} (\S+)$', text, re.MULTILINE)
    return float(value)


def test_status_dashboard_and_metrics_show_rows_and_dates_behind(tmp_path: Path, emulator: Emulator) -> None:
    job = write_job(tmp_path, emulator, [HISTORY], tables={})
    plain = tmp_path / "plain" / "job.yaml"  # the same job without `tables:`: lands, builds nothing
    plain.parent.mkdir()
    doc = yaml.safe_load(job.read_text())
    del doc["tables"], doc["sources"][0]["endpoints"][0]["table"]
    plain.write_text(yaml.safe_dump(doc))
    metrics = tmp_path / "job.prom"
    assert run_cli("run", str(job), "--date", DATES[0], "--metrics-file", str(metrics)).returncode == 0
    built = rows(job)
    assert metric(metrics.read_text(), "apilake_table_rows") == built and metric(metrics.read_text(), "apilake_table_dates_behind") == 0
    assert run_cli("run", str(plain), "--date", DATES[1]).returncode == 0  # landed; its partition is not built

    status = run_cli("status", str(job), *SPAN, "--html", str(tmp_path / "page.html"))
    assert status.returncode == 1, status.stdout + status.stderr  # landed data no query sees counts as missing
    assert f"dataai.history: {built:,} rows, behind on {DATES[1]}" in status.stdout
    assert f"apilake tables {job}" in status.stdout
    with chromium() as browser:
        browser.get((tmp_path / "page.html").as_uri())
        row = browser.find_element(By.CSS_SELECTOR, 'tr.table-status[data-table="dataai.history"]')
        assert [td.text for td in row.find_elements(By.TAG_NAME, "td")] == ["dataai.history", f"{built:,}", DATES[1]]
        assert "behind" in (row.get_attribute("class") or "")
        screenshot(browser, "dashboard-tables")

    assert run_cli("tables", str(job)).returncode == 0
    status = run_cli("status", str(job), *SPAN)
    assert status.returncode == 0, status.stdout
    now = rows(job)
    assert f"dataai.history: {now:,} rows, up to date" in status.stdout and now > built
    assert run_cli("run", str(job), "--date", DATES[1], "--metrics-file", str(metrics)).returncode == 0
    assert metric(metrics.read_text(), "apilake_table_rows") == rows(job)
    assert TOKEN not in status.stdout + status.stderr + metrics.read_text() + (tmp_path / "page.html").read_text()


def test_status_of_a_job_without_tables_does_not_import_pyiceberg(tmp_path: Path, emulator: Emulator) -> None:
    job = write_job(tmp_path, emulator, [{k: v for k, v in HISTORY.items() if k != "table"}])
    assert run_cli("run", str(job), "--date", DATES[0]).returncode == 0
    status = run_cli("status", str(job), "--from", DATES[0], "--to", DATES[0], env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert status.returncode == 0, status.stdout
    assert "tables" not in status.stdout
    assert "| pyiceberg" not in status.stderr and "| apilake.status" in status.stderr  # the import log works, and has no pyiceberg


def test_status_of_built_tables_reads_their_state_not_the_catalog_unless_the_state_is_gone(tmp_path: Path, emulator: Emulator) -> None:
    job = write_job(tmp_path, emulator, [HISTORY], tables={})
    assert run_cli("run", str(job), "--date", DATES[0]).returncode == 0
    expected = f"dataai.history: {rows(job):,} rows, up to date"
    profiled = {"PYTHONPROFILEIMPORTTIME": "1"}
    status = run_cli("status", str(job), "--from", DATES[0], "--to", DATES[0], env=profiled)
    assert status.returncode == 0 and expected in status.stdout, status.stdout
    assert "| pyiceberg" not in status.stderr and "| apilake.status" in status.stderr  # the lake's table state answered
    for state in (tmp_path / "lake" / "_apilake" / "tables" / "state").glob("*.json"):
        state.unlink()
    status = run_cli("status", str(job), "--from", DATES[0], "--to", DATES[0], env=profiled)
    assert status.returncode == 0 and expected in status.stdout, status.stdout  # the same answer, from the catalog
    assert "| pyiceberg" in status.stderr


def test_status_names_a_catalog_it_cannot_read(tmp_path: Path, emulator: Emulator) -> None:
    broken = {"catalog": {"type": "<b>catalog</b>"}, "warehouse": (tmp_path / "warehouse").as_uri()}
    job = write_job(tmp_path, emulator, [HISTORY], tables=broken)
    run_cli("run", str(job), "--date", DATES[0])  # lands; its refresh fails on the catalog
    status = run_cli("status", str(job), "--from", DATES[0], "--to", DATES[0], "--html", str(tmp_path / "page.html"))
    assert status.returncode == 1 and "Traceback" not in status.stderr, status.stdout + status.stderr
    assert "tables (rows" in status.stdout and "cannot read them:" in status.stdout
    page = (tmp_path / "page.html").read_text()
    assert "cannot read them:" in page and "<b>catalog</b>" not in page and "&lt;b&gt;catalog&lt;/b&gt;" in page  # escaped
