"""`apilake status`: gap computation (pure), evidence from run records, and end to end on a real lake."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apilake.destinations.local import LocalDestination
from apilake.record import LandedObject, RunRecord, UnitResult, parse_record, write_record
from apilake.status import Gap, build_report, expected_from_records, fill_commands, find_gaps

APILAKE = Path(sys.executable).parent / "apilake"


@pytest.mark.parametrize(
    ("expected", "present", "gaps"),
    [
        ({}, set(), []),
        ({("s/a", "2026-11-20"): {"s/a/2026-11-20"}}, {"s/a/2026-11-20"}, []),
        (
            {("s/a", "2026-11-20"): {"s/a/2026-11-20"}, ("s/a", "2026-11-21"): {"s/a/2026-11-21"}},
            {"s/a/2026-11-20"},
            [Gap("s/a", "2026-11-21", ("s/a/2026-11-21",), 1)],
        ),
        (  # one matrix combination of two missing
            {("s/m", "2026-11-20"): {"s/m/2026-11-20/x=1", "s/m/2026-11-20/x=2"}},
            {"s/m/2026-11-20/x=1", "s/other/2026-11-20"},
            [Gap("s/m", "2026-11-20", ("s/m/2026-11-20/x=2",), 2)],
        ),
        (  # sorted by endpoint, then date; present units of other dates do not count
            {("s/b", "2026-11-21"): {"s/b/2026-11-21"}, ("s/a", "2026-11-22"): {"s/a/2026-11-20"}},
            {"s/b/2026-11-20"},
            [Gap("s/a", "2026-11-22", ("s/a/2026-11-20",), 1), Gap("s/b", "2026-11-21", ("s/b/2026-11-21",), 1)],
        ),
    ],
)
def test_find_gaps(expected: dict[tuple[str, str], set[str]], present: set[str], gaps: list[Gap]) -> None:
    assert find_gaps(expected, present) == gaps


def test_gap_data_date_and_fill_commands() -> None:
    lagged = Gap("s/a", "2026-11-22", ("s/a/2026-11-20",), 1)
    assert lagged.date == "2026-11-20"
    gaps = [lagged, Gap("s/a", "2026-11-25", ("s/a/2026-11-23",), 1), Gap("s/b", "2026-11-21", ("s/b/2026-11-21",), 1)]
    assert fill_commands(gaps, "job.yaml") == [
        "apilake run job.yaml --from 2026-11-22 --to 2026-11-25 --only a",
        "apilake run job.yaml --date 2026-11-21 --only b",
    ]


def unit(unit_id: str, kind: str, status: str = "landed", keys: tuple[str, ...] = (), **extra: object) -> UnitResult:
    source, endpoint, date = unit_id.split("/")[:3]
    return UnitResult(unit_id, source, endpoint, date, kind, status, objects=[LandedObject(k, 1, None) for k in keys], **extra)  # type: ignore[arg-type]


def record(run_id: str, dates: list[str], results: list[UnitResult]) -> RunRecord:
    started = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    return RunRecord(
        run_id=run_id,
        job="job.yaml",
        destination="lake",
        dates=dates,
        started=started,
        finished=started + dt.timedelta(seconds=3),
        status="succeeded",
        units=results,
        version="test",
    )


def test_expected_from_records_infers_combinations_and_lag() -> None:
    records = [
        record("1", ["2026-11-20"], [unit("s/m/2026-11-20/x=1", "json"), unit("s/m/2026-11-20/x=2", "json"), unit("s/late/2026-11-18", "listing")]),
    ]
    expected = expected_from_records(records, [dt.date(2026, 11, 21)])
    assert expected == {
        ("s/m", "2026-11-21"): {"s/m/2026-11-21/x=1", "s/m/2026-11-21/x=2"},
        ("s/late", "2026-11-21"): {"s/late/2026-11-19"},  # lag of 2 days, learnt from the record
    }


def test_bulk_date_counts_only_when_its_latest_listing_had_every_file(tmp_path: Path) -> None:
    """A lake written directly with record.py: listing + files, then a later listing missing a file."""
    dest = LocalDestination(tmp_path)
    listing = {"selected": 2}
    complete = [
        unit("s/bulk/2026-11-20", "listing", "listed", listing=listing),
        unit("s/bulk/2026-11-20/f/1.gz", "file", keys=("s/bulk/dt=2026-11-20/1.gz",)),
        unit("s/bulk/2026-11-20/f/2.gz", "file", "skipped", keys=("s/bulk/dt=2026-11-20/2.gz",)),
        unit("s/bulk/2026-11-21", "listing", "landed", listing=listing),  # as older records say
        unit("s/bulk/2026-11-21/f/1.gz", "file", keys=("s/bulk/dt=2026-11-21/1.gz",)),
        unit("s/bulk/2026-11-21/f/2.gz", "file", keys=("s/bulk/dt=2026-11-21/2.gz",)),
        unit("s/bulk/2026-11-22", "listing", "listed", listing=listing),
        unit("s/bulk/2026-11-22/f/1.gz", "file", keys=("s/bulk/dt=2026-11-22/1.gz",)),
        unit("s/bulk/2026-11-22/f/2.gz", "file", "failed"),
    ]
    dates = [dt.date(2026, 11, d) for d in (20, 21, 22)]

    async def scenario() -> list[Gap]:
        for d in (20, 21, 22):
            for n in (1, 2):
                await dest.put(f"s/bulk/dt=2026-11-{d}/{n}.gz", b"x")
        await write_record(dest, record("20261126T000000Z-aaaaaa", ["2026-11-20", "2026-11-21", "2026-11-22"], complete))
        (tmp_path / "s/bulk/dt=2026-11-21/2.gz").unlink()  # someone deleted a file after it landed
        return (await build_report(dest, None, dates)).gaps

    gaps = asyncio.run(scenario())
    # the 20th is whole (a skipped file counts); the 21st lost a file; the 22nd's listing had a failed file
    assert [(g.endpoint, g.run_date) for g in gaps] == [("s/bulk", "2026-11-21"), ("s/bulk", "2026-11-22")]


LISTING = "s/bulk/2026-11-20"


def bulk_run(files: dict[str, str], *, listing: str = "listed", selected: int | None = None) -> list[UnitResult]:
    """One run's entries for the bulk date: its listing, then each file (`name` → status) as recorded."""
    entries = [unit(LISTING, "listing", listing, listing={"selected": len(files) if selected is None else selected})]
    if listing != "listed":
        return entries
    for name, status in files.items():
        keys = (f"s/bulk/dt=2026-11-20/{name}",) if status in ("landed", "skipped") else ()
        entries.append(unit(f"{LISTING}/f/{name}", "file", status, keys))
    return entries


