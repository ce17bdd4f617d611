"""End to end: incremental cursors through the `apilake` command against the emulator's changing
records (Acme's GitHub, Stripe and Zendesk dialects): every record version lands, late updates
within the look-back too; a crash between landing and advancing re-reads the same window into the
same keys; runs on two hosts share one cursor per parent; bad cursors fail their unit and leave
the stored cursor as it was."""

from __future__ import annotations

import json
import re
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
from conftest import TOKEN, all_text, hold, lake_objects, run_cli, start_cli, wait_for

RETRY = {"attempts": 2, "backoff_initial": 0.05, "backoff_max": 0.1, "budget_seconds": 10}

RECIPES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
#: The manual's incremental recipes (GitHub, Stripe, Zendesk), by source name: the tests run them.
RECIPES = {
    job["sources"][0]["name"]: job["sources"][0]
    for job in map(yaml.safe_load, re.findall(r"```yaml\n(.*?)```", RECIPES_PAGE.read_text(), re.S))
    if "incremental:" in json.dumps(job).replace('"incremental": ', "incremental:")
}
REPOS, ISSUES = RECIPES["github"]["endpoints"]
[CHARGES] = RECIPES["stripe"]["endpoints"]
[TICKETS] = RECIPES["zendesk"]["endpoints"]
LOOK_BACK = 3600  # the recipes' lag


def with_params(endpoint: dict[str, Any], **params: Any) -> dict[str, Any]:
    """The recipe's endpoint with smaller pages, so a test's few records take several."""
    return {**endpoint, "params": {**endpoint["params"], **params}}


def job_file(tmp_path: Path, emu: Emulator, vendor: str, endpoints: list[dict[str, Any]], name: str = "job.yaml", lake: Path | None = None) -> Path:
    """A recipe's source against the emulator: its base URL and credential swapped, no rate limits."""
    emu.acme.config.auth = "bearer"
    recipe = {k: v for k, v in RECIPES[vendor].items() if not k.startswith("requests_per_")}
    prefix = {"github": "gh"}.get(vendor, vendor)
    source = {
        **recipe,
        "base_url": f"{emu.api_url}/acme/{prefix}",
        "auth": {"type": "bearer", "token": "${DATAAI_TOKEN}"},
        "retry": RETRY,
        "endpoints": endpoints,
    }
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
    job = job_file(tmp_path, emulator, "github", [REPOS, with_params(ISSUES, per_page=5)])
    run(job, "2026-11-25")
    first = states(lake)
    assert set(first) == {"github/issues/repo=r1", "github/issues/repo=r2"}  # one cursor per parent
    assert first["github/issues/repo=r1"]["cursor"] != first["github/issues/repo=r2"]["cursor"]

    changes.touch(3, 4)
    run(job, "2026-11-26")
    second = states(lake)
    changes.touch(5, at=int(time.time()) - 1800)  # a late update: visible now, stamped before the cursor
    emulator.stats.reset()
    third = run(job, "2026-11-27")

    landed = landed_records(lake, "github/issues/")
    assert {json.dumps(r, sort_keys=True) for r in landed} == {json.dumps(v.issue(), sort_keys=True) for v in changes.versions}
    for repo in ("r1", "r2"):  # run 3 read from each repo's own cursor less the look-back
        cursor = second[f"github/issues/repo={repo}"]["cursor"]
        since = {q["since"] for q in sent(emulator, f"/repos/acme/{repo}/issues")}
        assert len(since) == 1 and since.pop() < cursor
    keys = sorted(k for k in lake_objects(lake) if k.startswith("github/issues/") and "page-" not in k)
    assert len(keys) == 6 and all("/cursor=" in k for k in keys)  # a window per repo and run, each under its own key
    assert second["github/issues/repo=r1"]["cursor"] > first["github/issues/repo=r1"]["cursor"]  # record 4 (r1) moved it
    assert states(lake)["github/issues/repo=r2"]["cursor"] == second["github/issues/repo=r2"]["cursor"]  # a late update never moves it back
    status = run_cli("status", str(job), "--from", "2026-11-25", "--to", "2026-11-27")
    assert "incremental cursors" in status.stdout and "github/issues/repo=r2: 20" in status.stdout, status.stdout
    assert "gaps for run dates" in status.stdout and "issues: missing" not in status.stdout, status.stdout
    assert TOKEN not in all_text(lake, third)


