"""NDJSON (JSON Lines): one JSON value a line, as some APIs answer and export."""

from __future__ import annotations

import json
from typing import Any


def ndjson_records(body: bytes) -> list[Any]:
    """The values of an NDJSON body, one a line (`\\n` or `\\r\\n`); blank lines, a trailing
    newline's included, hold none. A line that is not JSON raises `ValueError` naming it."""
    records = []
    for number, line in enumerate(body.split(b"\n"), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"line {number} is not JSON ({exc})") from None
    return records


def landed_page(body: bytes, fmt: str) -> Any:
    """A page as a fetch, cursors, fan-out and tables read it: a JSON page is its document, an NDJSON page
    (`format: ndjson`) the list of its records."""
    return ndjson_records(body) if fmt == "ndjson" else json.loads(body)
