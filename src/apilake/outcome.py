"""What follows a run: the Prometheus metrics file and the notifications.

Both read the destination's run records, once; the metrics also read today's quota ledgers.
Neither can change a run's outcome: a metrics file that cannot be written, a ledger that cannot
be read or a message that cannot be delivered is a warning, and the exit code stays the run's.
"""

from __future__ import annotations

import logging

from apilake.errors import ApilakeError
from apilake.jobfile import Job
from apilake.record import RunRecord, load_records

log = logging.getLogger("apilake")


def follow_up(job: Job, job_path: str, run_id: str, destination: str, *, metrics_file: str | None = None, records: list[RunRecord] | None = None) -> None:
    """Write `metrics_file` and send the job's notifications for run `run_id`."""
    if not metrics_file and job.notify is None:
        return
    if records is None:
        try:
            records = load_records(destination, job.s3)
        except (ApilakeError, OSError) as exc:
            log.warning("cannot read the run records of %s for metrics and notifications: %s", destination, exc)
            return
    if metrics_file:
        from apilake.metrics import quota_today, tables_now, write_file

        try:
            write_file(metrics_file, job, job_path, records, quota_today(job, destination), tables_now(job, destination, records))
        except OSError as exc:
            log.warning("--metrics-file %s: cannot write it (%s)", metrics_file, exc.strerror or exc)
    if job.notify is not None:
        from apilake import notify

        message = notify.compose(job, job_path, records, run_id)
        if message is not None:
            notify.send(job, message)