def test_stripe_created_gte_with_has_more_paging_lands_new_and_late_charges(tmp_path: Path, emulator: Emulator) -> None:
    changes, lake = emulator.acme.changes, tmp_path / "lake"
    job = job_file(tmp_path, emulator, "stripe", [with_params(CHARGES, limit=5)])
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
    run(job, "2026-11-27")  # a day with no run between: the window reads on from the cursor, nothing is missing
    window = states(lake)["zendesk/tickets"]["windows"]["2026-11-27"]
    assert changes.bodies[-1:] == [{"start_time": int(window["start"]), "end_time": int(window["end"])}]
    landed = {json.dumps(r, sort_keys=True) for r in landed_records(lake, "zendesk/tickets/", "tickets")}
    assert landed == {json.dumps(v.ticket(), sort_keys=True) for v in changes.versions}
    status = run_cli("status", str(job), "--from", "2026-11-25", "--to", "2026-11-28")
    assert status.returncode == 1 and "zendesk/tickets: missing 2026-11-28\n" in status.stdout, status.stdout  # not run yet: a gap


def state_path(lake: Path) -> Path:
    [path] = (lake / "_apilake" / "state").rglob("*.json")
    return path


def test_a_run_killed_after_landing_before_advancing_resumes_into_the_same_keys_without_a_gap(tmp_path: Path, emulator: Emulator) -> None:
    lake = tmp_path / "lake"
    job = job_file(tmp_path, emulator, "stripe", [with_params(CHARGES, limit=5)])
    emulator.config.faults = [Fault(match="/acme/stripe/charges", kind="drip", origin="api", chunk=64, interval=1.0)]
    process = start_cli("run", str(job), "--date", "2026-11-25")
    try:
        wait_for(lambda: (lake / "_apilake" / "state").exists() and any((lake / "_apilake" / "state").rglob("*.json")))
        path = state_path(lake)
        opened = json.loads(path.read_text())["windows"]["2026-11-25"]
        with FileLock(path.parent / f".{path.name}.apilake-lock"):  # the cursor cannot advance: the run stops there
            hold(emulator.config.faults, 0)
            key = f"stripe/charges/dt=2026-11-25/cursor={opened['start']}/data.json"  # page 1, which lands last
            wait_for(lambda: key in lake_objects(lake))
            process.kill()
            process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    landed = lake_objects(lake)
    assert json.loads(path.read_text())["cursor"] is None  # landed, not advanced

    emulator.config.faults = []
    emulator.stats.reset()
    run(job, "2026-11-25")  # the same run date: the same window, its keys are there
    assert emulator.stats.count(path_contains="/charges") == 0
    assert lake_objects(lake) == landed
    state = json.loads(path.read_text())
    assert state["windows"]["2026-11-25"]["start"] == opened["start"] and state["windows"]["2026-11-25"]["done"]
    assert int(state["cursor"]) == max(v.created for v in emulator.acme.changes.versions)

    new = emulator.acme.changes.add()
    run(job, "2026-11-26")  # no gap: the next window starts at the advanced cursor (less the look-back)
    assert int(json.loads(path.read_text())["windows"]["2026-11-26"]["start"]) == int(state["cursor"]) - LOOK_BACK
    assert new.charge() in landed_records(lake, "stripe/charges/dt=2026-11-26/", "data")
    emulator.stats.reset()
    landed = lake_objects(lake)
    run(job, "2026-11-25")  # a done window read again is the same window: nothing asked, nothing landed twice
    assert emulator.stats.count(path_contains="/charges") == 0 and lake_objects(lake) == landed


