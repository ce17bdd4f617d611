"""Report jobs: create a report, poll it until it is done, then land its files like a bulk listing.

A report is created once per unit. Its id is kept in a small state object in the destination
(`_apilake/reports/…`) as soon as the vendor answers, and in the run record, so a rerun after a
crash, a kill or a timeout polls the same report instead of creating another. The state object
goes when the report fails (a rerun then creates a new one) or when the vendor no longer knows
the report (404). Every poll is a request to the source like any other: it counts against the
source's rate limits and daily quota.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import time
from typing import Any

from apilake.destinations import Destination
from apilake.errors import TransferError
from apilake.fetch import dig
from apilake.fetch.bulk import Listing, listing_of
from apilake.fetch.client import SourceClient
from apilake.fetch.json import JsonAnswer, get_json
from apilake.jobfile import Endpoint
from apilake.plan import Unit, encode_query, join_url, render_params
from apilake.redact import ERROR_DETAIL_CHARS

log = logging.getLogger("apilake")

STATE_PREFIX = "_apilake/reports/"


def state_key(unit: Unit) -> str:
    """Where the report id of a unit is kept (hashed: unit ids may hold any character)."""
    return f"{STATE_PREFIX}{unit.source}/{unit.endpoint}/{hashlib.sha256(unit.id.encode()).hexdigest()[:32]}.json"


def poll_url(unit: Unit, endpoint: Endpoint, base_url: str, report_id: str) -> str:
    assert endpoint.poll is not None
    values = {**unit.values(), "report_id": report_id}
    variables = {**dict(unit.variables), "report_id": report_id}
    url = join_url(base_url, endpoint.poll.path, values, variables)
    params = render_params(endpoint.poll.params, values)
    return url + ("?" + encode_query(params) if params else "")


async def fetch_report(unit: Unit, endpoint: Endpoint, client: SourceClient, dest: Destination, *, force: bool) -> Listing:
    """The listing of a unit's finished report (created, or resumed from the destination's state;
    `force` asks for a new report)."""
    started = time.monotonic()
    key = state_key(unit)
    report_id = None if force else await _saved_id(dest, key, unit)
    resumed = report_id is not None
    try:
        if report_id is not None:
            log.info("%s: resuming report %s", unit.id, report_id)
            try:
                answer = await _poll(unit, endpoint, client, report_id)
            except TransferError as exc:
                if exc.status != 404:
                    raise
                log.warning("%s: report %s is unknown to the vendor now; creating a new one", unit.id, report_id)
                report_id, resumed = None, False
        if report_id is None:
            report_id = await _create(unit, endpoint, client, dest, key)
            answer = await _poll(unit, endpoint, client, report_id)
    except _Failed:
        await dest.delete(key)  # a failed report stays failed: the next run asks for a new one
        raise
    try:
        return listing_of(unit, endpoint, client, answer, started, report_id=report_id, resumed=resumed)
    except TransferError as exc:
        raise TransferError(f"{exc} (report {report_id})") from None


async def _saved_id(dest: Destination, key: str, unit: Unit) -> str | None:
    if await dest.stat(key) is None:
        return None
    try:
        state = json.loads(await dest.read(key))
    except (ValueError, OSError):
        return None
    return state.get("report_id") if isinstance(state, dict) and state.get("unit") == unit.id else None


async def _create(unit: Unit, endpoint: Endpoint, client: SourceClient, dest: Destination, key: str) -> str:
    answer = await get_json(client, unit.request_url, f"{unit.id} create report", method=unit.method, body=unit.body)
    found = dig(answer.doc, endpoint.id_path)
    if not isinstance(found, (str, int)) or isinstance(found, bool) or found == "":
        raise TransferError(f"{unit.id}: the create answer has no report id at {endpoint.id_path!r} (set `id_path:`)")
    report_id = str(found)
    state = {"unit": unit.id, "report_id": report_id, "created": dt.datetime.now(dt.UTC).isoformat()}
    await dest.put(key, json.dumps(state).encode())  # before the first poll: a kill from here on resumes it
    log.info("%s: created report %s", unit.id, report_id)
    return report_id


async def _poll(unit: Unit, endpoint: Endpoint, client: SourceClient, report_id: str) -> JsonAnswer:
    """Poll until the report is done; a failed report or a timeout is the unit's failure."""
    poll = endpoint.poll
    assert poll is not None
    url = poll_url(unit, endpoint, client.source.base_url, report_id)
    deadline = time.monotonic() + poll.timeout_seconds
    while True:
        answer = await get_json(client, url, f"{unit.id} poll report {report_id}")
        status = dig(answer.doc, poll.status_path)
        if status in poll.done:
            return answer
        if status in poll.failed:
            message = client.redact.cut(_message(answer.doc, poll.message_path), ERROR_DETAIL_CHARS)
            raise _Failed(client.redact(f"{unit.id}: report {report_id} ended {status!r}") + (f": {message}" if message else ""))
        if time.monotonic() + poll.interval_seconds > deadline:
            raise TransferError(
                f"{unit.id}: report {report_id} not done after {poll.timeout_seconds:g} s (last status {status!r}); "
                "a rerun resumes polling it (poll.timeout_seconds)"
            )
        await asyncio.sleep(poll.interval_seconds)


def _message(doc: Any, path: str | None) -> str:
    found = dig(doc, path) if path else None
    if found is None and isinstance(doc, dict):
        found = doc.get("message") or doc.get("error")
    return str(found) if found is not None else ""


class _Failed(TransferError):
    """The vendor says the report failed: its state goes, so a rerun creates a new one."""