WHOLE = bulk_run({"1.gz": "landed", "2.gz": "landed"})


@pytest.mark.parametrize(
    ("runs", "present"),
    [
        ([WHOLE], True),
        # a forced rerun stopped by SIGTERM: the interrupted file's earlier landing still counts
        ([WHOLE, bulk_run({"1.gz": "landed", "2.gz": "interrupted"})], True),
        # a forced rerun whose file failed: the earlier, verified landing still counts
        ([WHOLE, bulk_run({"1.gz": "failed", "2.gz": "skipped"})], True),
        # the listing itself failed or was interrupted: it knows no files, the earlier listing decides
        ([WHOLE, bulk_run({}, listing="failed")], True),
        ([WHOLE, bulk_run({}, listing="interrupted")], True),
        # listed, but stopped before every selected file was recorded: not a complete listing
        ([WHOLE, bulk_run({"1.gz": "landed"}, selected=3)], True),
        # the vendor now lists a third file that never landed: the date is not whole
        ([WHOLE, bulk_run({"1.gz": "skipped", "2.gz": "skipped", "3.gz": "failed"})], False),
        ([WHOLE, bulk_run({"1.gz": "skipped", "2.gz": "skipped", "3.gz": "interrupted"})], False),
        # the vendor dropped a file: only the latest complete listing's files are expected
        ([bulk_run({"1.gz": "landed", "9.gz": "landed"}), bulk_run({"1.gz": "skipped"})], True),
        # never completed: an interrupted first run, a failed file, a run that stopped in the listing
        ([bulk_run({"1.gz": "landed", "2.gz": "interrupted"})], False),
        ([bulk_run({"1.gz": "landed", "2.gz": "failed"})], False),
        ([bulk_run({}, listing="interrupted")], False),
        # a later run landed what an earlier one left
        ([bulk_run({"1.gz": "landed", "2.gz": "failed"}), bulk_run({"1.gz": "skipped", "2.gz": "landed"})], True),
    ],
)
def test_a_bulk_date_counts_by_the_latest_complete_knowledge_of_its_listing_and_files(tmp_path: Path, runs: list[list[UnitResult]], present: bool) -> None:
    dest = LocalDestination(tmp_path)

    async def scenario() -> list[Gap]:
        for n in (1, 2, 3, 9):
            await dest.put(f"s/bulk/dt=2026-11-20/{n}.gz", b"x")
        for i, results in enumerate(runs):
            await write_record(dest, record(f"20261126T00000{i}Z-aaaaaa", ["2026-11-20"], results))
        return (await build_report(dest, None, [dt.date(2026, 11, 20)])).gaps

    assert (asyncio.run(scenario()) == []) is present