def two_hosts_share_one_cursor_per_parent(tmp_path: Path, emulator: Emulator, lake: dict[str, Any], objects: Any, *, at_once: bool) -> None:
    """Host a runs, then hosts a and b run the next date (`at_once`, or a then b), then host b
    alone: one window per parent and date whichever host opens it, and b goes on from the cursors
    a advanced. `lake`: the job's destination settings; `objects()`: every object of the lake by key."""

    def found() -> dict[str, dict[str, Any]]:
        docs = (json.loads(body) for key, body in objects().items() if key.startswith("_apilake/state/"))
        return {doc["identity"]: doc for doc in docs}

    hosts = []
    for host in "ab":
        path = job_file(tmp_path, emulator, "github", [REPOS, ISSUES], name=f"host-{host}.yaml")
        job = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**job, **lake}, sort_keys=False))
        hosts.append(path)
    run(hosts[0], "2026-11-25")
    emulator.acme.changes.touch(1, 2)
    emulator.stats.reset()
    if at_once:
        both = [start_cli("run", str(job), "--date", "2026-11-26") for job in hosts]
        for process in both:
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, out + err
    else:
        for job in hosts:
            run(job, "2026-11-26")
    states_now = found()
    assert set(states_now) == {"github/issues/repo=r1", "github/issues/repo=r2"}
    for repo in ("r1", "r2"):
        since = [q["since"] for q in sent(emulator, f"/repos/acme/{repo}/issues")]
        window = states_now[f"github/issues/repo={repo}"]["windows"]["2026-11-26"]
        assert len(since) in (1, 2) and set(since) == {window["start"]}  # one window, whichever host opened it (the other may skip)
    emulator.stats.reset()
    run(hosts[1], "2026-11-27")  # host b goes on from the cursors both advanced
    for repo in ("r1", "r2"):
        window = found()[f"github/issues/repo={repo}"]["windows"]["2026-11-27"]
        assert {q["since"] for q in sent(emulator, f"/repos/acme/{repo}/issues")} == {window["start"]}
        assert window["base"] == states_now[f"github/issues/repo={repo}"]["cursor"]
    pages = [json.loads(body) for key, body in objects().items() if key.startswith("github/issues/")]
    assert {json.dumps(r, sort_keys=True) for page in pages for r in page} == {json.dumps(v.issue(), sort_keys=True) for v in emulator.acme.changes.versions}


def test_two_hosts_share_one_cursor_per_parent(tmp_path: Path, emulator: Emulator) -> None:
    """One after the other on a local lake (two jobs writing the same keys of a local folder at
    once are not a setup apilake supports: hosts share S3, below)."""
    lake = tmp_path / "lake"

    def objects() -> dict[str, bytes]:
        return {p.relative_to(lake).as_posix(): p.read_bytes() for p in lake.rglob("*") if p.is_file() and not p.name.startswith(".")}

    two_hosts_share_one_cursor_per_parent(tmp_path, emulator, {"destination": str(lake)}, objects, at_once=False)


def test_two_hosts_share_one_cursor_per_parent_on_s3(tmp_path: Path, emulator: Emulator, s3_bucket: str) -> None:
    from test_e2e_s3 import bucket_objects

    lake = {"destination": "s3://lake/raw", "s3": {"endpoint_url": s3_bucket}}
    two_hosts_share_one_cursor_per_parent(tmp_path, emulator, lake, lambda: bucket_objects(s3_bucket), at_once=True)


class Hostile(BaseHTTPRequestHandler):
    """A vendor whose records the test sets (`server.records`), whatever the cursor asked."""

    def do_GET(self) -> None:
        records = self.server.records  # type: ignore[attr-defined]
        body = b"".join(json.dumps(r).encode() + b"\n" for r in records) if self.server.ndjson else json.dumps(records).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.records = []  # type: ignore[attr-defined]
    server.ndjson = False  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def hostile_job(tmp_path: Path, server: ThreadingHTTPServer, **incremental: Any) -> Path:
    spec = {"cursor_path": "updated_at", "initial_value": "2026-01-01T00:00:00Z", "param": "since", **incremental}
    source = {
        "name": "vendor",
        "base_url": f"http://127.0.0.1:{server.server_address[1]}",
        "token": "${DATAAI_TOKEN}",
        "retry": RETRY,
        "endpoints": [{"name": "items", "kind": "json", "path": "/items", "incremental": spec}],
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"timezone": "UTC", "destination": str(tmp_path / "lake"), "sources": [source]}, sort_keys=False))
    return path


