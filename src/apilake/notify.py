"""Notifications: a message when a run fails, and when the next run recovers, through Apprise.

The job's `notify:` lists Apprise URLs (Slack, Teams, e-mail, a JSON webhook, ...). Which event
a run is comes from the run records: a failed run is a `failure`; a succeeded run whose previous
finished run over any of the same endpoints had failed is a `recovery`. Every text goes through
the job's redactor (the URLs themselves are secrets too), and a message that cannot be
delivered is a warning: it never changes the run's exit code.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Literal

from apilake.jobfile import Job
from apilake.record import RunRecord, UnitResult
from apilake.redact import Redactor
from apilake.status.gaps import Gap, fill_commands

log = logging.getLogger("apilake")

LISTED = 20  # failed units named in one message; the rest are counted


Event = Literal["failure", "recovery"]


@dataclass(frozen=True, slots=True)
class Message:
    event: Event
    title: str
    body: str


def event(records: list[RunRecord], run_id: str) -> tuple[Event, RunRecord | None] | None:
    """(`failure` | `recovery`, the failed run recovered from) for run `run_id`, or None when nothing is news."""
    finished = [r for r in records if r.finished]
    current = next((r for r in finished if r.run_id == run_id), None)
    if current is None:
        return None
    if current.status == "failed":
        return "failure", None
    if current.status != "succeeded":
        return None  # interrupted: stopped on purpose, and the next start makes it up
    mine = current.endpoints
    before = [r for r in finished if r.run_id < run_id and r.endpoints & mine]
    if before and before[-1].status == "failed":
        return "recovery", before[-1]
    return None


def compose(job: Job, job_path: str, records: list[RunRecord], run_id: str) -> Message | None:
    """The message for run `run_id`, if it is news; pure."""
    found = event(records, run_id)
    if found is None:
        return None
    kind, previous = found
    record = next(r for r in records if r.run_id == run_id)
    head = [f"job: {job_path}", f"run: {run_id} ({record.status}), run dates {record.span}", f"destination: {record.destination}"]
    if kind == "recovery":
        assert previous is not None
        title = f"apilake: {job_path} recovered"
        lines = [*head, "", f"every unit landed; the previous run {previous.run_id} had failed"]
        return Message(kind, title, "\n".join(lines))
    failed = record.failures()
    title = f"apilake: {job_path} run failed, {len(failed)} unit(s) did not land"
    lines = [*head, "", f"{len(failed)} unit(s) did not land:"]
    lines += [f"  {u.status.upper()} {u.unit}: {u.error or 'no reason recorded'}" for u in failed[:LISTED]]
    if len(failed) > LISTED:
        lines.append(f"  ... and {len(failed) - LISTED} more")
    lines += ["", "to fill the gaps (a rerun skips what already landed):"]
    lines += [f"  {c}" for c in fill_commands(_gaps(job, failed), job_path)]
    return Message(kind, title, "\n".join(lines))


def _gaps(job: Job, failed: list[UnitResult]) -> list[Gap]:
    """The failed units as gaps by endpoint and run date (the unit's date plus its endpoint's lag)."""
    lags = {f"{s.name}/{e.name}": e.lag for s in job.sources for e in s.endpoints}
    grouped: dict[tuple[str, str], list[str]] = {}
    for unit in failed:
        endpoint = f"{unit.source}/{unit.endpoint}"
        run_date = dt.date.fromisoformat(unit.date) + dt.timedelta(days=lags.get(endpoint, 0))
        grouped.setdefault((endpoint, run_date.isoformat()), []).append(unit.unit)
    return [Gap(e, d, tuple(units), len(units)) for (e, d), units in sorted(grouped.items())]


def send(job: Job, message: Message) -> bool:
    """Deliver `message` to the job's URLs if it asks for this event; False (and a warning) when not all took it."""
    if job.notify is None or message.event not in job.notify.on:
        return True
    import apprise

    redact = Redactor(job.secrets())
    sender = apprise.Apprise()
    with apprise.LogCapture(level=logging.WARNING) as captured:
        usable = [i for i, url in enumerate(job.notify.urls, 1) if sender.add(url)]
        try:
            delivered = bool(usable) and bool(
                sender.notify(
                    body=redact(message.body),
                    title=redact(message.title),
                    notify_type=apprise.NotifyType.FAILURE if message.event == "failure" else apprise.NotifyType.SUCCESS,
                )
            )
        except Exception as exc:  # noqa: BLE001 - a notifier's bug must not fail the run
            captured.write(f"{type(exc).__name__}: {exc}\n")
            delivered = False
        detail = " ".join(captured.getvalue().split())
    unusable = len(job.notify.urls) - len(usable)
    if unusable:
        log.warning("notify: %d of %d URL(s) are not Apprise URLs apilake can use (check notify.urls)", unusable, len(job.notify.urls))
    if not delivered:
        log.warning("notify: the %s notification was not delivered (the run's outcome stands): %s", message.event, redact(detail)[-500:] or "no reason given")
    return delivered and not unusable