# ---------------------------------------------------------------------------------------------
# end to end: `apilake run` against the emulator, then `apilake status`


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from apilake.emulator import Emulator, EmulatorConfig

    root = tmp_path_factory.mktemp("status")
    job = root / "job.yaml"
    with Emulator(EmulatorConfig(file_size=2048, metric_files=1)) as emu:
        job.write_text(
            f"timezone: Asia/Seoul\ndestination: {root / 'lake'}\n"
            f"sources:\n  - name: dataai\n    base_url: {emu.api_url}\n    token: {emu.config.token}\n    endpoints:\n"
            "      - {name: countries, kind: json, path: /v1.3/meta/countries}\n"
            "      - name: app_history\n        kind: json\n        path: /v1.3/intelligence/apps/{market}/app/{product_id}/history\n"
            "        params: {countries: US, start_date: '{date}', end_date: '{date}'}\n"
            "        matrix: {market: [ios, google-play], product_id: [284882215]}\n        paginate: next_page\n"
            "      - name: bulk_daily\n        kind: bulk\n        path: /v2/bulk/get-bulk-urls\n"
            "        params: {metric_bundles: app_downloads, country_codes: all, granularity: daily, start_date: '{date}', end_date: '{date}'}\n"
        )
        run = subprocess.run([str(APILAKE), "run", str(job), "--from", "2026-11-20", "--to", "2026-11-22"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return job, root / "lake"


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(APILAKE), "status", *args, "--from", "2026-11-20", "--to", "2026-11-22"], capture_output=True, text=True, timeout=60)


def test_status_of_a_whole_lake_exits_0(lake: tuple[Path, Path]) -> None:
    job, _root = lake
    result = status(str(job))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    assert "gaps for run dates 2026-11-20..2026-11-22" in result.stdout
    assert "none: all 12 expected unit(s) are in the destination" in result.stdout  # (1 + 2 + 1) units x 3 dates


