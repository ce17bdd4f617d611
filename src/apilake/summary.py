"""The end-of-run summary: one line per endpoint, then every unit that did not land.

`wall time` is an endpoint's first unit start to its last unit end (what a person waited);
`sum of unit times` adds the units' own times, which overlap when units run concurrently.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

from apilake.printable import printable
from apilake.record import UnitResult
from apilake.sizes import human_bytes
from apilake.vocabulary import DID_NOT_LAND


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def wall_seconds(units: Iterable[UnitResult]) -> float | None:
    """First start to last end of some units; None if none is timed.

    Units run concurrently, so this is what a person waited, unlike the sum of the units' own times.
    """
    starts, ends = [], []
    for unit in units:
        if unit.started and unit.finished:
            starts.append(dt.datetime.fromisoformat(unit.started))
            ends.append(dt.datetime.fromisoformat(unit.finished))
    return (max(ends) - min(starts)).total_seconds() if starts else None


def summarize(results: Iterable[UnitResult]) -> str:
    per_endpoint: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    timed: dict[str, list[UnitResult]] = defaultdict(list)
    problems = []
    for r in results:
        counts = per_endpoint[f"{r.source}/{r.endpoint}"]
        timed[f"{r.source}/{r.endpoint}"].append(r)
        if r.status == "listed":
            continue  # a listing is evidence, not an object: only its failure counts
        counts[r.status] += 1
        counts["bytes"] += r.bytes
        counts["seconds"] += r.seconds
        if r.status in DID_NOT_LAND:
            problems.append(r)
    rows = [["endpoint", "landed", "skipped", "failed", "not run", "bytes", "wall time", "sum of unit times"]]
    for name, c in sorted(per_endpoint.items()):
        wall = wall_seconds(timed[name])
        rows.append(
            [
                name,
                str(int(c["landed"])),
                str(int(c["skipped"])),
                str(int(c["failed"])),
                str(int(c["not_attempted"] + c["interrupted"])),
                human_bytes(c["bytes"]),
                "-" if wall is None else f"{wall:.1f}s",
                f"{c['seconds']:.1f}s",
            ]
        )
    text = table(rows)
    if problems:
        text += f"\n\n{len(problems)} unit(s) did not land:\n"
        text += "\n".join(printable(f"  {p.status.upper()} {p.unit}: {p.error}") for p in problems)
    return text
