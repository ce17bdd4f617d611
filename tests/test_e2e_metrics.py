"""Prometheus metrics: `run --metrics-file` and `schedule --http` (/metrics, /healthz, the dashboard).

Every value is read back with prometheus_client's own parser and compared with the run record.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from prometheus_client.parser import text_string_to_metric_families

from apilake.emulator import Fault
from conftest import records, run_cli, start_cli, wait_for, write_job
from history import COUNTRIES, DETAILS

DATE = "2026-11-25"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample by (name, labels without apilake_job)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "apilake_job")
            found[sample.name, labels] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return found[name, frozenset(labels.items())]


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def serving_at(scheduler: subprocess.Popen[str]) -> str:
    """The base URL `apilake schedule --http` prints once it serves."""
    assert scheduler.stdout is not None
    line = ""
    while "serving" not in line:
        line = scheduler.stdout.readline()
        assert line, scheduler.stderr.read() if scheduler.stderr else "no output"
    return line.split(" and the dashboard at ")[1].strip()


def ledger_today(lake: Path) -> tuple[str, int]:
    """The quota day and the requests used of the job's one quota ledger (the test's runs share one day)."""
    (path,) = (lake / "_apilake" / "quota").glob("*.json")
    ((day, entry),) = json.loads(path.read_text())["days"].items()
    return day, entry["used"]


def check_quota(found: dict, lake: Path, per_day: int) -> int:  # type: ignore[type-arg]
    """Today's quota families against the ledger; returns the requests it counts."""
    day, used = ledger_today(lake)
    assert value(found, "apilake_quota_requests_used", source="dataai", quota_day=day) == used
    assert value(found, "apilake_quota_requests_left", source="dataai", quota_day=day) == per_day - used
    return used


def check_last_run(found: dict, record: dict) -> None:  # type: ignore[type-arg]
    """The last-run families against the run record they were made from."""
    assert value(found, "apilake_last_run_start_timestamp_seconds") == ts(record["started"])
    assert value(found, "apilake_last_run_end_timestamp_seconds") == ts(record["finished"])
    for status in ("succeeded", "failed", "interrupted"):
        assert value(found, "apilake_last_run_status", status=status) == (1.0 if record["status"] == status else 0.0)
    for endpoint in ("dataai/details", "dataai/countries"):
        units = [u for u in record["units"] if f"{u['source']}/{u['endpoint']}" == endpoint]
        for status in {u["status"] for u in units}:
            assert value(found, "apilake_last_run_units", endpoint=endpoint, status=status) == sum(u["status"] == status for u in units)
        landed = sum(o["bytes"] for u in units if u["status"] == "landed" for o in u["objects"])
        assert value(found, "apilake_last_run_bytes", endpoint=endpoint) == landed
        codes = {code for u in units for code in u["http"]}
        for code in codes:
            assert value(found, "apilake_last_run_responses", endpoint=endpoint, code=code) == sum(u["http"].get(code, 0) for u in units)
    assert value(found, "apilake_last_run_quota_requests_used", source="dataai") == sum(u["requests"] for u in record["units"])


def test_metrics_file_after_each_run(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [DETAILS, COUNTRIES], source={"requests_per_day": 100})
    prom = tmp_path / "textfile" / "apilake.prom"
    prom.parent.mkdir()
    emulator.config.faults = [
        Fault(match="apps/ios/app/1/details", kind="status", status=429, retry_after="0", times=1),
        Fault(match="apps/google-play/app/1/details", kind="status", status=404),
    ]
    assert run_cli("run", str(job), "--date", DATE, "--metrics-file", str(prom)).returncode == 1
    first = records(tmp_path / "lake")[-1]
    found = samples(prom.read_text())
    check_last_run(found, first)
    assert value(found, "apilake_last_run_responses", endpoint="dataai/details", code="429") == 1
    assert value(found, "apilake_last_run_responses", endpoint="dataai/details", code="404") == 1
    assert value(found, "apilake_last_run_retries", endpoint="dataai/details") == 1
    assert value(found, "apilake_last_run_bytes", endpoint="dataai/countries") > 0
    assert value(found, "apilake_last_run_quota_requests_used", source="dataai") == 4  # ios twice, google-play, countries
    assert value(found, "apilake_last_run_quota_requests_left", source="dataai") == 96
    assert value(found, "apilake_last_success_timestamp_seconds", endpoint="dataai/countries") == ts(first["finished"])
    assert ("apilake_last_success_timestamp_seconds", frozenset({("endpoint", "dataai/details")})) not in found
    assert [p.name for p in prom.parent.iterdir()] == ["apilake.prom"]  # written by rename: no temporary file left

    emulator.config.faults = []
    assert run_cli("run", str(job), "--date", DATE, "--metrics-file", str(prom)).returncode == 0
    second = records(tmp_path / "lake")[-1]
    found = samples(prom.read_text())
    check_last_run(found, second)
    assert value(found, "apilake_last_success_timestamp_seconds", endpoint="dataai/details") == ts(second["finished"])
    assert value(found, "apilake_last_run_units", endpoint="dataai/countries", status="skipped") == 1

    unwritable = run_cli("run", str(job), "--date", DATE, "--metrics-file", str(tmp_path / "no" / "such" / "x.prom"))
    assert unwritable.returncode == 0  # a metrics file is a report on the run, never its outcome
    assert "--metrics-file" in unwritable.stderr and "cannot write it" in unwritable.stderr


