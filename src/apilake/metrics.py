"""Prometheus metrics of a job's runs, from its run records.

`apilake run --metrics-file PATH` writes them for node_exporter's textfile collector;
`apilake schedule --http HOST:PORT` serves them on `/metrics` with the scheduler's own
(next fire time, last loop tick). Both come from one collector over the run records and the
quota ledgers, so a metric means the same wherever it is read. Every series has the label
`apilake_job` (the job file as given), so several jobs can share one textfile directory or
Prometheus.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apilake.errors import ApilakeError
from apilake.fetch.quota import job_quota_use
from apilake.jobfile import Job
from apilake.record import RunRecord, on_destination
from apilake.vocabulary import DONE, RunStatus, UnitStatus

log = logging.getLogger("apilake")

QuotaUse = list[tuple[str, str, dict[str, Any]]]  # (source, "YYYY-MM-DD zone", {used, limit}), as `quota_use` gives
RUN_STATUSES: tuple[RunStatus, ...] = ("succeeded", "failed", "interrupted")  # what a finished record can say


def last_success(records: Iterable[RunRecord]) -> dict[str, float]:
    """Per endpoint, when the latest run ended in which all of its units landed (or were skipped or ignored)."""
    found: dict[str, float] = {}
    for record in records:
        if record.finished is None:
            continue
        finished = record.finished.timestamp()
        by_endpoint: dict[str, list[UnitStatus]] = {}
        for unit in record.units:  # a listing counts through its files, unless it failed
            if unit.kind != "listing" or unit.status != "listed":
                by_endpoint.setdefault(f"{unit.source}/{unit.endpoint}", []).append(unit.status)
        for endpoint, statuses in by_endpoint.items():
            if statuses and all(s in DONE for s in statuses):
                found[endpoint] = max(found.get(endpoint, 0.0), finished)
    return found


def quota_today(job: Job, destination: str) -> QuotaUse | None:
    """Today's use of the job's daily quotas, from their ledgers; None, with a warning, when the
    ledger store cannot be read (the metrics go on without those families)."""
    try:
        return on_destination(destination, job.s3, lambda dest: job_quota_use(job, dest))
    except (ApilakeError, OSError) as exc:
        log.warning("cannot read the quota ledgers in %s for metrics: %s", job.quota_ledger or destination, exc)
        return None


class RunCollector(Collector):
    """The metric families of a job's runs; `records()` and `quota()` are asked on every collection."""

    def __init__(
        self,
        job: Job,
        job_path: str,
        records: Callable[[], list[RunRecord]],
        quota: Callable[[], QuotaUse | None],
        tables: Callable[[], list[Any] | None] = lambda: None,
    ) -> None:
        self.job = job
        self.job_path = job_path
        self.records = records
        self.quota = quota
        self.tables = tables  # tables.TableStatus per table, for a job with `tables:`

    def _family(self, name: str, doc: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=["apilake_job", *labels])

    def collect(self) -> Iterator[Metric]:
        records = self.records()
        finished = [r for r in records if r.finished]
        job = self.job_path
        success = self._family(
            "apilake_last_success_timestamp_seconds", "When the latest run in which every unit of the endpoint landed ended (Unix time)", "endpoint"
        )
        for endpoint, when in sorted(last_success(records).items()):
            success.add_metric([job, endpoint], when)
        yield success
        yield from self._ledgers()
        yield from self._tables()
        if not finished:
            return
        last = finished[-1]
        start = self._family("apilake_last_run_start_timestamp_seconds", "Start of the last finished run (Unix time)")
        start.add_metric([job], last.started.timestamp() if last.started else 0)
        end = self._family("apilake_last_run_end_timestamp_seconds", "End of the last finished run (Unix time)")
        end.add_metric([job], last.finished.timestamp() if last.finished else 0)
        status = self._family("apilake_last_run_status", "1 for the status of the last finished run, 0 for the others", "status")
        for name in RUN_STATUSES:
            status.add_metric([job, name], 1.0 if last.status == name else 0.0)
        yield from (start, end, status)
        yield from self._units(last)
        yield from self._quota(last)

    def _units(self, record: RunRecord) -> Iterator[Metric]:
        job = self.job_path
        units: dict[tuple[str, str], int] = {}
        size: dict[str, int] = {}
        retries: dict[str, int] = {}
        requests: dict[tuple[str, str], int] = {}
        for unit in record.units:
            endpoint = f"{unit.source}/{unit.endpoint}"
            units[endpoint, unit.status] = units.get((endpoint, unit.status), 0) + 1
            size[endpoint] = size.get(endpoint, 0) + unit.bytes
            retries[endpoint] = retries.get(endpoint, 0) + unit.retries
            for code, n in unit.http.items():
                requests[endpoint, code] = requests.get((endpoint, code), 0) + n
        families: list[tuple[GaugeMetricFamily, dict[Any, int]]] = [
            (self._family("apilake_last_run_units", "Units of the last finished run by endpoint and status", "endpoint", "status"), units),
            (self._family("apilake_last_run_bytes", "Bytes the last finished run landed, by endpoint", "endpoint"), size),
            (self._family("apilake_last_run_retries", "Requests the last finished run repeated, by endpoint", "endpoint"), retries),
            (
                self._family(
                    "apilake_last_run_responses",
                    "HTTP responses of the last finished run by endpoint and status code (every attempt and redirect)",
                    "endpoint",
                    "code",
                ),
                requests,
            ),
        ]
        for family, values in families:
            for labels, value in sorted(values.items()):
                family.add_metric([job, *(labels if isinstance(labels, tuple) else (labels,))], value)
            yield family

    def _quota(self, record: RunRecord) -> Iterator[Metric]:
        job = self.job_path
        used: dict[str, int] = {}
        for unit in record.units:
            used[unit.source] = used.get(unit.source, 0) + unit.requests
        used_family = self._family(
            "apilake_last_run_quota_requests_used", "Requests the last finished run sent to the source's own origin (what requests_per_day counts)", "source"
        )
        left_family = self._family(
            "apilake_last_run_quota_requests_left", "requests_per_day minus the requests of the last finished run (sources with a daily quota)", "source"
        )
        for source in self.job.sources:
            used_family.add_metric([job, source.name], used.get(source.name, 0))
            if source.requests_per_day is not None:
                left_family.add_metric([job, source.name], max(source.requests_per_day - used.get(source.name, 0), 0))
        yield used_family
        yield left_family

    def _ledgers(self) -> Iterator[Metric]:
        """Today's quota use across runs, processes and hosts: what the next run can still send."""
        use = self.quota()
        if use is None:
            return
        job = self.job_path
        limits = {source.name: source.requests_per_day for source in self.job.sources}
        used_family = self._family(
            "apilake_quota_requests_used",
            "Requests of the source's credential used or reserved on today's quota day, by every run, process and host (its quota ledger)",
            "source",
            "quota_day",
        )
        left_family = self._family("apilake_quota_requests_left", "requests_per_day minus apilake_quota_requests_used", "source", "quota_day")
        for source, day, entry in use:
            used = int(entry.get("used", 0))
            labels = [job, source, day.split(" ", 1)[0]]
            used_family.add_metric(labels, used)
            if (limit := limits.get(source)) is not None:
                left_family.add_metric(labels, max(limit - used, 0))
        yield used_family
        yield left_family

    def _tables(self) -> Iterator[Metric]:
        """Rows per table (current snapshot) and its dates behind the raw zone: a refresh that failed
        or never ran shows as dates behind > 0."""
        found = self.tables()
        if found is None:
            return
        rows = self._family("apilake_table_rows", "Rows in the table's current snapshot (tables not built yet are left out)", "table")
        behind = self._family("apilake_table_dates_behind", "Landed dates whose partition of the table is behind the raw zone", "table")
        for status in found:
            if status.rows is not None:
                rows.add_metric([self.job_path, status.identifier], status.rows)
            behind.add_metric([self.job_path, status.identifier], len(status.behind))
        yield rows
        yield behind