def test_status_names_the_endpoint_and_date_of_a_gap(lake: tuple[Path, Path], tmp_path: Path) -> None:
    job, root = lake
    copy = tmp_path / "lake"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "dataai" / "countries" / "dt=2026-11-21")  # one date of one JSON endpoint
    metric = next((copy / "dataai" / "bulk_daily" / "metrics" / "dt=2026-11-22").iterdir())
    metric.unlink()  # one file of one bulk date

    with_job = status(str(job), "--dest", str(copy))
    assert with_job.returncode == 1, with_job.stdout + with_job.stderr
    assert "dataai/countries: missing 2026-11-21" in with_job.stdout
    assert "dataai/bulk_daily: missing 2026-11-22" in with_job.stdout
    assert "app_history" not in with_job.stdout.split("gaps for run dates")[1]
    assert f"apilake run {job} --date 2026-11-21 --only countries" in with_job.stdout

    records_only = status("--dest", str(copy))
    assert records_only.returncode == 1
    assert "dataai/countries: missing 2026-11-21" in records_only.stdout
    assert "dataai/bulk_daily: missing 2026-11-22" in records_only.stdout


def test_status_without_records_or_job_is_a_usage_error(tmp_path: Path) -> None:
    result = status("--dest", str(tmp_path))
    assert result.returncode == 2
    assert "no run records" in result.stderr


def test_status_text_does_not_count_dates_not_yet_due_as_there() -> None:
    from apilake.status import Cell, StatusReport, render

    cells = [Cell("s/e", "2026-11-25", ("a",), ("a",), True), Cell("s/e", "2026-11-26", ("b",), (), False)]
    report = StatusReport("./lake", [], [dt.date(2026, 11, 25), dt.date(2026, 11, 26)], {("s/e", "2026-11-25"): {"a"}, ("s/e", "2026-11-26"): {"b"}}, [], cells)
    text = render(report, runs=5, job_path="job.yaml", timezone="UTC")
    assert "none: all 1 expected unit(s) are in the destination (1 not yet due)" in text
    assert [c.state for c in cells] == ["landed", "not yet due"]


def test_landed_sizes_take_the_latest_landing_of_the_run_s_units_only() -> None:
    from apilake.record import landed_sizes

    def unit(unit_id: str, status: str, key: str, size: int) -> dict[str, object]:
        source, endpoint, date = unit_id.split("/")[:3]
        return {
            "unit": unit_id,
            "source": source,
            "endpoint": endpoint,
            "date": date,
            "kind": "json",
            "status": status,
            "objects": [{"key": key, "bytes": size, "sha256": None}],
        }

    listing = "dataai/bulk/2026-11-25"
    records = [
        parse_record({"run_id": str(i), "status": "succeeded", "units": units})
        for i, units in enumerate(
            [
                [unit("dataai/a/2026-11-25", "landed", "a.json", 10), unit(f"{listing}/metrics/x.csv.gz", "landed", "x.csv.gz", 7)],
                [
                    unit("dataai/a/2026-11-25", "landed", "a.json", 12),  # a later landing wins
                    unit("dataai/a/2026-11-25", "skipped", "a.json", 99),  # a skip only saw what was there
                    unit("dataai/b/2026-11-25", "landed", "b.json", 5),
                ],
            ]
        )
    ]
    assert landed_sizes(records) == {"a.json": 12, "x.csv.gz": 7, "b.json": 5}
    assert landed_sizes(records, {"dataai/a/2026-11-25", listing}) == {"a.json": 12, "x.csv.gz": 7}
    assert landed_sizes(records, {"dataai/a/2026-11"}) == {}  # a prefix of an id is not the unit


def test_status_text_escapes_unit_ids_a_vendor_made() -> None:
    """A fan-out child's id holds a value from the vendor's pages: a newline or a terminal code in
    it is shown escaped, never as a line or a command of its own."""
    from apilake.status import StatusReport, render

    hostile = "s/child/2026-11-25/app=1\nFORGED \x1b[2J"
    expected = {("s/child", "2026-11-25"): {hostile, "s/child/2026-11-25/app=2"}}
    report = StatusReport("./lake", [], [dt.date(2026, 11, 25)], expected, find_gaps(expected, {"s/child/2026-11-25/app=2"}))
    text = render(report, runs=5, job_path="job.yaml", timezone="UTC")
    assert "app=1\\nFORGED \\x1b[2J" in text
    assert "\x1b" not in text and not any(line.startswith("FORGED") for line in text.splitlines())