def test_quota_metrics_count_the_ledger_across_runs(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [DETAILS, COUNTRIES], source={"requests_per_day": 50})
    lake, prom = tmp_path / "lake", tmp_path / "apilake.prom"
    assert run_cli("run", str(job), "--date", DATE, "--metrics-file", str(prom)).returncode == 0
    first = check_quota(samples(prom.read_text()), lake, 50)
    assert first == emulator.stats.count(origin="api") == 3  # ios, google-play, countries

    assert run_cli("run", str(job), "--date", "2026-11-24", "--metrics-file", str(prom)).returncode == 0
    found = samples(prom.read_text())
    assert check_quota(found, lake, 50) == emulator.stats.count(origin="api") == 2 * first  # the day's two runs add up
    assert value(found, "apilake_last_run_quota_requests_used", source="dataai") == first  # the last run alone

    (path,) = (lake / "_apilake" / "quota").glob("*.json")
    path.unlink()
    path.mkdir()  # the ledger cannot be read; this run lands nothing new, so it needs no quota
    unreadable = run_cli("run", str(job), "--date", DATE, "--metrics-file", str(prom))
    assert unreadable.returncode == 0 and "cannot read the quota ledgers" in unreadable.stderr, unreadable.stderr
    found = samples(prom.read_text())
    check_last_run(found, records(lake)[-1])
    assert not [name for name, _ in found if name.startswith("apilake_quota_")]


def test_schedule_serves_metrics_health_and_dashboard(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [DETAILS, COUNTRIES], schedule="0 0 1 1 *", source={"requests_per_day": 50})
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    record = records(tmp_path / "lake")[-1]
    scheduler = start_cli("schedule", str(job), "--http", "127.0.0.1:0", "--state-file", str(tmp_path / "state.json"))
    try:
        base = serving_at(scheduler)
        assert base.startswith("http://127.0.0.1:")
        # Served before its loop first wakes (a moment after start-up): until then it says it is not yet alive.
        wait_for(lambda: httpx.get(base + "healthz").status_code == 200)
        health = httpx.get(base + "healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert dt.datetime.fromisoformat(health.json()["last_tick"]) <= dt.datetime.now(dt.UTC)
        found = samples(httpx.get(base + "metrics").text)
        check_last_run(found, record)
        now = dt.datetime.now(ZoneInfo("Asia/Seoul"))
        next_new_year = dt.datetime(now.year + 1, 1, 1, tzinfo=ZoneInfo("Asia/Seoul"))
        assert value(found, "apilake_schedule_next_fire_timestamp_seconds", schedule="0 0 1 1 * | *") == next_new_year.timestamp()
        assert value(found, "apilake_scheduler_last_tick_timestamp_seconds") == ts(health.json()["last_tick"])
        first = check_quota(found, tmp_path / "lake", 50)
        assert run_cli("run", str(job), "--date", "2026-11-24").returncode == 0  # another process spends the quota too
        assert check_quota(samples(httpx.get(base + "metrics").text), tmp_path / "lake", 50) == 2 * first
        page = httpx.get(base)
        assert page.status_code == 200 and 'data-state="landed"' in page.text and "dataai/details" in page.text
    finally:
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(timeout=20) == 0
    assert json.loads((tmp_path / "state.json").read_text())["last_fire"]


def test_healthz_answers_during_a_run_and_metrics_follow_it(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [DETAILS, COUNTRIES], schedule="0 9 * * *")
    state = tmp_path / "state.json"
    missed = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)  # a fire was missed: the scheduler makes it up at once
    state.write_text(json.dumps({"last_fire": {"0 9 * * * | *": missed.isoformat()}}))
    emulator.config.faults = [Fault(match="/details", kind="stall", seconds=2.0)]
    scheduler = start_cli("schedule", str(job), "--http", "127.0.0.1:0", "--state-file", str(state))
    try:
        base = serving_at(scheduler)
        during: list[httpx.Response] = []

        def in_a_run() -> bool:
            during.append(httpx.get(base + "healthz"))
            return during[-1].json()["running_since"] is not None

        wait_for(in_a_run, timeout=20)
        assert during[-1].status_code == 200 and during[-1].json()["status"] == "ok"
        wait_for(
            lambda: (
                (tmp_path / "lake" / "_apilake" / "runs").exists() and records(tmp_path / "lake") and records(tmp_path / "lake")[-1]["finished"] is not None
            ),
            timeout=30,
        )
        record = records(tmp_path / "lake")[-1]
        wait_for(lambda: httpx.get(base + "healthz").json()["running_since"] is None, timeout=10)
        check_last_run(samples(httpx.get(base + "metrics").text), record)  # refreshed after the run
    finally:
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(timeout=20) == 0