def tables_now(job: Job, destination: str, records: list[RunRecord]) -> list[Any] | None:
    """The tables' status for metrics, None (with a warning) when the job has none or they cannot be read."""
    if job.tables is None:
        return None
    from apilake.status.report import tables_of

    found, error = tables_of(job, destination, records)
    if error:
        log.warning("cannot read the tables of %s for metrics: %s", destination, error)
        return None
    return found


def registry(*collectors: Collector) -> CollectorRegistry:
    """A registry of just these collectors (no process or platform metrics: the job's numbers only)."""
    found = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        found.register(collector)
    return found


def write_file(path: str, job: Job, job_path: str, records: list[RunRecord], quota: QuotaUse | None, tables: list[Any] | None = None) -> None:
    """Write the metrics atomically (a temporary file renamed over `path`), as the textfile collector needs."""
    write_to_textfile(path, registry(RunCollector(job, job_path, lambda: records, lambda: quota, lambda: tables)))


class SchedulerCollector(Collector):
    """`apilake schedule`'s own families: when each schedule fires next, and the loop's last tick."""

    def __init__(self, job_path: str, upcoming: Callable[[], list[tuple[str, dt.datetime]]], last_tick: Callable[[], dt.datetime | None]) -> None:
        self.job_path = job_path
        self.upcoming = upcoming
        self.last_tick = last_tick

    def collect(self) -> Iterator[Metric]:
        fires = GaugeMetricFamily(
            "apilake_schedule_next_fire_timestamp_seconds", "When the schedule fires next (Unix time)", labels=["apilake_job", "schedule"]
        )
        for schedule, fire in self.upcoming():
            fires.add_metric([self.job_path, schedule], fire.timestamp())
        yield fires
        tick = GaugeMetricFamily(
            "apilake_scheduler_last_tick_timestamp_seconds",
            "When the scheduler's loop last woke up, or a run last finished (Unix time)",
            labels=["apilake_job"],
        )
        if (when := self.last_tick()) is not None:
            tick.add_metric([self.job_path], when.timestamp())
        yield tick


def exposition(reg: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format, as `/metrics` answers."""
    return generate_latest(reg)
