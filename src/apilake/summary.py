"""The end-of-run summary: one line per endpoint, then every unit that did not land."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from apilake.record import DID_NOT_LAND, UnitResult


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def summarize(results: Iterable[UnitResult]) -> str:
    per_endpoint: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    problems = []
    for r in results:
        counts = per_endpoint[f"{r.source}/{r.endpoint}"]
        if r.status == "listed":
            continue  # a listing is evidence, not an object: only its failure counts
        counts[r.status] += 1
        counts["bytes"] += r.bytes
        counts["seconds"] += r.seconds
        if r.status in DID_NOT_LAND:
            problems.append(r)
    rows = [["endpoint", "landed", "skipped", "failed", "not run", "bytes", "time"]]
    for name, c in sorted(per_endpoint.items()):
        rows.append(
            [
                name,
                str(int(c["landed"])),
                str(int(c["skipped"])),
                str(int(c["failed"])),
                str(int(c["not_attempted"] + c["interrupted"])),
                human_bytes(c["bytes"]),
                f"{c['seconds']:.1f}s",
            ]
        )
    text = table(rows)
    if problems:
        text += f"\n\n{len(problems)} unit(s) did not land:\n"
        text += "\n".join(f"  {p.status.upper()} {p.unit}: {p.error}" for p in problems)
    return text
