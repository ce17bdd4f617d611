"""Notifications through Apprise to a real JSON webhook on 127.0.0.1: a failure, then the recovery."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from apilake.emulator import Fault
from apilake.jobfile import Job
from apilake.notify import compose, event
from apilake.record import RunRecord, parse_record
from conftest import TOKEN, records, run_cli, write_job
from history import COUNTRIES, DETAILS

DATE = "2026-11-25"


class Webhook(ThreadingHTTPServer):
    """Keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Receiver)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server_address[1]}/hooks/apilake"


class _Receiver(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append({"path": self.path, **json.loads(body)})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_failure_then_recovery_on_a_json_webhook(tmp_path: Path, emulator, webhook: Webhook) -> None:
    job = write_job(tmp_path, emulator, [DETAILS, COUNTRIES], notify={"urls": [webhook.url], "on": ["failure", "recovery"]})
    emulator.config.faults = [Fault(match="apps/ios/app/1/details", kind="echo_secret", status=400)]
    failed = run_cli("run", str(job), "--date", DATE)
    assert failed.returncode == 1
    run_id = records(tmp_path / "lake")[-1]["run_id"]
    assert len(webhook.received) == 1
    message = webhook.received[0]
    assert message["path"] == "/hooks/apilake" and message["type"] == "failure"
    text = message["title"] + "\n" + message["message"]
    assert f"job: {job}" in text and f"run: {run_id} (failed)" in text
    assert f"FAILED dataai/details/{DATE}/market=ios,product_id=1: HTTP 400 Bad Request" in text
    assert "authorization=Bearer ***" in text and TOKEN not in text  # the vendor echoed it; the message masks it
    assert f"apilake run {job} --date {DATE} --only details" in text
    assert "google-play" not in message["message"]  # it landed

    emulator.config.faults = []
    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    assert len(webhook.received) == 2
    recovery = webhook.received[1]
    assert recovery["type"] == "success" and "recovered" in recovery["title"]
    assert f"the previous run {run_id} had failed" in recovery["message"]

    assert run_cli("run", str(job), "--date", DATE).returncode == 0
    assert len(webhook.received) == 2  # success after success is no news


def test_an_undeliverable_notification_is_a_warning(tmp_path: Path, emulator, webhook: Webhook) -> None:
    closed = webhook.url.replace(str(webhook.server_address[1]), "9")  # the discard port: nothing listens
    job = write_job(tmp_path, emulator, [COUNTRIES], notify={"urls": [closed], "on": ["failure"]})
    emulator.config.faults = [Fault(match="countries", kind="status", status=404)]
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1  # the run's own outcome, unchanged
    assert "notify: the failure notification was not delivered" in result.stderr
    assert "127.0.0.1:9" not in result.stderr  # the URL is a secret (webhooks carry tokens)
    emulator.config.faults = []
    assert run_cli("run", str(job), "--date", DATE).returncode == 0  # recovery is not asked for: nothing sent, no warning


def record(run_id: str, status: str, endpoints: tuple[str, ...], finished: bool = True) -> RunRecord:
    units = [
        {
            "unit": f"s/{e}/{DATE}",
            "source": "s",
            "endpoint": e,
            "date": DATE,
            "kind": "json",
            "status": "landed" if status == "succeeded" else "failed",
            "error": None if status == "succeeded" else "HTTP 500",
        }
        for e in endpoints
    ]
    return parse_record({"run_id": run_id, "status": status, "finished": "2026-11-26T09:00:00+00:00" if finished else None, "dates": [DATE], "units": units})


@pytest.mark.parametrize(
    "history, current, expected",
    [
        ([], record("2", "failed", ("a",)), "failure"),
        ([record("1", "failed", ("a",))], record("2", "succeeded", ("a",)), "recovery"),
        ([record("1", "failed", ("b",))], record("2", "succeeded", ("a",)), None),  # another endpoint's failure
        ([record("0", "failed", ("a",)), record("1", "succeeded", ("a",))], record("2", "succeeded", ("a",)), None),
        ([record("1", "failed", ("a",))], record("2", "interrupted", ("a",)), None),
        ([record("1", "failed", ("a",)), record("1b", "running", ("a",), finished=False)], record("2", "succeeded", ("a",)), "recovery"),
    ],
)
def test_which_runs_are_news(history: list[RunRecord], current: RunRecord, expected: str | None) -> None:
    found = event([*history, current], current.run_id)
    assert (found[0] if found else None) == expected


def test_failure_message_counts_what_it_does_not_list() -> None:
    job = Job.model_validate(
        {"sources": [{"name": "s", "base_url": "https://x", "endpoints": [{"name": f"e{i}", "kind": "json", "path": "/", "lag": 1} for i in range(25)]}]}
    )
    current = record("2", "failed", tuple(f"e{i}" for i in range(25)))
    message = compose(job, "job.yaml", [current], "2")
    assert message is not None and message.event == "failure"
    assert message.body.count("FAILED ") == 20 and "... and 5 more" in message.body
    assert "apilake run job.yaml --date 2026-11-26 --only e0" in message.body  # run date = data date + lag
