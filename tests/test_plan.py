import datetime as dt
import json
import math
import re
import time

import pytest

from apilake.errors import JobFileError
from apilake.jobfile import Job
from apilake.plan import Unit, file_key, owned_prefixes, plan

D = dt.date(2026, 11, 25)


def job(**endpoint) -> Job:
    base = {"name": "hist", "kind": "json", "path": "/v1/{market}/{product_id}"}
    return Job.model_validate({"sources": [{"name": "src", "base_url": "http://api.test/", "token": "t0k3n", "endpoints": [{**base, **endpoint}]}]})


@pytest.mark.parametrize(
    "endpoint, dates, expected_ids",
    [
        (
            {"matrix": {"market": ["ios", "gp"], "product_id": [1]}},
            [D],
            ["src/hist/2026-11-25/market=ios,product_id=1", "src/hist/2026-11-25/market=gp,product_id=1"],
        ),
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


@pytest.mark.parametrize("value, encoded", [(".", "%2E"), ("..", "%2E%2E")])
def test_dot_values_are_encoded_in_the_url_path_and_the_key(value: str, encoded: str) -> None:
    [unit] = plan(job(matrix={"market": [value], "product_id": [1]}, key="{source}/{market}/{product_id}.json"), [D])
    assert unit.url == f"http://api.test/v1/{encoded}/1"
    assert unit.key == f"src/{encoded}/1.json"


def test_a_key_that_is_another_endpoints_page_2_is_refused() -> None:
    endpoints = [
        {"name": "a", "kind": "json", "path": "/a", "key": "{source}/x/{date}.json", "paginate": "next_page"},
        {"name": "b", "kind": "json", "path": "/b", "key": "{source}/x/{date}.page-0002.json"},
    ]
    two = Job.model_validate({"sources": [{"name": "src", "base_url": "http://api.test/", "endpoints": endpoints}]})
    with pytest.raises(JobFileError, match=re.escape("page 2 of 'src/a/2026-11-25' (src/a) lands on key 'src/x/2026-11-25.page-0002.json'")):
        plan(two, [D])
    assert len(plan(two, [D], only=["b"])) == 1  # each alone is fine


def test_bulk_file_key_default_layout() -> None:
    [unit] = plan(job(kind="bulk", path="/v2/bulk/get-bulk-urls"), [D])
    url = "http://api.test/v2/bulk/data?name=dimensions/b/daily/2026-11-25/product_id.3.20261125.1.csv.gz&signature=x"
    assert file_key(unit, url) == "src/hist/dimensions/product_id/dt=2026-11-25/product_id.3.20261125.1.csv.gz"
    url = "http://api.test/v2/bulk/data?name=metrics/b/all/all/daily/2026-11-25/data.3.20261125.2.csv.gz&signature=x"
    assert file_key(unit, url) == "src/hist/metrics/dt=2026-11-25/data.3.20261125.2.csv.gz"


def test_bulk_custom_key_with_url_path() -> None:
    [unit] = plan(job(kind="bulk", path="/b", key="raw/{date:%Y%m%d}/{url_path}"), [D])
    assert file_key(unit, "http://x/d?name=metrics/a/b.csv.gz") == "raw/20261125/metrics/a/b.csv.gz"


def two_sources() -> Job:
    endpoints = {"src": ["hist", "daily"], "other": ["extra"]}
    return Job.model_validate({"sources": [
        {"name": source, "base_url": "http://api.test/", "endpoints": [{"name": e, "kind": "json", "path": f"/{e}"} for e in names]}
        for source, names in endpoints.items()
    ]})  # fmt: skip


@pytest.mark.parametrize(
    "only, expected",
    [
        ([], [("src", "hist"), ("src", "daily"), ("other", "extra")]),
        (["daily"], [("src", "daily")]),  # an endpoint
        (["other"], [("other", "extra")]),  # a source: all its endpoints
        (["extra", "hist"], [("src", "hist"), ("other", "extra")]),  # in the job's order
    ],
)
def test_only_selects_endpoints_and_sources(only: list[str], expected: list[tuple[str, str]]) -> None:
    assert [(u.source, u.endpoint) for u in plan(two_sources(), [D], only=only)] == expected


def test_only_rejects_unknown_names() -> None:
    with pytest.raises(JobFileError, match=r"--only nope: no endpoint or source of that name \(known: daily, extra, hist, other, src\)"):
        plan(two_sources(), [D], only=["hist", "nope"])


def test_planning_time_grows_linearly_with_the_units() -> None:
    """Twenty times the units plan in about twenty times the CPU time (other processes do not count):
    no step of planning, such as the key collision check, compares each unit with every other."""

    def cpu_seconds(markets: int) -> float:
        big = job(matrix={"market": [f"m{i}" for i in range(markets)], "product_id": list(range(100))})
        best = math.inf
        for _ in range(2):
            started = time.process_time()
            units = plan(big, [D])
            best = min(best, time.process_time() - started)
        assert len({u.key for u in units}) == len(units) == markets * 100
        return best

    small, large = cpu_seconds(5), cpu_seconds(100)
    assert large < 50 * small, f"500 units plan in {small:.3f} s, 10,000 in {large:.3f} s"


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


def fan_out_job(**child: object) -> Job:
    endpoints = [
        {"name": "accounts", "kind": "json", "path": "/accounts"},
        {
            "name": "products",
            "kind": "json",
            "path": "/accounts/{account_id}/products",
            "matrix": {"market": ["ios", "gp"]},
            "for_each": {"endpoint": "accounts", "values": "accounts[].id", "as": "account_id"},
            **child,
        },
    ]
    return Job.model_validate({"sources": [{"name": "src", "base_url": "http://api.test", "endpoints": endpoints}]})


@pytest.mark.parametrize(
    "pages, ids",
    [
        (
            [{"accounts": [{"id": "a1"}, {"id": "a2"}]}, {"accounts": [{"id": "a1"}, {"id": 3}]}],
            ["a1,market=ios", "a1,market=gp", "a2,market=ios", "a2,market=gp", "3,market=ios", "3,market=gp"],
        ),
        ([{"accounts": []}], []),
        ([{"accounts": [{"id": None}, {"id": {"nested": 1}}, {"name": "no id"}]}], []),
        ([{"other": 1}], []),
    ],
)
def test_children_come_from_every_parent_page_deduplicated(pages: list, ids: list) -> None:
    from apilake.plan import expand_children

    j = fan_out_job()
    units = expand_children(j.sources[0], j.sources[0].endpoints[1], D, pages)
    assert [u.id.removeprefix("src/products/2026-11-25/account_id=") for u in units] == ids
    if units:
        assert units[0].url == "http://api.test/accounts/a1/products"
        assert units[0].key == "src/products/dt=2026-11-25/account_id=a1,market=ios.json"


def test_plan_leaves_children_to_their_parents_and_only_selects_parents_too() -> None:
    from apilake.plan import pending_children

    j = fan_out_job()
    assert [u.endpoint for u in plan(j, [D])] == ["accounts"]
    assert [u.endpoint for u in plan(j, [D], only=["products"])] == ["accounts"]  # the child needs its parent
    assert pending_children(j, [D], only=["accounts"]) == []
    [line] = pending_children(j, [D])
    assert line.startswith("src/products/2026-11-25\n    pending: one unit per accounts[].id in src/accounts/2026-11-25")


def test_post_body_placeholders_are_rendered_into_json() -> None:
    [unit] = plan(job(path="/search", method="POST", body={"range": ["{date-1}", "{date}"], "n": 5, "q": "{{x}}"}), [D])
    assert unit.method == "POST"
    assert json.loads(unit.body) == {"range": ["2026-11-24", "2026-11-25"], "n": 5, "q": "{x}"}


@pytest.mark.parametrize(
    "path, key",
    [
        ("/export.csv", "src/hist/dt=2026-11-25/data.csv"),
        ("/export.csv.gz", "src/hist/dt=2026-11-25/data.csv.gz"),
        ("/download", "src/hist/dt=2026-11-25/data"),
    ],
)
def test_file_endpoint_default_key_keeps_the_extension(path: str, key: str) -> None:
    [unit] = plan(job(kind="file", path=path), [D])
    assert unit.key == key and unit.kind == "file"


def two_endpoint_job(*keys: str | None) -> Job:
    endpoints = [{"name": f"e{i}", "kind": "bulk" if i else "json", "path": "/x", **({"key": k} if k else {})} for i, k in enumerate(keys)]
    return Job.model_validate({"sources": [{"name": "src", "base_url": "http://api.test/", "endpoints": endpoints}]})


@pytest.mark.parametrize(
    "keys, only, prefixes",
    [
        ((None, None), (), ["src/e0/", "src/e1/"]),  # the default layouts: source/endpoint/...
        ((None, None), ("e1",), ["src/e1/"]),  # --only: the endpoints the run writes
        (("{source}/{endpoint}/{date:%Y/%m}/x.json", "raw/{source}/{file_name}"), (), ["raw/src/", "src/e0/"]),
        (("lake/{endpoint}-{date}.json", "lake/{endpoint}/{file_name}"), (), ["lake/"]),  # nested: the outer owns both
        (("{date}/{source}.json", None), (), [""]),  # a template that starts with the date owns everything
        (("flat-{date}.json", None), (), [""]),  # no folder before the first varying part
        (("a//b/./{date}.json", None), (), ["a/b/", "src/e1/"]),  # as sanitize_key makes the keys
    ],
)
def test_owned_prefixes(keys: tuple[str | None, ...], only: tuple[str, ...], prefixes: list[str]) -> None:
    assert owned_prefixes(two_endpoint_job(*keys), only) == prefixes


def test_owned_prefixes_of_a_fan_out_child_and_its_parent() -> None:
    assert owned_prefixes(fan_out_job(), ("products",)) == ["src/accounts/", "src/products/"]
