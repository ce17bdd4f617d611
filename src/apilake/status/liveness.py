"""Whether a run whose record says `running` is still going, or was abandoned (its process died).

A run holds its lease (S3) or its OS lock (this host) while it lives: when that is free, or the
lease names another run, nobody is finishing the record any more. A lock on another host only
that host can tell about.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

from apilake.destinations import Destination
from apilake.lease import is_live
from apilake.lease import parse as parse_lease
from apilake.lock import lock_is_free
from apilake.record import RunRecord
from apilake.vocabulary import RunStatus


def pid_alive(pid: int | None) -> bool:
    """Whether a process of this host is alive (True when unknown: a record without a pid)."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def run_state(dest: Destination, record: RunRecord) -> RunStatus:
    """A record's status, with `running` told apart from `abandoned`."""
    holder = record.holder
    if record.status != "running" or record.finished or holder is None:
        return record.status
    if holder.lease:
        found = await dest.read_versioned(holder.lease)
        doc = parse_lease(found.data) if found else None
        alive = doc is not None and doc.get("run_id") == record.run_id and is_live(doc, dt.datetime.now(dt.UTC))
        return "running" if alive else "abandoned"
    if holder.host == socket.gethostname() and holder.lock:
        return "abandoned" if lock_is_free(holder.lock) or not pid_alive(holder.pid) else "running"
    return record.status  # a lock on another host: only that host can tell
