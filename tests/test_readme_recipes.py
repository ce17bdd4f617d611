"""Every complete job file in the manual's Recipes page (docs/recipes.md) plans what its text says:
the units of a run date (their requests and keys) and, for a fan-out, the children a parent's
page gives. A recipe added to the page needs its expectation here."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest

from apilake.jobfile import Job, load_job
from apilake.plan import children, expand_children, plan

RECIPES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
# A recipe is the bold title before its ```yaml block.
RECIPES = dict(re.findall(r"^\*\*(.+?)\*\*.*?```yaml\n(.*?)```", RECIPES_PAGE.read_text(), re.S | re.M))
DATE = dt.date(2026, 11, 25)

Planned = list[tuple[str, str, str]]  # (unit id, request URL, key)
Fanned = dict[str, tuple[Any, list[str]]]  # child endpoint → (a page of its parent, the child's request URLs)

EXPECTED: dict[str, tuple[Planned, Fanned]] = {
    "Link-header paging, like GitHub's REST API": ([
        ("github/issues/2026-11-25/repo=octo-org/api", "https://api.github.com/repos/octo-org%2Fapi/issues?state=all&since=2026-11-25T00:00:00Z&per_page=100",
         "github/issues/dt=2026-11-25/octo-org%2Fapi.json"),
        ("github/issues/2026-11-25/repo=octo-org/web", "https://api.github.com/repos/octo-org%2Fweb/issues?state=all&since=2026-11-25T00:00:00Z&per_page=100",
         "github/issues/dt=2026-11-25/octo-org%2Fweb.json"),
    ], {}),
    "Cursor paging, like Stripe's `starting_after`": (
        [("stripe/charges/2026-11-25", "https://api.stripe.com/v1/charges?limit=100", "stripe/charges/dt=2026-11-25/data.json")], {},
    ),
    "An OAuth2 reporting API": (
        [("adnet/installs/2026-11-25", "https://api.adnet.example/v2/reports", "{source}/{endpoint}/dt={date}/{file_name}")], {},
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
}  # fmt: skip


def load(tmp_path: Path, title: str) -> Job:
    path = tmp_path / "job.yaml"
    path.write_text(RECIPES[title])
    environ = {name: "x-" + name.lower() for name in re.findall(r"\$\{(\w+)\}", RECIPES[title])}  # ${NAME:-default} keeps its default
    return load_job(path, environ=environ)


def test_every_recipe_has_its_expectation() -> None:
    assert sorted(RECIPES) == sorted(EXPECTED)


@pytest.mark.parametrize("title", list(EXPECTED))
def test_each_recipe_plans_its_units_and_fans_out(tmp_path: Path, title: str) -> None:
    job = load(tmp_path, title)
    units, fanned = EXPECTED[title]
    assert [(u.id, u.request_url, u.key) for u in plan(job, [DATE])] == units
    pending = children(job)
    assert [child.name for _, child in pending] == list(fanned)  # parents before their children
    for source, child in pending:
        page, urls = fanned[child.name]
        assert [u.request_url for u in expand_children(source, child, DATE, [page])] == urls