def failure(job: Path, date: str) -> str:
    result = run_cli("run", str(job), "--date", date)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert TOKEN not in result.stdout + result.stderr
    return result.stdout


def test_a_cursor_that_does_not_parse_or_goes_backwards_fails_its_unit_and_the_cursor_stays(tmp_path: Path, hostile: ThreadingHTTPServer) -> None:
    lake = tmp_path / "lake"
    job = hostile_job(tmp_path, hostile)
    hostile.records = [{"id": 1, "updated_at": "2026-06-01T00:00:00Z"}, {"id": 2, "updated_at": "last tuesday"}]  # type: ignore[attr-defined]
    out = failure(job, "2026-11-25")
    assert "vendor/items/2026-11-25" in out and "'last tuesday' is not an ISO 8601 date-time" in out, out
    assert states(lake)["vendor/items"]["cursor"] is None

    hostile.records = [{"id": 1, "updated_at": "2026-06-01T00:00:00Z"}]  # type: ignore[attr-defined]
    run(job, "2026-11-26")
    assert states(lake)["vendor/items"]["cursor"] == "2026-06-01T00:00:00Z"
    hostile.records = [{"id": 1, "updated_at": "2026-02-01T00:00:00Z"}]  # type: ignore[attr-defined]  # before the window
    out = failure(job, "2026-11-27")
    assert "vendor/items/2026-11-27" in out and "records, 2026-02-01T00:00:00Z, is before the window's start 2026-06-01T00:00:00Z" in out, out
    assert states(lake)["vendor/items"]["cursor"] == "2026-06-01T00:00:00Z"


def test_a_window_an_on_response_rule_ignores_is_done_and_the_cursor_stays(tmp_path: Path, hostile: ThreadingHTTPServer) -> None:
    lake = tmp_path / "lake"
    job = hostile_job(tmp_path, hostile)
    doc = yaml.safe_load(job.read_text())
    doc["sources"][0]["endpoints"][0]["on_response"] = [{"status": 200, "body_contains": "nothing changed", "action": "ignore"}]
    job.write_text(yaml.safe_dump(doc, sort_keys=False))
    hostile.records = ["nothing changed"]  # type: ignore[attr-defined]
    run(job, "2026-11-25")
    state = states(lake)["vendor/items"]
    assert state["cursor"] is None and state["windows"]["2026-11-25"]["done"] is True, state
    shown = run_cli("status", str(job), "--dest", str(lake)).stdout
    assert "vendor/items: none yet" in shown and "not finished" not in shown, shown

    hostile.records = [{"id": 1, "updated_at": "2026-06-01T00:00:00Z"}]  # type: ignore[attr-defined]
    run(job, "2026-11-26")  # reads on from where the cursor stayed: nothing skipped
    state = states(lake)["vendor/items"]
    assert state["windows"]["2026-11-26"]["start"] == "2026-01-01T00:00:00Z" and state["cursor"] == "2026-06-01T00:00:00Z", state


def test_an_ndjson_window_advances_the_cursor_from_its_lines(tmp_path: Path, hostile: ThreadingHTTPServer) -> None:
    lake = tmp_path / "lake"
    job = hostile_job(tmp_path, hostile)
    doc = yaml.safe_load(job.read_text())
    doc["sources"][0]["endpoints"][0]["format"] = "ndjson"
    job.write_text(yaml.safe_dump(doc, sort_keys=False))
    hostile.ndjson = True  # type: ignore[attr-defined]
    hostile.records = [{"id": 1, "updated_at": "2026-06-01T00:00:00Z"}, {"id": 2, "updated_at": "2026-07-01T00:00:00Z"}]  # type: ignore[attr-defined]
    run(job, "2026-11-25")
    assert states(lake)["vendor/items"]["cursor"] == "2026-07-01T00:00:00Z"
    assert [p.name for p in lake.rglob("*.ndjson")] == ["data.ndjson"]


