"""End to end: what the vendor says back. `on_response` rules (ignore, retry, fail with a message,
retry after a header's wait), pacing by the vendor's rate-limit headers, and `Retry-After` with
its floor and cap, through the `apilake` command against the emulator (Acme's feedback endpoints,
`emulator.acme_feedback`, and faults on the data.ai vendor)."""

from __future__ import annotations

import email.utils
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.emulator import Emulator, Fault
from apilake.emulator.acme_feedback import figures
from conftest import TOKEN, all_text, lake_objects, records, run_cli, write_job

DATE = "2026-11-25"
RETRY = {"attempts": 4, "backoff_initial": 0.05, "backoff_max": 0.2, "budget_seconds": 30, "min_retry_after": 0.1}


def body(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def acme_job(tmp_path: Path, emu: Emulator, endpoints: list[dict[str, Any]], **settings: Any) -> Path:
    emu.acme.config.auth = "bearer"
    source = {"name": "acme", "base_url": emu.api_url + "/acme", "token": "${DATAAI_TOKEN}", "retry": RETRY, "endpoints": endpoints, **settings}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"timezone": "UTC", "destination": str(tmp_path / "lake"), "sources": [source]}, sort_keys=False))
    return path


def feedback(accounts: list[str], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "figures",
        "kind": "json",
        "path": "/feedback/{account}",
        "params": {"date": "{date}"},
        "matrix": {"account": accounts},
        "on_response": rules,
    }


def run(job: Path, *args: str) -> Any:
    result = run_cli("run", str(job), "--date", DATE, *args)
    assert TOKEN not in all_text(job.parent / "lake", result)
    return result


def units(lake: Path) -> dict[str, dict[str, Any]]:
    return {u["unit"].split("account=")[-1]: u for u in records(lake)[-1]["units"]}


def key(account: str) -> str:
    return f"acme/figures/dt={DATE}/account={account}/data.json"


# -- on_response: each action -----------------------------------------------------------------


def test_ignore_lands_nothing_counts_as_done_and_leaves_no_gap(tmp_path: Path, emulator: Emulator) -> None:
    rule = {"status": 404, "body_contains": "no data for this date", "action": "ignore"}
    job = acme_job(tmp_path, emulator, [{**feedback(["empty", "a1"], [rule]), "key": "{source}/{endpoint}/dt={date}/account={account}/data.json"}])
    result = run(job)
    lake = tmp_path / "lake"
    assert result.returncode == 0, result.stdout + result.stderr
    assert lake_objects(lake) == {key("a1"): body(figures("a1", DATE))}
    found = units(lake)
    assert found["empty"]["status"] == "ignored" and found["a1"]["status"] == "landed"
    assert "ignored, as endpoint figures on_response[0] says" in found["empty"]["error"]
    assert records(lake)[-1]["status"] == "succeeded" and records(lake)[-1]["counts"]["ignored"] == 1
    assert emulator.acme.feedback.calls("empty") == 1  # not retried
    header, row = [line.split() for line in result.stdout.splitlines() if line.startswith(("endpoint", "acme/figures"))][:2]
    assert dict(zip(header, row, strict=False))["ignored"] == "1"  # the header's last names are two words
    status = run_cli("status", str(job), "--from", DATE, "--to", DATE)
    assert status.returncode == 0, status.stdout  # no gap: the ignored unit is done


