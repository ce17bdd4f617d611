"""End to end: incremental cursors through the `apilake` command against the emulator's changing
records (Acme's GitHub, Stripe and Zendesk dialects): every record version lands, late updates
within the look-back too; a crash between landing and advancing re-reads the same window into the
same keys; runs on two hosts share one cursor per parent; bad cursors fail their unit and leave
the stored cursor as it was."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from filelock import FileLock

from apilake.emulator import Emulator, Fault
from conftest import TOKEN, all_text, hold, lake_objects, records, run_cli, start_cli, wait_for

RETRY = {"attempts": 2, "backoff_initial": 0.05, "backoff_max": 0.1, "budget_seconds": 10}
LOOK_BACK = 3600

REPOS = {"name": "repos", "kind": "json", "path": "/repos"}
ISSUES = {
    "name": "issues", "kind": "json", "path": "/repos/{repo}/issues",
    "for_each": {"endpoint": "repos", "values": "[].name", "as": "repo"},
    "params": {"per_page": 5, "sort": "updated", "direction": "asc", "state": "all"},
    "paginate": {"type": "header_link"},
    "incremental": {"cursor_path": "updated_at", "initial_value": "2000-01-01T00:00:00Z", "lag": "PT1H", "param": "since"},
}
CHARGES = {
    "name": "charges", "kind": "json", "path": "/charges", "params": {"limit": 5},
    "paginate": {"type": "cursor", "records_path": "data", "cursor_path": "data[-1].id", "cursor_param": "starting_after",
                 "has_more_path": "has_more"},
    "incremental": {"cursor_path": "created", "initial_value": 0, "lag": LOOK_BACK, "param": "created[gte]"},
}
TICKETS = {
    "name": "tickets", "kind": "json", "method": "POST", "path": "/incremental/tickets",
    "body": {"start_time": "{cursor}", "end_time": "{cursor_end}"},
    "paginate": {"type": "json_link", "next_url_path": "next_page", "records_path": "tickets"},
    "incremental": {"cursor_path": "updated_at", "initial_value": 0, "lag": "PT1H"},
}


def job_file(tmp_path: Path, emu: Emulator, vendor: str, endpoints: list[dict[str, Any]], name: str = "job.yaml",
             lake: Path | None = None) -> Path:
    emu.acme.config.auth = "bearer"
    source = {"name": vendor, "base_url": f"{emu.api_url}/acme/{vendor}", "token": "${DATAAI_TOKEN}", "retry": RETRY,
              "endpoints": endpoints}
    job = {"timezone": "UTC", "destination": str(lake or tmp_path / "lake"), "sources": [source]}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def run(job: Path, date: str) -> Any:
    result = run_cli("run", str(job), "--date", date)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def landed_records(lake: Path, prefix: str, path: str | None = None) -> list[dict[str, Any]]:
    """Every record in every landed page under `prefix`, duplicates kept."""
    found = []
    for key, body in lake_objects(lake).items():
        if key.startswith(prefix):
            page = json.loads(body)
            found += page[path] if path else page
    return found


def states(lake: Path) -> dict[str, dict[str, Any]]:
    return {doc["identity"]: doc for doc in (json.loads(p.read_text()) for p in (lake / "_apilake" / "state").rglob("*.json"))}


def sent(emu: Emulator, contains: str) -> list[dict[str, str]]:
    return [dict(parse_qsl(urlsplit(r.target).query)) for r in emu.stats.requests if contains in r.target]


def test_github_three_runs_land_every_version_once_per_window_late_updates_within_the_look_back_too(tmp_path: Path, emulator: Emulator) -> None:
    changes, lake = emulator.acme.changes, tmp_path / "lake"
    job = job_file(tmp_path, emulator, "gh", [REPOS, ISSUES])
    run(job, "2026-11-25")
    first = states(lake)
    assert set(first) == {"gh/issues/repo=r1", "gh/issues/repo=r2"}  # one cursor per parent
    assert first["gh/issues/repo=r1"]["cursor"] != first["gh/issues/repo=r2"]["cursor"]

    changes.touch(3, 4)
    run(job, "2026-11-26")
    second = states(lake)
    changes.touch(5, at=int(time.time()) - 1800)  # a late update: visible now, stamped before the cursor
    emulator.stats.reset()
    third = run(job, "2026-11-27")

    landed = landed_records(lake, "gh/issues/")
    assert {json.dumps(r, sort_keys=True) for r in landed} == {json.dumps(v.issue(), sort_keys=True) for v in changes.versions}
    for repo in ("r1", "r2"):  # run 3 read from each repo's own cursor less the look-back
        cursor = second[f"gh/issues/repo={repo}"]["cursor"]
        since = {q["since"] for q in sent(emulator, f"/repos/{repo}/issues")}
        assert len(since) == 1 and since.pop() < cursor
    keys = sorted(k for k in lake_objects(lake) if k.startswith("gh/issues/") and "page-" not in k)
    assert len(keys) == 6 and all("/cursor=" in k for k in keys)  # a window per repo and run, each under its own key
    assert second["gh/issues/repo=r1"]["cursor"] > first["gh/issues/repo=r1"]["cursor"]  # record 4 (r1) moved it
    assert states(lake)["gh/issues/repo=r2"]["cursor"] == second["gh/issues/repo=r2"]["cursor"]  # a late update never moves it back
    status = run_cli("status", str(job), "--from", "2026-11-25", "--to", "2026-11-27")
    assert "incremental cursors" in status.stdout and "gh/issues/repo=r2: 20" in status.stdout, status.stdout
    assert "gaps for run dates" in status.stdout and "issues: missing" not in status.stdout, status.stdout
    assert TOKEN not in all_text(lake, third)


def test_stripe_created_gte_with_has_more_paging_lands_new_and_late_charges(tmp_path: Path, emulator: Emulator) -> None:
    changes, lake = emulator.acme.changes, tmp_path / "lake"
    job = job_file(tmp_path, emulator, "stripe", [CHARGES])
    run(job, "2026-11-25")
    changes.add()
    run(job, "2026-11-26")
    changes.add(at=int(time.time()) - 1200)  # created earlier, shown late: inside the look-back
    emulator.stats.reset()
    run(job, "2026-11-27")
    landed = {json.dumps(r, sort_keys=True) for r in landed_records(lake, "stripe/charges/", "data")}
    assert landed == {json.dumps(v.charge(), sort_keys=True) for v in changes.versions}
    floors = {q["created[gte]"] for q in sent(emulator, "/charges")}
    assert len(floors) == 1 and int(floors.pop()) == int(states(lake)["stripe/charges"]["windows"]["2026-11-27"]["start"])


def test_zendesk_export_sends_its_window_in_the_post_body_as_numbers(tmp_path: Path, emulator: Emulator) -> None:
    changes, lake = emulator.acme.changes, tmp_path / "lake"
    job = job_file(tmp_path, emulator, "zendesk", [TICKETS])
    run(job, "2026-11-25")
    changes.touch(1, 2, 7)
    run(job, "2026-11-26")
    window = states(lake)["zendesk/tickets"]["windows"]["2026-11-26"]
    assert changes.bodies[-1:] == [{"start_time": int(window["start"]), "end_time": int(window["end"])}]
    landed = {json.dumps(r, sort_keys=True) for r in landed_records(lake, "zendesk/tickets/", "tickets")}
    assert landed == {json.dumps(v.ticket(), sort_keys=True) for v in changes.versions}
