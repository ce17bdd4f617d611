"""What each table's last commit holds, kept in the lake: a refresh that changes nothing opens no catalog.

After a table's commit succeeded, the date → fingerprint map its properties now hold (read
back from the committed metadata) is written, with that metadata's location, to
`_apilake/tables/state/<table>.json` through the destination (a local folder or S3 alike). A
refresh first compares each table's planned fingerprints with it, and opens the catalog (and
imports pyiceberg, most of a no-op refresh's time) only for the tables with a difference.

Why this cache is safe: the table properties stay the truth, and the state can only make a
refresh skip a table, never build or commit anything. A table is skipped only when every
planned date's fingerprint equals the state's, i.e. the state's commit was built from exactly
the raw objects the lake holds now. The state is removed before each commit and written only
after the commit succeeded, so a crash in between leaves none; a missing, unreadable or
foreign state just means the catalog is consulted. With the default SQLite catalog, the
state's metadata location is also compared with the catalog's current one (one `SELECT`,
without pyiceberg), so a commit made by any other writer invalidates it. With a shared catalog
(Glue, REST, PostgreSQL) on a lake that two job files build at once, the state of the one that
wrote last wins; it was built from the raw objects it names, and a table whose raw objects
change again is rebuilt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from apilake.destinations import Destination
from apilake.errors import DestinationError
from apilake.tables.catalog import TABLES_PREFIX

STATE_PREFIX = f"{TABLES_PREFIX}state/"


def state_key(identifier: str) -> str:
    return f"{STATE_PREFIX}{identifier}.json"


async def read_states(dest: Destination, identifiers: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The readable states of these tables (a missing or damaged one is left out: not known)."""

    async def one(identifier: str) -> tuple[str, dict[str, Any] | None]:
        try:
            state = json.loads(await dest.read(state_key(identifier)))
        except (OSError, ValueError, KeyError, DestinationError):
            return identifier, None
        ok = isinstance(state, dict) and isinstance(state.get("fingerprints"), dict) and isinstance(state.get("location"), str)
        return identifier, state if ok else None

    found = await asyncio.gather(*(one(i) for i in identifiers))
    return {identifier: state for identifier, state in found if state is not None}


def sqlite_locations(uri: str, catalog_name: str) -> dict[str, str] | None:
    """Each table's current metadata location in a pyiceberg SQLite catalog (`namespace.table`
    → location), read with the standard library; None when it cannot be read (then the states
    are not trusted)."""
    path = uri.removeprefix("sqlite:///")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            rows = con.execute("SELECT table_namespace, table_name, metadata_location FROM iceberg_tables WHERE catalog_name = ?",
                               (catalog_name,)).fetchall()  # fmt: skip
    except sqlite3.Error:
        return None
    return {f"{namespace}.{name}": location for namespace, name, location in rows}


def unchanged(fingerprints: dict[str, str], state: dict[str, Any] | None) -> bool:
    """Whether the state (of the catalog's current commit: `tables.current_states`) says the
    table holds these dates built from these fingerprints."""
    if state is None:
        return False
    known = state["fingerprints"]
    return all(known.get(date) == fp for date, fp in fingerprints.items())


def summary_of(table: Any, prefix: str) -> dict[str, Any]:
    """What a committed pyiceberg table holds, as its state says it: its metadata location, date
    fingerprints and rows (what `apilake status` shows without opening the catalog)."""
    fingerprints = {k.removeprefix(prefix): v for k, v in table.properties.items() if k.startswith(prefix)}
    snapshot = table.current_snapshot()
    rows = int(snapshot.summary.additional_properties.get("total-records", 0)) if snapshot and snapshot.summary else 0
    return {"location": table.metadata_location, "fingerprints": fingerprints, "rows": rows}


def state_of(table: Any, prefix: str) -> bytes:
    """The state object of a committed pyiceberg table (`summary_of`)."""
    return json.dumps(summary_of(table, prefix), sort_keys=True).encode()
