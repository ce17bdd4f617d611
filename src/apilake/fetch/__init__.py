"""Fetching: HTTP clients per source, and the two kinds of endpoint (JSON pages, bulk files)."""

from __future__ import annotations

from typing import Any

import jmespath

from apilake.destinations import Destination
from apilake.record import LandedObject, UnitResult


async def skip_if_landed(dest: Destination, key: str, result: UnitResult, *, force: bool) -> bool:
    """Mark `result` skipped when `key` already landed: writes are atomic, so present means whole."""
    if force or (landed := await dest.stat(key)) is None:
        return False
    result.status = "skipped"
    result.objects.append(LandedObject(key, landed.size, landed.sha256))
    return True


def dig(doc: Any, path: str | None) -> Any:
    """The value at a JMESPath (`data.urls`, `links.next`, `accounts[].id`) in a parsed body, or None."""
    return jmespath.search(path, doc) if path else None
