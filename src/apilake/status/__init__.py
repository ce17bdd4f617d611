"""`apilake status`: recent runs, the latest failures, and which dates of which endpoints are missing.

Four rooms: `gaps` is the pure gap model (expected units, evidence from the run records, the
grid of cells), `liveness` tells a running run from an abandoned one, `report` gathers the
evidence from the destination into one `StatusReport` (what `apilake status` prints and the
dashboard draws), and `text` renders it.
"""

from __future__ import annotations

from apilake.status.gaps import Attempt, Cell, Evidence, Gap, Problem, cells, expected_from_records, fill_commands, find_gaps
from apilake.status.report import StatusReport, build_report, inspect, tables_of, window
from apilake.status.text import RunSummary, render, summarize_run

__all__ = [
    "Attempt",
    "Cell",
    "Evidence",
    "Gap",
    "Problem",
    "RunSummary",
    "StatusReport",
    "build_report",
    "cells",
    "expected_from_records",
    "fill_commands",
    "find_gaps",
    "inspect",
    "render",
    "summarize_run",
    "tables_of",
    "window",
]
