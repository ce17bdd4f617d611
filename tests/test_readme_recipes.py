"""Every complete job file in the manual's Recipes page (docs/recipes.md) plans what its text says:
the units of a run date (their requests and keys) and, for a fan-out, the children a parent's
page gives. A recipe added to the page needs its expectation here."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest

from apilake.incremental import Wanted, Window, window_for, window_key
from apilake.jobfile import Job, load_job
from apilake.plan import children, expand_children, incremental_children, incremental_units, plan

RECIPES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
# A recipe is the bold title before its ```yaml block.
RECIPES = dict(re.findall(r"^\*\*(.+?)\*\*.*?```yaml\n(.*?)```", RECIPES_PAGE.read_text(), re.S | re.M))
DATE = dt.date(2026, 11, 25)
OPENED = dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.UTC)  # when a first run opens its incremental windows

Planned = list[tuple[str, str, str]]  # (unit id, request URL, key)
Fanned = dict[str, tuple[Any, list[str]]]  # child endpoint → (a page of its parent, the child's request URLs)

EXPECTED: dict[str, tuple[Planned, Fanned]] = {
    "Link-header paging, like GitHub's REST API": ([
        ("github/issues/2026-11-25/owner=octo-org,repo=api", "https://api.github.com/repos/octo-org/api/issues?state=all&since=2026-11-25T00:00:00Z&per_page=100",
         "github/issues/dt=2026-11-25/octo-org/api.json"),
        ("github/issues/2026-11-25/owner=octo-org,repo=web", "https://api.github.com/repos/octo-org/web/issues?state=all&since=2026-11-25T00:00:00Z&per_page=100",
         "github/issues/dt=2026-11-25/octo-org/web.json"),
    ], {}),
    "Cursor paging, like Stripe's `starting_after`": (
        [("stripe/charges/2026-11-25", "https://api.stripe.com/v1/charges?limit=100", "stripe/charges/dt=2026-11-25/data.json")], {},
    ),
    "Incremental, like GitHub's `since`: only the issues changed since the last run": (
        [("github/repos/2026-11-25", "https://api.github.com/orgs/acme/repos?per_page=100", "github/repos/dt=2026-11-25/data.json")],
        {"issues": ([{"name": "api"}, {"name": "web"}], [  # one cursor per repository, each from initial_value on a first run
            "https://api.github.com/repos/acme/api/issues?state=all&sort=updated&direction=asc&per_page=100&since=2026-01-01T00:00:00Z",
            "https://api.github.com/repos/acme/web/issues?state=all&sort=updated&direction=asc&per_page=100&since=2026-01-01T00:00:00Z",
        ])},
    ),
    "Incremental, like Stripe's `created[gte]`: the charges created since the last run": ([(
        "stripe/charges/2026-11-25", "https://api.stripe.com/v1/charges?limit=100&created%5Bgte%5D=1767225600",
        "stripe/charges/dt=2026-11-25/cursor=1767225600/data.json",
    )], {}),
    "A Zendesk-style incremental export: the window in a POST body": ([(
        "zendesk/tickets/2026-11-25", "https://acme.zendesk.com/api/v2/incremental/tickets",
        "zendesk/tickets/dt=2026-11-25/cursor=1767225600/data.json",
    )], {}),
    "An OAuth2 reporting API": (
        [("adnet/installs/2026-11-25", "https://api.adnet.example/v2/reports", "{source}/{endpoint}/dt={date}/{file_name}")], {},
    ),
    "Rotating OAuth2 refresh tokens, like Xero's": (
        [("xero/invoices/2026-11-25", "https://api.xero.com/api.xro/2.0/Invoices?page=1", "xero/invoices/dt=2026-11-25/data.json")], {},
    ),
    "Parent → child fan-out": (
        [("ads/accounts/2026-11-25", "https://api.ads.example/v1/accounts", "ads/accounts/dt=2026-11-25/data.json")],
        {
            "campaigns": ({"data": [{"id": "a1"}, {"id": "a2"}]}, ["https://api.ads.example/v1/accounts/a1/campaigns?offset=0&limit=200",
                                                                   "https://api.ads.example/v1/accounts/a2/campaigns?offset=0&limit=200"]),
            "campaign_stats": ({"data": [{"id": "c1", "status": "active"}, {"id": "c2", "status": "paused"}]},
                               ["https://api.ads.example/v1/campaigns/c1/stats?date=2026-11-25&breakdown=country+platform"]),
        },
    ),
    "Tables from data.ai's bulk files": ([(
        "dataai/bulk_daily/2026-11-25",
        "https://api.data.ai/v2/bulk/get-bulk-urls?metric_bundles=app_downloads&granularity=daily&start_date=2026-11-25&end_date=2026-11-25",
        "{source}/{endpoint}/{file_kind}/{dimension}/dt={file_date}/{file_name}",
    )], {}),
    "Tables from a Stripe-style list, a fan-out and a report": (
        [
            ("acme/items/2026-11-25", "https://api.acme.example/items/starting_after?limit=10", "acme/items/dt=2026-11-25/data.json"),
            ("acme/accounts/2026-11-25", "https://api.acme.example/accounts", "acme/accounts/dt=2026-11-25/data.json"),
            ("acme/installs/2026-11-25", "https://api.acme.example/reports", "{source}/{endpoint}/{file_kind}/{dimension}/dt={file_date}/{file_name}"),
        ],
        {
            "products": ({"accounts": [{"id": "ac1"}]}, ["https://api.acme.example/accounts/ac1/products"]),
            "stats": ({"products": [{"id": "p1"}, {"id": "p2"}]}, ["https://api.acme.example/products/p1/stats?date=2026-11-25",
                                                                  "https://api.acme.example/products/p2/stats?date=2026-11-25"]),
        },
    ),
    "An API that reports its limits in headers": ([
        ("metrics/items/2026-11-25", "https://api.metrics.example/v2/limited/items?page=1", "metrics/items/dt=2026-11-25/data.json"),
        *((f"metrics/figures/2026-11-25/account={a}", f"https://api.metrics.example/v2/feedback/{a}?date=2026-11-25",
           f"metrics/figures/dt=2026-11-25/{a}.json") for a in ("a1", "empty", "throttled")),
    ], {}),
}  # fmt: skip
# The window of a recipe whose request sends it in the body: each planned unit's body, as numbers for a number cursor
# (from initial_value 2026-01-01T00:00Z to OPENED, 2026-11-26T06:00Z).
BODIES: dict[str, list[str | None]] = {
    "A Zendesk-style incremental export: the window in a POST body": ['{"start_time":1767225600,"end_time":1795672800}'],
}


def load(tmp_path: Path, title: str) -> Job:
    path = tmp_path / "job.yaml"
    path.write_text(RECIPES[title])
    environ = {name: "x-" + name.lower() for name in re.findall(r"\$\{(\w+)\}", RECIPES[title])}  # ${NAME:-default} keeps its default
    return load_job(path, environ=environ)


def first_windows(wanted: list[Wanted]) -> dict[str, Window]:
    """The windows a first run opens at OPENED: from each cursor's `initial_value` (`incremental.open_windows`)."""
    return {
        window_key(w.source, w.endpoint.name, w.variables, w.run_date): window_for(w.endpoint.incremental, None, OPENED)
        for w in wanted
        if w.endpoint.incremental is not None
    }


def test_every_recipe_has_its_expectation() -> None:
    assert sorted(RECIPES) == sorted(EXPECTED)


@pytest.mark.parametrize("title", list(EXPECTED))
def test_each_recipe_plans_its_units_and_fans_out(tmp_path: Path, title: str) -> None:
    job = load(tmp_path, title)
    units, fanned = EXPECTED[title]
    planned = plan(job, [DATE], windows=first_windows(incremental_units(job, [DATE])))
    assert [(u.id, u.request_url, u.key) for u in planned] == units
    if title in BODIES:
        assert [u.body for u in planned] == BODIES[title]
    pending = children(job)
    assert [child.name for _, child in pending] == list(fanned)  # parents before their children
    for source, child in pending:
        page, urls = fanned[child.name]
        windows = first_windows(incremental_children(source, child, DATE, [page]))
        assert [u.request_url for u in expand_children(source, child, DATE, [page], windows)] == urls
