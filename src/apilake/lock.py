"""One run at a time per job and destination.

An OS file lock (flock) in the host's runtime folder: the kernel drops it when the holding
process dies, even by SIGKILL, so a killed run never blocks the next one. It is named after the
job as its lease is (the job file's name) and the destination's real location, so a copy of the
job file in another folder, or the lake reached through a symlink, meets the same lock.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from apilake.errors import RunLockedError


def job_id(job_path: str) -> str:
    """The job's name: its file's name, so the same job started from its own copy of the file (in
    another folder, or on another host) is the same job to the lock and the lease."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(job_path).stem) or "job"


def lock_path(job_path: str, place: str) -> Path:
    """One fixed folder per user, so cron and a login shell (different environments) meet the same
    lock; `$APILAKE_LOCK_DIR` moves it, for every process of the host alike (services with a
    private /tmp). `place` is the destination's real location (`Destination.place`)."""
    folder = Path(os.environ.get("APILAKE_LOCK_DIR") or f"/tmp/apilake-locks-{os.getuid()}")
    digest = hashlib.sha256(f"{job_id(job_path)}\n{place}".encode()).hexdigest()[:20]
    return folder / f"{digest}.lock"


@contextmanager
def run_lock(job_path: str, destination: str, place: str) -> Iterator[Path]:
    """Hold the job's lock on the destination at `place` for the block; yields the lock file (run
    records name it, so `apilake status` can tell a live run from one whose process died)."""
    path = lock_path(job_path, place)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = path.with_suffix(".holder")
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        who = holder.read_text().strip() if holder.exists() else "another process"
        raise RunLockedError(
            f"another run of job {job_id(job_path)!r} into {place} is still going ({who}); this run did nothing. Wait for it, or stop it first."
        ) from None
    try:
        holder.write_text(f"pid {os.getpid()}, {Path(job_path).absolute()} into {destination}")
        yield path
    finally:
        lock.release()


def lock_is_free(path: str) -> bool:
    """Whether no process on this host holds the lock file `path` (it is taken and let go at once)."""
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return False
    except OSError:
        return True  # gone with its folder (a reboot cleaned /tmp): nobody holds it
    lock.release()
    return True
