"""One run at a time per job and destination.

An OS file lock (flock) in the host's runtime folder: the kernel drops it when the holding
process dies, even by SIGKILL, so a killed run never blocks the next one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from apilake.errors import RunLockedError


def lock_path(job_path: str, destination: str) -> Path:
    """One fixed folder per user: cron and a login shell (different environments) meet the same lock."""
    folder = Path("/tmp") / f"apilake-locks-{os.getuid()}"
    digest = hashlib.sha256(f"{Path(job_path).resolve()}\n{destination}".encode()).hexdigest()[:20]
    return folder / f"{digest}.lock"


@contextmanager
def run_lock(job_path: str, destination: str) -> Iterator[Path]:
    """Hold the job's lock for the block; yields the lock file (run records name it, so
    `apilake status` can tell a live run from one whose process died)."""
    path = lock_path(job_path, destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = path.with_suffix(".holder")
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        who = holder.read_text().strip() if holder.exists() else "another process"
        raise RunLockedError(
            f"another run of {job_path} into {destination} is still going ({who}); "
            "this run did nothing. Wait for it, or stop it first."
        ) from None
    try:
        holder.write_text(f"pid {os.getpid()}")
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
