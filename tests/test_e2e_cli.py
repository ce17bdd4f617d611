"""The commands a new user meets first: demo, validate, emulator, --help."""

from __future__ import annotations

import csv
import io
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from apilake.emulator import gunzip_members
from conftest import APILAKE, run_cli, write_job


def test_demo_lands_the_example_job_into_a_local_lake(tmp_path: Path) -> None:
    result = run_cli("demo", "--dest", str(tmp_path / "lake"), "--date", "2026-11-25")
    assert result.returncode == 0, result.stdout + result.stderr
    lake = tmp_path / "lake"
    landed = sorted(p.relative_to(lake).as_posix() for p in lake.rglob("*") if p.is_file() and "_apilake" not in p.parts)
    assert "dataai/app_history/dt=2026-11-25/market=ios,product_id=284882215.page-0002.json" in landed
    assert any(k.startswith("dataai/bulk_daily/dimensions/product_id/dt=2026-11-25/") for k in landed)
    for key in landed:
        assert key in result.stdout  # "prints what landed"
    assert "succeeded" in result.stdout
    downloads: dict[str, int] = {}
    apps: dict[str, set[str]] = {}
    for key in landed:
        if key.startswith("dataai/bulk_daily/metrics/"):
            for _date, country, product, metric, value in csv.reader(io.StringIO(gunzip_members((lake / key).read_bytes()).decode())):
                if metric == "downloads":
                    downloads[country] = downloads.get(country, 0) + int(value)
                    apps.setdefault(country, set()).add(product)
    top = sorted(downloads, key=lambda c: -downloads[c])[:5]
    printed = result.stdout.split("$ apilake query", 1)[1].splitlines()[2:8]  # after the SQL and the header
    assert [line.split() for line in printed] == [[c, str(downloads[c]), str(len(apps[c]))] for c in top] + [["(5", "rows)"]]
    assert re.search(r"dataai\.bulk_dimensions_product_id +1 +0 +0", result.stdout)  # a table per dimension type


def test_validate_reports_a_valid_file_and_a_broken_one(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [{"name": "c", "kind": "json", "path": "/v1.3/meta/countries"}])
    ok = run_cli("validate", str(job))
    assert ok.returncode == 0 and "valid (1 source(s), 1 endpoint(s)" in ok.stdout
    job.write_text(job.read_text().replace("kind: json", "kind: jsonn"))
    bad = run_cli("validate", str(job))
    assert bad.returncode == 2 and "sources[0].endpoints[0].kind" in bad.stderr
    assert emulator.stats.count() == 0


def test_emulator_command_serves_until_sigterm() -> None:
    process = subprocess.Popen([APILAKE, "emulator", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        api = re.search(r"api: (http://127\.0\.0\.1:\d+)", process.stdout.readline()).group(1)
        answer = httpx.get(f"{api}/v1.3/meta/countries", headers={"Authorization": "Bearer demo-token"})
        assert answer.status_code == 200 and answer.json()["code"] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["demo"], ["emulator"], ["status"], ["schedule"], ["cron"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0 and result.stdout.startswith("Usage: apilake")
