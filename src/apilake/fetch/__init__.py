"""Fetching: HTTP clients per source, and the two kinds of endpoint (JSON pages, bulk files)."""

from __future__ import annotations

import logging

from apilake.destinations import Destination
from apilake.record import LandedObject, UnitResult

log = logging.getLogger("apilake")


async def skip_if_landed(dest: Destination, key: str, result: UnitResult, *, force: bool, recorded: int | None = None) -> bool:
    """Mark `result` skipped when `key` already landed: writes are atomic, so present means whole.

    `recorded` is the size the run records say landed there: an object of another size was
    changed since (or kept damaged by the store) and is landed again.
    """
    if force or (landed := await dest.stat(key)) is None:
        return False
    if recorded is not None and landed.size != recorded:
        log.warning("%s holds %d bytes but %d landed there: landing it again", key, landed.size, recorded)
        return False
    result.status = "skipped"
    result.objects.append(LandedObject(key, landed.size, landed.sha256))
    return True