@pytest.mark.parametrize("mode", ["fail", "skip", "include"])
def test_a_record_without_the_cursor_field(tmp_path: Path, hostile: ThreadingHTTPServer, mode: str) -> None:
    lake = tmp_path / "lake"
    job = hostile_job(tmp_path, hostile, on_missing_cursor=mode)
    hostile.records = [{"id": 1, "updated_at": "2026-06-01T00:00:00Z"}, {"id": 2}]  # type: ignore[attr-defined]
    if mode == "fail":
        out = failure(job, "2026-11-25")
        assert "vendor/items/2026-11-25: record 2 of a page has no cursor at 'updated_at'" in out and "on_missing_cursor" in out, out
        assert states(lake)["vendor/items"]["cursor"] is None
    else:
        result = run(job, "2026-11-25")
        assert states(lake)["vendor/items"]["cursor"] == "2026-06-01T00:00:00Z"
        assert ("1 record(s) without a cursor" in result.stderr) == (mode == "skip"), result.stderr
    assert list(lake_objects(lake).values()) == [json.dumps(hostile.records).encode()]  # type: ignore[attr-defined]  # landed as sent


def test_several_new_windows_at_once_or_a_date_before_an_open_window_are_refused(tmp_path: Path, hostile: ThreadingHTTPServer) -> None:
    lake = tmp_path / "lake"
    job = hostile_job(tmp_path, hostile)
    dry = run_cli("run", str(job), "--date", "2026-11-25", "--dry-run")  # shows the window a run would open, opens none
    assert dry.returncode == 0 and "/items?since=2026-01-01T00:00:00Z" in dry.stdout and "/cursor=2026-01-01T00:00:00Z/" in dry.stdout, dry.stdout
    assert not lake.exists()
    both = run_cli("run", str(job), "--from", "2026-11-25", "--to", "2026-11-26")
    assert both.returncode == 2 and "vendor/items: incremental: run dates 2026-11-25, 2026-11-26" in both.stderr, both.stderr
    assert "one date at a time" in both.stderr and "Traceback" not in both.stderr
    assert not (lake / "_apilake" / "state").exists()
    run(job, "2026-11-26")
    before = run_cli("run", str(job), "--date", "2026-11-25")
    assert before.returncode == 2 and "run date 2026-11-25 is before 2026-11-26" in before.stderr, before.stderr
    assert run_cli("run", str(job), "--from", "2026-11-26", "--to", "2026-11-27").returncode == 0  # a rerun date and one new one


class Echo(BaseHTTPRequestHandler):
    """A vendor that reads its window from a header, as some do (`X-Changed-Since`)."""

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        body = json.dumps([{"id": 1, "changed": 1764770000}]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_cursor_in_an_endpoint_header(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = {
            "name": "items",
            "kind": "json",
            "path": "/items",
            "headers": {"X-Changed-Since": "{cursor}"},
            "incremental": {"cursor_path": "changed", "initial_value": 1764700000, "lag": 60},
        }
        source = {
            "name": "vendor",
            "base_url": f"http://127.0.0.1:{server.server_address[1]}",
            "token": "${DATAAI_TOKEN}",
            "retry": RETRY,
            "endpoints": [endpoint],
        }
        job = tmp_path / "job.yaml"
        job.write_text(yaml.safe_dump({"timezone": "UTC", "destination": str(tmp_path / "lake"), "sources": [source]}))
        run(job, "2026-11-25")
        run(job, "2026-11-26")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert [h["X-Changed-Since"] for h in server.seen] == ["1764700000", "1764769940"]  # type: ignore[attr-defined]
    assert all(h["Authorization"] == f"Bearer {TOKEN}" for h in server.seen)  # type: ignore[attr-defined]
