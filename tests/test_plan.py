import datetime as dt
import json
import re

import pytest

from apilake.errors import JobFileError
from apilake.jobfile import Job
from apilake.plan import Unit, file_key, plan

D = dt.date(2026, 11, 25)


def job(**endpoint) -> Job:
    base = {"name": "hist", "kind": "json", "path": "/v1/{market}/{product_id}"}
    return Job.model_validate(
        {"sources": [{"name": "src", "base_url": "http://api.test/", "token": "t0k3n", "endpoints": [{**base, **endpoint}]}]}
    )


@pytest.mark.parametrize(
    "endpoint, dates, expected_ids",
    [
        ({"matrix": {"market": ["ios", "gp"], "product_id": [1]}}, [D], ["src/hist/2026-11-25/market=ios,product_id=1", "src/hist/2026-11-25/market=gp,product_id=1"]),
        ({"path": "/v1/x"}, [D, D + dt.timedelta(days=1)], ["src/hist/2026-11-25", "src/hist/2026-11-26"]),
        ({"path": "/v1/x", "lag": 2}, [D], ["src/hist/2026-11-23"]),
    ],
)
def test_units(endpoint: dict, dates: list, expected_ids: list) -> None:
    assert [u.id for u in plan(job(**endpoint), dates)] == expected_ids


def test_unit_renders_path_params_and_default_key() -> None:
    [unit] = plan(
        job(
            matrix={"market": ["ios"], "product_id": [284882215]},
            params={"countries": ["US", "FR"], "start_date": "{date-6}", "end_date": "{date}", "compact": "{date:%Y%m%d}"},
        ),
        [D],
    )
    assert unit.url == "http://api.test/v1/ios/284882215"
    assert unit.request_url == "http://api.test/v1/ios/284882215?countries=US+FR&start_date=2026-11-19&end_date=2026-11-25&compact=20261125"
    assert unit.key == "src/hist/dt=2026-11-25/market=ios,product_id=284882215.json"
    assert "t0k3n" not in json.dumps(unit.to_dict())


def test_unit_round_trips_through_json() -> None:
    [unit] = plan(job(matrix={"market": ["ios"], "product_id": [1]}, params={"a": "b"}), [D])
    assert Unit.from_dict(json.loads(json.dumps(unit.to_dict()))) == unit


def test_hostile_matrix_value_stays_inside_the_key_and_url_path() -> None:
    [unit] = plan(job(matrix={"market": ["../../etc"], "product_id": ["x/../../y"]}, key="{source}/{market}/{product_id}.json"), [D])
    assert unit.key == "src/..%2F..%2Fetc/x%2F..%2F..%2Fy.json"
    assert ".." not in unit.key.split("/")
    assert unit.url == "http://api.test/v1/..%2F..%2Fetc/x%2F..%2F..%2Fy"


def test_bulk_file_key_default_layout() -> None:
    [unit] = plan(job(kind="bulk", path="/v2/bulk/get-bulk-urls"), [D])
    url = "http://api.test/v2/bulk/data?name=dimensions/b/daily/2026-11-25/product_id.3.20261125.1.csv.gz&signature=x"
    assert file_key(unit, url) == "src/hist/dimensions/product_id/dt=2026-11-25/product_id.3.20261125.1.csv.gz"
    url = "http://api.test/v2/bulk/data?name=metrics/b/all/all/daily/2026-11-25/data.3.20261125.2.csv.gz&signature=x"
    assert file_key(unit, url) == "src/hist/metrics/dt=2026-11-25/data.3.20261125.2.csv.gz"


def test_bulk_custom_key_with_url_path() -> None:
    [unit] = plan(job(kind="bulk", path="/b", key="raw/{date:%Y%m%d}/{url_path}"), [D])
    assert file_key(unit, "http://x/d?name=metrics/a/b.csv.gz") == "raw/20261125/metrics/a/b.csv.gz"


def test_only_filters_and_rejects_unknown_names() -> None:
    assert plan(job(path="/x"), [D], only=["hist"])
    with pytest.raises(JobFileError, match="--only nope"):
        plan(job(path="/x"), [D], only=["nope"])


def test_ten_thousand_units_plan_quickly() -> None:
    big = job(matrix={"market": [f"m{i}" for i in range(100)], "product_id": list(range(100))})
    units = plan(big, [D])
    assert len(units) == 10_000
    assert len({u.key for u in units}) == 10_000


@pytest.mark.parametrize(
    "endpoint, dates, message",
    [
        ({"path": "/x", "key": "{source}/fixed.json"}, [D, D + dt.timedelta(days=1)], "would both land on key 'src/fixed.json'"),
        ({"matrix": {"market": [1, "1"], "product_id": [2]}}, [D], "two units are both"),
        ({"matrix": {"market": ["a/b", "a%2Fb"], "product_id": [2]}}, [D], None),  # escaping keeps them apart
    ],
)
def test_units_never_share_a_key(endpoint: dict, dates: list, message: str | None) -> None:
    if message is None:
        units = plan(job(**endpoint), dates)
        assert len({u.key for u in units}) == len(units)
    else:
        with pytest.raises(JobFileError, match=re.escape(message)):
            plan(job(**endpoint), dates)


def test_bulk_key_with_a_date_format_keeps_its_slashes() -> None:
    [unit] = plan(job(kind="bulk", path="/b", key="{file_date:%Y/%m/%d}/{file_name}"), [D])
    assert file_key(unit, "http://x/d?name=metrics/b/2026-11-24/f.csv.gz") == "2026/11/24/f.csv.gz"
