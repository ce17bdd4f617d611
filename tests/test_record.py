"""Run records: each unit's entry, and the document as written to the destination."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from apilake.destinations.local import LocalDestination
from apilake.record import LandedObject, RunRecord, UnitResult, parse_record, record_key, write_record

RESULTS = [
    UnitResult("s/e/2026-11-25/a", "s", "e", "2026-11-25", "file", "landed", url="http://x/a",
               objects=[LandedObject("k/a.csv.gz", 3, None, 200, 1, 0.5, "crc32c:0000abcd")], http={"200": 1}, requests=1),
    UnitResult("s/e/2026-11-25", "s", "e", "2026-11-25", "listing", "listed", listing={"urls": ["http://x/a"], "selected": 1}),
    UnitResult("s/j/2026-11-25", "s", "j", "2026-11-25", "json", "failed", error='HTTP 500 "quoted"\nnext line'),
]  # fmt: skip


def test_an_entry_is_what_asdict_gives() -> None:
    assert [r.entry() for r in RESULTS] == [asdict(r) for r in RESULTS]


@pytest.mark.parametrize("results", [RESULTS, []], ids=["units", "no units yet"])
def test_the_written_record_reads_back_as_the_document(tmp_path: Path, results: list[UnitResult]) -> None:
    started = dt.datetime(2026, 11, 26, 3, 0, tzinfo=dt.UTC)
    record = RunRecord(run_id="r1", job="job.yaml", destination=str(tmp_path), dates=["2026-11-25"], started=started,
                       finished=None, status="running", units=results, version="0")  # fmt: skip
    asyncio.run(write_record(LocalDestination(tmp_path), record))
    text = (tmp_path / record_key("r1")).read_text()
    assert json.loads(text) == json.loads(json.dumps(record.document()))
    assert len(text.splitlines()) == len(results) + 2  # one line per unit (for grep and diff), then "]}"
    assert parse_record(json.loads(text)) == record  # the one parser every reader uses gives back what was written
