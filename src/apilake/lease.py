"""One run at a time per job and destination, across hosts: a lease object in the destination.

The OS file lock (`lock.py`) only sees one host. On S3 the run also holds
`_apilake/leases/<job>.json`, written only by compare-and-swap (`Destination.put_if`):
created with `If-None-Match: *`, renewed every `lease.renew_seconds` with `If-Match` on the
version it last wrote. A holder that stops renewing (killed, partitioned) is dead once its
`expires` has passed, and the next run takes the lease over with `If-Match` on that stale
version, so of two runs racing for a dead lease exactly one wins. A run that cannot renew
before its own expiry, or finds its lease taken, has lost it: the runner stops starting units,
drops what is in flight and exits 1. Hosts' clocks must agree to well within `expiry_seconds`
(NTP does).

A store without conditional writes cannot hold a lease: taking one says so (or that the store
altered the lease's bytes, which is another fault with its own fix). `lease: {mode: off}` runs
there without one, kept apart from overlapping runs by the host's OS lock only, and says so at
every run (`unleased_warning`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from apilake.destinations import OWN_PREFIX, Destination
from apilake.errors import DestinationError, RunLockedError
from apilake.fetch.quota import host_ledger_folder
from apilake.fetch.refresh import host_token_folder
from apilake.jobfile import Job, LeaseOptions, OAuth2RefreshToken
from apilake.lock import job_id, lock_is_free, run_lock

log = logging.getLogger("apilake")

LEASES_PREFIX = f"{OWN_PREFIX}leases/"
#: After creating a lease, read it back this much later: stores whose conditional writes are not
#: atomic (some S3-compatible ones, moto) could let two creators both succeed; the later write wins
#: there, and the run that reads back another run's lease steps aside.
CONFIRM_DELAY_S = 0.2


OFF_HINT = (
    "to run this job from one host only, set `lease: {mode: off}` in the job file (overlapping runs are then "
    "kept apart on that host only, and requests_per_day is counted per host)"
)


def lease_key(job_path: str) -> str:
    return f"{LEASES_PREFIX}{job_id(job_path)}.json"


def wanted(dest: Destination, options: LeaseOptions) -> bool:
    """Whether a run into `dest` holds a lease: where the host's OS lock cannot see every writer
    (S3, network file systems) or everywhere (`always`); never with `off`."""
    return options.mode == "always" or (options.mode == "auto" and dest.needs_lease)


def unleased_warning(job: Job, dest: Destination) -> str | None:
    """What a run without a lease (`lease: {mode: off}`) gives up, said at every run: nothing
    keeps out a run of the job on another host, and daily quotas and refresh tokens are kept per host."""
    if job.lease.mode != "off":
        return None
    counted = (
        f"requests_per_day is counted in the quota_ledger {job.quota_ledger}"
        if job.quota_ledger
        else f"requests_per_day is counted per host (in {host_ledger_folder()}), so runs on several hosts can spend it several times"
    )
    if not job.token_store and any(isinstance(s.credentials, OAuth2RefreshToken) for s in job.sources):
        counted += (
            f". Rotated OAuth2 refresh tokens are kept per host (in {host_token_folder()}): a run on another host would spend a token this one already spent"
        )
    return (
        f"lease: {{mode: off}}: no lease in {dest.url}, so overlapping runs of this job are kept apart only on this "
        f"host (its OS lock); start it from one host only. {counted}"
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def holder_text(doc: dict[str, Any]) -> str:
    return f"host {doc.get('host')}, pid {doc.get('pid')}, run {doc.get('run_id')}, since {doc.get('since')}"


def is_live(doc: dict[str, Any] | None, now: dt.datetime, *, own_lock: str | None = None) -> bool:
    """Whether a lease document names a holder that has renewed it within its expiry.

    A holder on this host is also dead as soon as its OS lock is free (the kernel dropped it with
    the process, even on `kill -9`), so a rerun after a crash need not wait for the expiry; on
    another host only the expiry can tell.
    """
    if not doc or doc.get("released"):
        return False
    if doc.get("host") == socket.gethostname() and isinstance(doc.get("lock"), str) and (doc["lock"] == own_lock or lock_is_free(doc["lock"])):
        return False  # holding its lock, this run outlived it
    try:
        return dt.datetime.fromisoformat(doc["expires"]) > now
    except (KeyError, TypeError, ValueError):
        return False


def parse(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class Lease:
    """The lease of one run; `acquire`, then `hold` (the heartbeat) until `release`."""

    def __init__(self, dest: Destination, job_path: str, run_id: str, options: LeaseOptions, *, lock: str) -> None:
        self.dest = dest
        self.lock = lock
        self.job_path = job_path
        self.key = lease_key(job_path)
        self.run_id = run_id
        self.options = options
        self.since = _now()
        self._version: str | None = None
        self._renewed = time.monotonic()

    def _document(self, *, released: bool = False) -> bytes:
        now = _now()
        return json.dumps(
            {
                "job": job_id(self.job_path),
                "run_id": self.run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "lock": self.lock,
                "since": self.since.isoformat(),
                "renewed": now.isoformat(),
                "expires": (now + dt.timedelta(seconds=self.options.expiry_seconds)).isoformat(),
                "released": released,
            },
            indent=1,
        ).encode()

    def _locked(self, doc: dict[str, Any]) -> RunLockedError:
        return RunLockedError(
            f"another run of {self.job_path} into {self.dest.url} holds its lease ({holder_text(doc)}; "
            f"{self.dest.url.rstrip('/')}/{self.key}); this run did nothing. Wait for it, or stop it first: "
            f"a holder that stops renewing loses the lease {self.options.expiry_seconds:g} s after its last renewal."
        )

    async def acquire(self) -> None:
        """Take the lease, or raise `RunLockedError` naming its live holder."""
        for _attempt in range(5):
            found = await self.dest.read_versioned(self.key)
            doc = parse(found.data) if found else None
            if found is not None and doc is not None and is_live(doc, _now(), own_lock=self.lock):
                raise self._locked(doc)
            if found is not None and doc is not None and doc.get("run_id") != self.run_id and not doc.get("released"):
                log.warning("taking over the lease of a run that stopped renewing it (%s)", holder_text(doc))
            started = time.monotonic()
            sent = self._document()
            version = await self.dest.put_if(self.key, sent, version=found.version if found else None)
            if version is None:
                continue  # another run wrote first: look again
            await asyncio.sleep(CONFIRM_DELAY_S)
            kept = await self.dest.read_versioned(self.key)
            if kept is None:
                continue
            mine = parse(kept.data)
            if mine is None or (mine.get("run_id") == self.run_id and kept.data != sent):
                raise self._altered(sent, kept.data)  # no run writes anything but its own document
            if mine.get("run_id") != self.run_id:
                if is_live(mine, _now(), own_lock=self.lock):
                    raise self._locked(mine)
                continue
            await self._check_conditional_writes(kept.data)
            self._version, self._renewed = kept.version, started
            return
        raise RunLockedError(f"could not take the lease {self.key} in {self.dest.url}: other runs keep changing it; this run did nothing")

    def _altered(self, sent: bytes, kept: bytes) -> DestinationError:
        return DestinationError(
            f"{self.dest.url}: the store altered the lease object {self.key}: this run wrote {len(sent):,} bytes of "
            f"JSON and read back {len(kept):,} bytes that differ (no run writes anything else there); this run did "
            f"nothing. {self.dest.altered_hint}"
        )

    async def _check_conditional_writes(self, data: bytes) -> None:
        """Creating the lease again must be refused: a store that ignores `If-None-Match` would
        let every run hold it (and over-spend quota ledgers). Same bytes, so the version stays."""
        if await self.dest.put_if(self.key, data, version=None) is not None:
            raise DestinationError(
                f"{self.dest.url} ignores conditional writes (If-None-Match: *): it let this run create the lease "
                f"{self.key} a second time. apilake needs them to keep runs on different hosts apart and to count daily "
                f"quotas; this run did nothing. Use a store that supports them (AWS S3 does), or, {OFF_HINT}"
            )

    async def hold(self, on_lost: Callable[[str], None]) -> None:
        """Renew every `renew_seconds` until cancelled; call `on_lost` once if the lease is lost."""
        while True:
            await asyncio.sleep(self.options.renew_seconds)
            started = time.monotonic()
            try:
                # A store that hangs must not keep this run landing long past its lease's expiry:
                # the renewal gets until then (at least one renewal period, to learn its fate).
                left = self.options.expiry_seconds - (started - self._renewed)
                async with asyncio.timeout(max(left, self.options.renew_seconds)):
                    version = await self._renew()
            except TimeoutError:
                on_lost(f"could not renew the lease {self.key} before it expired (the store did not answer in time)")
                return
            except DestinationError as exc:
                if time.monotonic() - self._renewed >= self.options.expiry_seconds - self.options.renew_seconds:
                    on_lost(f"could not renew the lease {self.key} before it expired ({exc})")
                    return
                log.warning("could not renew the lease %s (trying again): %s", self.key, exc)
                continue
            if version is None:
                on_lost(f"the lease {self.key} was taken over by another run (this one had not renewed it in time)")
                return
            self._version, self._renewed = version, started

    async def _renew(self) -> str | None:
        """The lease's new version, or None when another run holds it now."""
        version = await self.dest.put_if(self.key, self._document(), version=self._version)
        if version is not None:
            return version
        return await self._still_ours()  # our own renewal landed, but its answer was lost and the write retried

    async def _still_ours(self) -> str | None:
        """The lease's version if it is still this run's and not released, else None."""
        kept = await self.dest.read_versioned(self.key)
        doc = parse(kept.data) if kept else None
        if kept is None or doc is None or doc.get("run_id") != self.run_id or doc.get("released"):
            return None
        return kept.version

    async def release(self) -> None:
        """Mark the lease released (compare-and-swap: never another run's lease)."""
        version, self._version = self._version, None
        try:
            for _ in range(3):  # a renewal still in flight when the run ended may land first
                if version is None or await self.dest.put_if(self.key, self._document(released=True), version=version):
                    return
                version = await self._still_ours()
            log.warning("could not release the lease %s (it expires on its own): it kept changing", self.key)
        except DestinationError as exc:
            log.warning("could not release the lease %s (it expires on its own): %s", self.key, exc)


