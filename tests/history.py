"""A lake with a known history, built by real `apilake run`s against the emulator with faults.

Run dates relative to yesterday Y in the job's zone (Asia/Seoul):

| run date | details (2 units: ios, google-play)   | countries (1 unit) |
|----------|----------------------------------------|--------------------|
| Y-3      | landed (ios after one 429)             | landed             |
| Y-2      | failed: 400 echoing the token, twice   | landed             |
| Y-1      | partly landed: ios 404, google-play ok | landed             |
| Y        | missing: never run                     | missing            |
| Y+1      | not yet due (today)                    | not yet due        |
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from apilake.emulator import Emulator, Fault
from conftest import run_cli, write_job

ZONE = "Asia/Seoul"
DETAILS = {
    "name": "details",
    "kind": "json",
    "path": "/v1.3/apps/{market}/app/{product_id}/details",
    "params": {"start_date": "{date}"},
    "matrix": {"market": ["ios", "google-play"], "product_id": [1]},
}
COUNTRIES = {"name": "countries", "kind": "json", "path": "/v1.3/meta/countries", "params": {"start_date": "{date}"}}


@dataclass(frozen=True)
class History:
    job: Path
    lake: Path
    dates: list[str]  # Y-3 .. Y+1

    @property
    def expected_states(self) -> dict[tuple[str, str], str]:
        landed, failed, partly, missing, future = self.dates
        return {
            ("dataai/details", landed): "landed",
            ("dataai/countries", landed): "landed",
            ("dataai/details", failed): "failed",
            ("dataai/countries", failed): "landed",
            ("dataai/details", partly): "partly landed",
            ("dataai/countries", partly): "landed",
            ("dataai/details", missing): "missing",
            ("dataai/countries", missing): "missing",
            ("dataai/details", future): "not yet due",
            ("dataai/countries", future): "not yet due",
        }


def yesterday() -> dt.date:
    return dt.datetime.now(ZoneInfo(ZONE)).date() - dt.timedelta(days=1)


def build(tmp_path: Path, emulator: Emulator, **top: object) -> History:
    y = yesterday()
    dates = [(y + dt.timedelta(days=d)).isoformat() for d in (-3, -2, -1, 0, 1)]
    job = write_job(tmp_path, emulator, [DETAILS, COUNTRIES], **top)
    landed, failed, partly = dates[:3]
    emulator.config.faults = [
        Fault(match=f"apps/ios/app/1/details\\?start_date={landed}", kind="status", status=429, retry_after="0", times=1),
        Fault(match=f"details\\?start_date={failed}", kind="echo_secret", status=400),
        Fault(match=f"apps/ios/app/1/details\\?start_date={partly}", kind="status", status=404),
    ]
    for date, code in ((landed, 0), (failed, 1), (partly, 1)):
        result = run_cli("run", str(job), "--date", date)
        assert result.returncode == code, result.stderr
    emulator.config.faults = []
    return History(job, tmp_path / "lake", dates)
