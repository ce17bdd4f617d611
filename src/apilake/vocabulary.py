"""The words run records are made of, as types: what kind of endpoint or result, what status.

Every module that plans, records or reads runs uses these, so a typo in a status is a type
error, not a unit that silently never counts. The strings are the ones written in run records
and job files: changing one is changing the record format.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

EndpointKind = Literal["json", "bulk", "file", "report"]  # a job file's `kind:`
ResultKind = Literal["json", "listing", "file"]  # a run record entry's `kind`: a bulk or report unit is a listing
UnitStatus = Literal["landed", "listed", "skipped", "failed", "not_attempted", "interrupted"]
RunStatus = Literal["running", "succeeded", "failed", "interrupted", "abandoned"]  # abandoned: told by `apilake status`, never written

UNIT_STATUSES: Final[tuple[UnitStatus, ...]] = get_args(UnitStatus)
RUN_STATUSES: Final[tuple[RunStatus, ...]] = get_args(RunStatus)
RESULT_KINDS: Final[tuple[ResultKind, ...]] = get_args(ResultKind)
DID_NOT_LAND: Final[tuple[UnitStatus, ...]] = ("failed", "not_attempted", "interrupted")  # the statuses a summary must name
THERE: Final[tuple[UnitStatus, ...]] = ("landed", "skipped")  # the unit's objects are in the destination


_RESULT_KINDS: Final[dict[EndpointKind, ResultKind]] = {"json": "json", "file": "file", "bulk": "listing", "report": "listing"}


def result_kind(kind: EndpointKind) -> ResultKind:
    """The record kind of an endpoint kind: `json` and `file` stay, a bulk or report unit is its `listing`."""
    return _RESULT_KINDS[kind]