async def live_lease(dest: Destination, job_path: str) -> dict[str, Any] | None:
    """The lease document of a job if a live run holds it (for `apilake status`)."""
    found = await dest.read_versioned(lease_key(job_path))
    doc = parse(found.data) if found else None
    return doc if doc is not None and is_live(doc, _now()) else None


class HeldLease:
    """A lease held for synchronous work outside a run (`apilake tables`, a run's table refresh):
    taken, then renewed by a heartbeat on its own thread and event loop until the block ends.
    `lost` says why it was lost, if it was: the work then stops at its next step."""

    def __init__(self, dest: Destination, job_path: str, run_id: str, options: LeaseOptions, *, lock: str) -> None:
        self.dest = dest
        self.lease = Lease(dest, job_path, run_id, options, lock=lock)
        self.lost: str | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=asyncio.run, args=(self._hold(),), name="apilake-lease", daemon=True)

    def __enter__(self) -> HeldLease:
        self._thread.start()
        try:
            self._ready.result()  # RunLockedError: another run holds it; nothing was done
        except BaseException:
            self._thread.join()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def why_lost(self) -> str | None:
        return self.lost

    def _on_lost(self, reason: str) -> None:
        log.error("%s: stopping before the next table", reason)
        self.lost = reason

    async def _hold(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            await self.lease.acquire()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits for the lease
            await self.dest.close()
            self._ready.set_exception(exc)
            return
        heartbeat = asyncio.create_task(self.lease.hold(self._on_lost))
        self._ready.set_result(None)
        try:
            await self._stop.wait()
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)  # its renewal ends before the release
            await self.lease.release()
            await self.dest.close()


class _NoLease:
    """Where a run takes no lease, only the OS lock: nothing to lose."""

    def why_lost(self) -> str | None:
        return None


@contextmanager
def job_hold(job: Job, job_path: str, dest: Destination, run_id: str) -> Iterator[HeldLease | _NoLease]:
    """The job's OS lock and, where a run takes one (`wanted`), its lease, for work beside runs
    that must not overlap them (`apilake tables`): another run or builder of the job is refused
    (exit 3) meanwhile."""
    with run_lock(job_path, dest.url, dest.place) as lock:
        if not wanted(dest, job.lease):
            yield _NoLease()
            return
        with HeldLease(dest, job_path, run_id, job.lease, lock=str(lock)) as held:
            yield held
