"""Fan-out bookkeeping: children become ready when every parent unit of their date has finished."""

from __future__ import annotations

import datetime as dt

from apilake.executors.fanout import FanOut
from apilake.jobfile import Job
from apilake.plan import expand_children, plan
from apilake.record import UnitResult

D = dt.date(2026, 11, 25)


def job() -> Job:
    endpoints = [
        {"name": "accounts", "kind": "json", "path": "/accounts", "matrix": {"region": ["eu", "us"]}},
        {"name": "products", "kind": "json", "path": "/a/{account_id}", "for_each": {"endpoint": "accounts", "values": "ids[]", "as": "account_id"}},
        {"name": "stats", "kind": "json", "path": "/p/{product_id}", "for_each": {"endpoint": "products", "values": "ids[]", "as": "product_id"}},
        {"name": "other", "kind": "json", "path": "/other"},
    ]
    return Job.model_validate({"sources": [{"name": "s", "base_url": "http://api.test", "endpoints": endpoints}]})


def result(unit_id: str, status: str = "landed") -> UnitResult:
    return UnitResult(unit_id, "s", unit_id.split("/")[1], "2026-11-25", "json", status)  # type: ignore[arg-type]


def test_children_wait_for_every_parent_unit_of_the_date() -> None:
    j = job()
    units = plan(j, [D, D + dt.timedelta(days=1)])
    fan = FanOut(j)
    fan.expect(units)
    eu, us, eu2, _us2, other, _other2 = sorted(units, key=lambda u: (u.endpoint, u.date))
    assert fan.finished(other, result(other.id)) == []  # not a parent
    assert fan.finished(eu, result(eu.id)) == []  # the other region of that date is still running
    assert fan.finished(eu2, result(eu2.id)) == []  # another date
    [ready] = fan.finished(us, result(us.id, "failed"))
    assert (ready.child.name, ready.run_date, [r.status for r in ready.parents]) == ("products", D, ["landed", "failed"])
    assert [e.name for _, e in fan.descendants("s", "accounts")] == ["products", "stats"]


def test_grandchildren_wait_for_the_children_and_no_children_means_ready_at_once() -> None:
    j = job()
    source, products = j.sources[0], j.sources[0].endpoints[1]
    fan = FanOut(j)
    children = expand_children(source, products, D, [{"ids": ["a1", "a2"]}])
    assert fan.expect(children, source="s", endpoint="products", run_date=D.isoformat()) == []
    assert fan.finished(children[0], result(children[0].id)) == []
    [ready] = fan.finished(children[1], result(children[1].id))
    assert ready.child.name == "stats" and len(ready.parents) == 2
    [empty] = fan.expect([], source="s", endpoint="products", run_date=D.isoformat())
    assert empty.child.name == "stats" and empty.parents == ()


def test_only_selects_which_children_run() -> None:
    assert [e.name for _, e in FanOut(job(), only=["products"]).descendants("s", "accounts")] == ["products"]
    assert FanOut(job(), only=["accounts"]).descendants("s", "accounts") == []
