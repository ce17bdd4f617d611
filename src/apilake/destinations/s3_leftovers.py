"""Multipart uploads that killed runs left open on S3: found, sized and aborted.

A run stopped any other way aborts its own uploads (`S3Writer.abort`); a process killed outright
(`kill -9`, the OOM killer, a host gone) cannot. What it leaves never shows as an object, but its
parts are kept, and billed, until the upload is aborted. Two sweeps clear them:

- `abort_key`: before a multipart upload of a key starts, the uploads of that key begun before
  this run opened its destination. The run holds the job's lease, so no other run of the job is
  writing that key.
- `clear`: when a run starts, the uploads under the key prefixes the job owns
  (`plan.owned_prefixes`; none for a job whose key template starts with a placeholder, which
  would reach every job's uploads) begun more than `s3.stale_upload_minutes` ago, whether this run writes
  their keys again or not (a rerun skips a key that landed before a `--force` run was killed
  rewriting it). The age guard is for writers the lease does not keep out: another job whose keys
  share a prefix with this one's, or a run whose lease was taken over while it was still sending
  a part. One apilake transfer lives at most `timeouts.total` (60 min by default), which the job
  file must keep below the guard (120 min), so an upload begun longer ago belongs to no live transfer.

Without the `s3:ListBucketMultipartUploads` permission both only warn; an S3 lifecycle rule
`AbortIncompleteMultipartUpload` remains the backstop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from apilake.destinations.s3_requests import RequestFailed, Requests, Upload
from apilake.errors import DestinationError
from apilake.sizes import human_bytes

log = logging.getLogger(__name__)
T = TypeVar("T")


class S3Destination(Protocol):
    """What the sweeps use of an S3 destination (`s3.S3Destination`, which calls them): its
    bucket and prefix, its signed requests, and its way of running a blocking call in a thread."""

    bucket: str
    root: str

    def requests(self) -> Requests: ...
    def _error(self, exc: BaseException, action: str, key: str | None) -> DestinationError: ...
    async def _run(self, fn: Callable[..., T], /, *args: Any) -> T: ...
    def _where(self, key: str | None = None) -> str: ...


LIFECYCLE_HINT = "an S3 lifecycle rule AbortIncompleteMultipartUpload removes such leftovers"


@dataclass(frozen=True, slots=True)
class Sweep:
    """What one prefix's sweep found: uploads aborted (and their bytes, where the store said) and
    uploads left alone as too young."""

    prefix: str
    aborted: int = 0
    bytes: int = 0
    unsized: int = 0
    young: int = 0


def uploads(dest: S3Destination, full_prefix: str) -> list[Upload]:
    """Multipart uploads in progress under a full key prefix (blocking)."""
    try:
        return list(dest.requests().uploads(full_prefix))
    except (RequestFailed, ssl.SSLError, ValueError) as exc:
        raise dest._error(exc, "list multipart uploads in", None) from None


def abort(dest: S3Destination, upload: Upload) -> int | None:
    """Abort one upload (blocking); the bytes its parts held, or None when the store did not say."""
    requests = dest.requests()
    try:
        size: int | None = requests.part_bytes(upload)
    except (RequestFailed, ssl.SSLError, ValueError):  # the size is for the log line only
        size = None
    try:
        requests.abort(upload)
    except (RequestFailed, ssl.SSLError) as exc:
        raise dest._error(exc, "abort the multipart upload of", upload.key.removeprefix(dest.root)) from None
    return size


def abort_key(dest: S3Destination, full_key: str, before: dt.datetime) -> None:
    """Abort the uploads of exactly `full_key` begun before `before` (blocking); never raises:
    housekeeping must not fail the transfer that follows."""
    try:
        for upload in uploads(dest, full_key):
            if upload.key == full_key and upload.initiated < before:
                size = abort(dest, upload)
                log.info("aborted a multipart upload of %s left by an earlier run%s", full_key, _bytes_text(size))
    except DestinationError as exc:
        log.warning("could not look for stale multipart uploads of %s: %s; %s", full_key, exc, LIFECYCLE_HINT)


def sweep(dest: S3Destination, prefix: str, cutoff: dt.datetime) -> Sweep:
    """Abort the uploads under `prefix` (relative to the destination) begun before `cutoff` (blocking)."""
    aborted = sized = unsized = young = 0
    for upload in uploads(dest, dest.root + prefix):
        if upload.initiated >= cutoff:
            young += 1
            continue
        size = abort(dest, upload)
        aborted += 1
        sized += size or 0
        unsized += size is None
        log.debug("aborted the multipart upload of %s begun %s", upload.key, upload.initiated.isoformat())
    return Sweep(prefix, aborted, sized, unsized, young)


async def clear(dest: S3Destination, prefixes: Iterable[str], older_than: dt.timedelta) -> None:
    """At a run's start: abort the uploads under the job's prefixes begun more than `older_than`
    ago, one prefix per thread, and say what went. What the store refuses is a warning, never
    the run's failure."""
    cutoff = dt.datetime.now(dt.UTC) - older_than
    minutes = f"{older_than.total_seconds() / 60:g} min"
    prefixes = list(prefixes)
    if "" in prefixes:  # a key template that starts with a placeholder: the job owns no folder of its own
        log.warning("not looking for multipart uploads killed runs left open: a key template of this job starts with a "
                    "placeholder ({date}/...), so it owns no prefix of its own, and other jobs' uploads may be anywhere "
                    "in %s; %s", dest._where(""), LIFECYCLE_HINT)  # fmt: skip
        prefixes = [p for p in prefixes if p]
    results = await asyncio.gather(*(dest._run(sweep, dest, prefix, cutoff) for prefix in prefixes), return_exceptions=True)
    for result in results:
        if isinstance(result, DestinationError):
            log.warning("could not look for multipart uploads that killed runs left open: %s; %s", result, LIFECYCLE_HINT)
            continue
        if isinstance(result, BaseException):
            raise result
        where = dest._where(result.prefix)
        if result.aborted:
            size = _bytes_text(result.bytes if result.aborted > result.unsized else None)  # unsized ones add nothing
            log.info("aborted %d multipart upload(s) under %s begun over %s ago, left open by killed runs%s",
                     result.aborted, where, minutes, size)  # fmt: skip
        if result.young:
            log.info("left %d multipart upload(s) under %s begun less than %s ago: a live run may be sending them "
                     "(s3.stale_upload_minutes); a later run or a lifecycle rule removes them if not",
                     result.young, where, minutes)  # fmt: skip


def _bytes_text(size: int | None) -> str:
    return "" if size is None else f" ({human_bytes(size)} of parts)"
