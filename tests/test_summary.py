"""The end-of-run summary: wall time per endpoint is first start to last end, not the sum of unit times."""

from __future__ import annotations

from apilake.record import LandedObject, UnitResult
from apilake.summary import summarize, wall_seconds


def result(unit: str, start: str, end: str, seconds: float, status: str = "landed") -> UnitResult:
    r = UnitResult(
        unit,
        "src",
        unit.split("/")[1],
        "2026-11-25",
        "json",
        status,
        seconds=seconds,  # type: ignore[arg-type]
        started=f"2026-11-26T00:00:{start}+00:00",
        finished=f"2026-11-26T00:00:{end}+00:00",
    )
    r.objects.append(LandedObject(f"{unit}.json", 100, None))
    return r


def test_wall_time_is_first_start_to_last_end_of_overlapping_units() -> None:
    # four units of one endpoint, running concurrently: 5.0 s of wall time, 17.0 s of unit time
    units = [
        result("src/a/1", "00.0", "04.0", 4.0),
        result("src/a/2", "00.5", "05.0", 4.5),
        result("src/a/3", "01.0", "05.0", 4.0),
        result("src/a/4", "00.0", "04.5", 4.5),
        result("src/b/1", "02.0", "03.0", 1.0),
    ]
    assert wall_seconds(units[:4]) == 5.0
    lines = summarize(units).splitlines()
    assert lines[0].split()[-5:] == ["wall", "time", "sum", "of", "unit", "times"][-5:]
    assert "wall time" in lines[0] and "sum of unit times" in lines[0]
    assert lines[1].split()[-2:] == ["5.0s", "17.0s"]
    assert lines[2].split()[-2:] == ["1.0s", "1.0s"]


def test_units_without_times_show_no_wall_time() -> None:
    untimed = UnitResult("src/a/1", "src", "a", "2026-11-25", "json", "not_attempted", error="quota")
    assert wall_seconds([untimed]) is None
    assert summarize([untimed]).splitlines()[1].split()[-2:] == ["-", "0.0s"]


def test_a_failed_unit_cannot_forge_a_summary_line() -> None:
    bad = UnitResult("s/bulk/2026-11-25/metrics/a\nFORGED", "s", "bulk", "2026-11-25", "file", "failed", error="cut\r\x1b[31m")
    text = summarize([bad])
    assert not any(line.startswith("FORGED") for line in text.splitlines())
    assert "a\\nFORGED: cut\\r\\x1b[31m" in text