def test_retry_a_200_whose_body_says_it_is_not_ready(tmp_path: Path, emulator: Emulator) -> None:
    rule = {"status": 200, "body_path": "status == 'processing'", "action": "retry"}
    result = run(acme_job(tmp_path, emulator, [feedback(["busy"], [rule])]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(lake_objects(tmp_path / "lake").values()) == [body(figures("busy", DATE))]  # not the "processing" answer
    assert emulator.acme.feedback.calls("busy") == 3  # two "processing", then the figures
    assert units(tmp_path / "lake")["busy"]["attempts"] == 3


def test_fail_a_200_with_an_error_in_its_body_says_the_rules_message(tmp_path: Path, emulator: Emulator) -> None:
    rule = {"body_path": "error.code == 'account_suspended'", "action": "fail", "message": "the Acme account is suspended; call billing"}
    result = run(acme_job(tmp_path, emulator, [feedback(["suspended", "a1"], [])], on_response=[rule]))
    assert result.returncode == 1
    found = units(tmp_path / "lake")
    assert found["suspended"]["status"] == "failed" and found["a1"]["status"] == "landed"
    assert "the Acme account is suspended; call billing (source acme on_response[0])" in found["suspended"]["error"]
    assert "the Acme account is suspended" in result.stdout
    assert emulator.acme.feedback.calls("suspended") == 1  # permanent: not retried
    assert list(lake_objects(tmp_path / "lake").values()) == [body(figures("a1", DATE))]  # not the error body as data


def test_retry_after_the_wait_a_header_names(tmp_path: Path, emulator: Emulator) -> None:
    rule = {"body_path": "error.code == 'rate_limited'", "action": "retry_after", "after": "X-Retry-In"}
    result = run(acme_job(tmp_path, emulator, [feedback(["throttled"], [rule])]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(lake_objects(tmp_path / "lake").values()) == [body(figures("throttled", DATE))]
    first, second = [r.mono for r in emulator.stats.requests if "/feedback/throttled" in r.target]
    assert second - first >= 0.95  # X-Retry-In: 1, not the 0.05 s back-off


def test_without_rules_the_built_in_ones_still_decide(tmp_path: Path, emulator: Emulator) -> None:
    result = run(acme_job(tmp_path, emulator, [feedback(["empty"], [{"status": 503, "action": "retry"}])]))
    assert result.returncode == 1
    assert units(tmp_path / "lake")["empty"]["status"] == "failed"  # a 404 no rule matches: failed as always
    assert emulator.acme.feedback.calls("empty") == 1


# -- rate limits from the vendor's headers ----------------------------------------------------


def limited(copies: int) -> dict[str, Any]:
    return {
        "name": "items",
        "kind": "json",
        "path": "/limited/items",
        "params": {"copy": "{copy}"},
        "matrix": {"copy": list(range(copies))},
        "paginate": {"type": "page_number", "total_pages_path": "meta.pages"},
    }


@pytest.mark.parametrize("style", ["x", "ietf", "structured"])
def test_the_vendors_rate_limit_headers_slow_the_source_instead_of_collecting_429s(tmp_path: Path, emulator: Emulator, style: str) -> None:
    emulator.acme.feedback.config.style = style
    emulator.acme.feedback.config.limit = 6  # per 1 s window: 18 requests take 4 windows, 5 a window with the margin
    job = acme_job(tmp_path, emulator, [limited(6)], concurrency=4)
    result = run(job)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(lake_objects(tmp_path / "lake")) == 18
    assert emulator.acme.feedback.throttled == 0 and emulator.stats.count(status=429) == 0
    assert emulator.acme.feedback.served == 18

    # The same job not reading the headers meets the limit: the emulator enforces it.
    emulator.acme.feedback.config.limit, emulator.acme.feedback.throttled = 6, 0
    (tmp_path / "off").mkdir()
    off = acme_job(tmp_path / "off", emulator, [limited(6)], concurrency=4, rate_limit_headers=False)
    run(off)
    assert emulator.acme.feedback.throttled > 0


# -- Retry-After: 0, an HTTP date, beyond the cap -----------------------------------------------


def details(retry: dict[str, Any]) -> dict[str, Any]:
    return {"retry": {"attempts": 3, "backoff_initial": 0.01, "backoff_max": 0.01, "budget_seconds": 60, **retry}}


DETAILS = {"name": "details", "kind": "json", "path": "/v1.3/apps/ios/app/1/details"}


def test_retry_after_0_waits_the_floor_not_a_tight_loop(tmp_path: Path, emulator: Emulator) -> None:
    emulator.config.faults = [Fault(match="/app/1/details", kind="status", status=429, retry_after="0", times=2)]
    job = write_job(tmp_path, emulator, [DETAILS], source=details({"min_retry_after": 0.4}))
    result = run(job)
    assert result.returncode == 0, result.stdout + result.stderr
    times = [r.mono for r in emulator.stats.requests if "/app/1/details" in r.target]
    assert len(times) == 3
    assert all(later - earlier >= 0.38 for earlier, later in itertools.pairwise(times))  # the back-off alone is 0.01 s


@pytest.mark.parametrize("as_date", [False, True], ids=["seconds", "http-date"])
def test_a_retry_after_beyond_the_cap_fails_the_unit_at_once(tmp_path: Path, emulator: Emulator, as_date: bool) -> None:
    value = email.utils.formatdate(time.time() + 3600, usegmt=True) if as_date else "3600"
    emulator.config.faults = [Fault(match="/app/1/details", kind="status", status=429, retry_after=value)]
    job = write_job(tmp_path, emulator, [DETAILS], source=details({"max_retry_after": 5}))
    started = time.monotonic()
    result = run(job)
    assert time.monotonic() - started < 30  # not an hour
    assert result.returncode == 1
    assert emulator.stats.count(path_contains="/app/1/details") == 1
    error = records(tmp_path / "lake")[-1]["units"][0]["error"]
    assert "the vendor asks to wait" in error and "beyond retry.max_retry_after (5 s)" in error


# -- bad rules, refused before anything is sent ------------------------------------------------


@pytest.mark.parametrize(
    "where, settings, message",
    [
        ("endpoint", {"on_response": [{"action": "retry"}]}, "sources[0].endpoints[0].on_response[0]: the rule matches every response"),
        ("source", {"on_response": [{"status": "4xx", "action": "ignore"}]}, "sources[0].on_response[0]: action: ignore on a 401"),
        (
            "endpoint",
            {"on_response": [{"status": 503, "action": "retry_after", "after": 900}]},
            "endpoints[0].on_response[0].after: 900 s is beyond retry.max_retry_after (300 s)",
        ),
        ("source", {"rate_limit_headers": {"margin": -1}}, "sources[0].rate_limit_headers.margin"),
    ],
)
def test_rules_that_cannot_be_meant_are_refused_with_the_key_named(
    tmp_path: Path, emulator: Emulator, where: str, settings: dict[str, Any], message: str
) -> None:
    endpoint = {**DETAILS, **settings} if where == "endpoint" else DETAILS
    job = write_job(tmp_path, emulator, [endpoint], source=settings if where == "source" else {})
    for command in (["validate", str(job)], ["run", str(job), "--date", DATE]):
        result = run_cli(*command)
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    assert emulator.stats.count() == 0


# -- the recipe "an API that reports its limits in headers", as written -------------------------

RECIPES = re.findall(r"```yaml\n(.*?)```", (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text(), re.DOTALL)


def test_the_rate_limit_headers_recipe_runs_against_the_emulator_as_written(tmp_path: Path, emulator: Emulator) -> None:
    [text] = [r for r in RECIPES if "rate_limit_headers:" in r]
    job = tmp_path / "job.yaml"
    job.write_text(text)
    emulator.acme.config.auth = "bearer"
    emulator.acme.feedback.config.limit = 3  # 3 pages of items: a wait for the reset on the way
    env = {"METRICS_BASE_URL": emulator.api_url + "/acme", "METRICS_TOKEN": TOKEN}
    result = run_cli("run", str(job), "--date", DATE, "--dest", str(tmp_path / "lake"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lake = tmp_path / "lake"
    objects = lake_objects(lake)
    assert objects[f"metrics/figures/dt={DATE}/a1.json"] == body(figures("a1", DATE))
    assert objects[f"metrics/figures/dt={DATE}/throttled.json"] == body(figures("throttled", DATE))  # after X-Retry-In
    assert not any("empty" in k for k in objects)
    assert len([k for k in objects if k.startswith("metrics/items/")]) == 3
    assert emulator.acme.feedback.throttled == 0
    statuses = {u["unit"]: u["status"] for u in records(lake)[-1]["units"]}
    assert statuses[f"metrics/figures/{DATE}/account=empty"] == "ignored"
    assert TOKEN not in all_text(lake, result)


def test_an_ignored_parent_has_no_children_and_the_run_succeeds(tmp_path: Path, emulator: Emulator) -> None:
    accounts = {
        "name": "accounts",
        "kind": "json",
        "path": "/accounts",
        "params": {"date": "{date}"},
        "on_response": [{"status": 200, "body_contains": '"accounts":[{"id":"a1"}', "action": "ignore"}],
    }
    products = {
        "name": "products",
        "kind": "json",
        "path": "/accounts/{account_id}/products",
        "for_each": {"endpoint": "accounts", "values": "accounts[].id", "as": "account_id"},
    }
    result = run(acme_job(tmp_path, emulator, [accounts, products]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert lake_objects(tmp_path / "lake") == {}
    assert [u["status"] for u in records(tmp_path / "lake")[-1]["units"]] == ["ignored"]
    assert emulator.stats.count(path_contains="/products") == 0
    status = run_cli("status", str(tmp_path / "job.yaml"), "--from", DATE, "--to", DATE)  # done, as in the run: no gap
    assert status.returncode == 0 and "missing" not in status.stdout, status.stdout
