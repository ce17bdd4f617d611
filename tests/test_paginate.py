"""Pagination styles: pure next-URL computation, table-driven."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from apilake.errors import TransferError
from apilake.fetch.paginate import Page, link_header, paginator_for
from apilake.jobfile import Job
from apilake.plan import plan

URL = "http://api.test/v1/items"


@pytest.mark.parametrize(
    "header, rel, expected",
    [
        ('<http://api.test/x?page=2>; rel="next", <http://api.test/x?page=5>; rel="last"', "next", "http://api.test/x?page=2"),
        ('<http://api.test/x?page=5>; rel="last", <http://api.test/x?page=2>; rel="next"', "next", "http://api.test/x?page=2"),
        ('<http://api.test/x?page=1>; rel="prev"', "next", None),
        ("</x?page=3>; rel=next", "next", "/x?page=3"),
        ('<http://api.test/x?a=1,2>; title="a, b"; rel="next last"', "last", "http://api.test/x?a=1,2"),
        ("", "next", None),
    ],
)
def test_link_header(header: str, rel: str, expected: str | None) -> None:
    assert link_header(header, rel) == expected


def unit_and_paginator(paginate: Any, params: dict | None = None):
    job = Job.model_validate(
        {
            "sources": [
                {
                    "name": "s",
                    "base_url": "http://api.test",
                    "endpoints": [{"name": "e", "kind": "json", "path": "/v1/items", "params": params or {}, "paginate": paginate}],
                }
            ]
        }
    )
    [unit] = plan(job, [dt.date(2026, 11, 25)])
    return unit, paginator_for(job.sources[0].endpoints[0])


LINK = {"type": "json_link", "next_url_path": "links.next"}
CURSOR = {"type": "cursor", "cursor_path": "meta.next", "cursor_param": "cursor"}
STRIPE = {"type": "cursor", "cursor_path": "data[-1].id", "cursor_param": "starting_after", "has_more_path": "has_more"}
OFFSET = {"type": "offset", "limit": 2, "records_path": "data", "total_path": "total"}
PAGES = {"type": "page_number", "records_path": "data", "total_pages_path": "meta.pages"}
BARE_OFFSET = {"type": "offset", "limit": 2}
BARE_PAGES = {"type": "page_number"}


@pytest.mark.parametrize(
    "paginate, number, doc, headers, expected",
    [
        ("next_page", 1, {"next_page": "/v1/items?p=2"}, {}, "http://api.test/v1/items?p=2"),
        ("next_page", 1, {"next_page": None}, {}, None),
        ("page_index", 1, {"page_index": 0, "page_num": 2}, {}, URL + "?page_index=1"),
        ("page_index", 2, {"page_index": 1, "page_num": 2}, {}, None),
        (LINK, 1, {"data": [1], "links": {"next": "http://api.test/v1/items?after=9"}}, {}, URL + "?after=9"),
        (LINK, 1, {"data": [1], "links": {"next": "?after=9"}}, {}, URL + "?after=9"),  # relative to the page
        (LINK, 1, {"data": [1], "links": {"next": None}}, {}, None),
        (LINK, 1, {"data": [1]}, {}, None),
        ({**LINK, "records_path": "data"}, 1, {"data": [], "links": {"next": "?after=9"}}, {}, None),  # empty page ends
        ({"type": "header_link"}, 1, [1], {"link": '<http://api.test/v1/items?page=2>; rel="next"'}, URL + "?page=2"),
        ({"type": "header_link"}, 1, [1], {}, None),
        (CURSOR, 1, {"meta": {"next": "c2"}}, {}, URL + "?cursor=c2"),
        (CURSOR, 1, {"meta": {"next": None}}, {}, None),
        (CURSOR, 1, {"meta": {"next": ""}}, {}, None),
        (STRIPE, 1, {"data": [{"id": "a"}, {"id": "b"}], "has_more": True}, {}, URL + "?starting_after=b"),
        (STRIPE, 1, {"data": [{"id": "a"}, {"id": "b"}], "has_more": False}, {}, None),
        (OFFSET, 1, {"data": [1, 2], "total": 5}, {}, URL + "?offset=2&limit=2"),
        (OFFSET, 3, {"data": [5], "total": 5}, {}, None),  # a short page ends
        (OFFSET, 2, {"data": [3, 4], "total": 4}, {}, None),  # the total ends
        ({**OFFSET, "total_path": None}, 2, {"data": [3, 4]}, {}, URL + "?offset=4&limit=2"),
        (PAGES, 1, {"data": [1], "meta": {"pages": 3}}, {}, URL + "?page=2"),
        (PAGES, 3, {"data": [1], "meta": {"pages": 3}}, {}, None),
        (PAGES, 2, {"data": [], "meta": {}}, {}, None),
        # no records_path: a bare array is the page's records
        (BARE_OFFSET, 1, [1, 2], {}, URL + "?offset=2&limit=2"),
        (BARE_OFFSET, 2, [3], {}, None),
        (BARE_PAGES, 1, [1], {}, URL + "?page=2"),
        (BARE_PAGES, 2, [], {}, None),
        ({"type": "header_link"}, 2, [], {"link": '<http://api.test/v1/items?page=3>; rel="next"'}, None),
        ({**CURSOR, "records_path": "@"}, 1, [], {}, None),
    ],
)
def test_next_url(paginate: Any, number: int, doc: Any, headers: dict, expected: str | None) -> None:
    unit, paginator = unit_and_paginator(paginate)
    assert paginator.next_url(unit, Page(unit.request_url, number, doc, headers)) == expected


@pytest.mark.parametrize("paginate, doc", [(OFFSET, {"items": [1, 2]}), (PAGES, {"data": {"a": 1}}), ({**LINK, "records_path": "data"}, {"data": None})])
def test_a_page_without_a_list_at_records_path_fails_the_unit(paginate: Any, doc: Any) -> None:
    unit, paginator = unit_and_paginator(paginate)
    with pytest.raises(TransferError, match="page 2 has no list of records at records_path 'data'"):
        paginator.next_url(unit, Page(unit.request_url, 2, doc, {}))


@pytest.mark.parametrize("paginate", [BARE_OFFSET, BARE_PAGES])
def test_a_page_that_is_not_a_bare_array_fails_a_style_that_needs_its_records(paginate: Any) -> None:
    unit, paginator = unit_and_paginator(paginate)
    with pytest.raises(TransferError, match="page 1 is not a bare array of records; set records_path"):
        paginator.next_url(unit, Page(unit.request_url, 1, {"data": [1]}, {}))


@pytest.mark.parametrize(
    "paginate, doc, empty",
    [
        (PAGES, {"data": [], "meta": {"pages": 9}}, True),
        (PAGES, {"data": [1]}, False),
        (BARE_PAGES, [], True),
        (BARE_PAGES, [1], False),
        (LINK, {"links": {"next": None}}, False),  # no records_path, not a bare array: no records to count
        ({"type": "header_link"}, [], True),
        ("next_page", {"next_page": None, "list": []}, False),  # the vendor's own styles have no records_path
        ("none", [], False),
    ],
)
def test_empty_page(paginate: Any, doc: Any, empty: bool) -> None:
    unit, paginator = unit_and_paginator(paginate)
    assert paginator.empty(unit, Page(unit.request_url, 2, doc, {})) is empty


@pytest.mark.parametrize(
    "paginate, params, first",
    [
        (OFFSET, {}, URL + "?offset=0&limit=2"),
        ({**PAGES, "start": 0}, {"q": "x"}, URL + "?q=x&page=0"),
        (STRIPE, {"limit": 10}, URL + "?limit=10"),
    ],
)
def test_first_page_url(paginate: Any, params: dict, first: str) -> None:
    unit, _ = unit_and_paginator(paginate, params)
    assert unit.request_url == first


HEADER_OFFSET = {"type": "offset", "limit": 2, "records_path": "data", "total_header": "X-Total-Count"}


@pytest.mark.parametrize(
    "paginate, doc, headers, max_pages, expected",
    [
        (OFFSET, {"data": [1, 2], "total": 5}, {}, 9, ["?offset=2&limit=2", "?offset=4&limit=2"]),
        (OFFSET, {"data": [1, 2], "total": 4}, {}, 9, ["?offset=2&limit=2"]),
        (OFFSET, {"data": [1, 2], "total": 2}, {}, 9, []),
        (OFFSET, {"data": [1], "total": 5}, {}, 9, []),  # a short first page is the last, whatever the total
        (OFFSET, {"data": [1, 2], "total": None}, {}, 9, []),  # a null total: page by page
        (OFFSET, {"data": [1, 2], "total": True}, {}, 9, []),
        (OFFSET, {"data": [1, 2], "total": -4}, {}, 9, []),
        (OFFSET, {"data": [1, 2], "total": "6"}, {}, 9, ["?offset=2&limit=2", "?offset=4&limit=2"]),
        (OFFSET, {"data": [1, 2], "total": 10**12}, {}, 3, ["?offset=2&limit=2", "?offset=4&limit=2"]),  # max_pages caps it
        ({**OFFSET, "total_path": None}, {"data": [1, 2], "total": 5}, {}, 9, []),
        (HEADER_OFFSET, {"data": [1, 2]}, {"x-total-count": "5"}, 9, ["?offset=2&limit=2", "?offset=4&limit=2"]),
        (HEADER_OFFSET, {"data": [1, 2]}, {"x-total-count": "many"}, 9, []),
        (HEADER_OFFSET, {"data": [1, 2]}, {}, 9, []),
        (PAGES, {"data": [1], "meta": {"pages": 3}}, {}, 9, ["?page=2", "?page=3"]),
        (PAGES, {"data": [], "meta": {"pages": 3}}, {}, 9, []),
        (PAGES, {"data": [1], "meta": {"pages": None}}, {}, 9, []),
        (LINK, {"data": [1], "links": {"next": "?after=9"}}, {}, 9, []),  # only each page knows the next
    ],
)
def test_planned_pages(paginate: Any, doc: Any, headers: dict, max_pages: int, expected: list[str]) -> None:
    """The pages page 1 foretells are exactly those the page-by-page walk would reach."""
    unit, paginator = unit_and_paginator(paginate)
    assert paginator.planned(unit, Page(unit.request_url, 1, doc, headers), max_pages) == [URL + q for q in expected]
