"""Pagination styles: given one page of a unit, where is the next one? One class per style.

A paginator only computes the next URL (pure, no I/O); the JSON fetch loop follows it and
enforces what holds for every style: at most `max_pages`, no URL twice in one unit (a loop), and
never a page on another origin (the source's credentials stay home).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from apilake.errors import TransferError
from apilake.fetch import dig
from apilake.jobfile import (
    CursorPaging,
    Endpoint,
    HeaderLinkPaging,
    JsonLinkPaging,
    OffsetPaging,
    PageNumberPaging,
    PagingStyle,
)
from apilake.plan import Unit, encode_query


@dataclass(frozen=True, slots=True)
class Page:
    """One fetched page, as a paginator sees it."""

    url: str
    number: int  # 1-based
    doc: Any
    headers: Mapping[str, str]


class Paginator:
    """No pagination: the first page is the only one."""

    def next_url(self, unit: Unit, page: Page) -> str | None:
        return None

    def empty(self, unit: Unit, page: Page) -> bool:
        """Whether a page holds no records: it ends paging, and past page 1 it is not landed."""
        return False

    def planned(self, unit: Unit, first: Page, max_pages: int) -> list[str]:
        """The URLs of pages 2, 3, … (up to `max_pages`) when page 1 tells how many there are
        (fetched ahead, `fetch.ahead`); none when only each page tells where the next one is."""
        return []

    @staticmethod
    def with_params(unit: Unit, **changed: str) -> str:
        """The unit's URL with some query parameters set (replacing the job file's own)."""
        params = [(k, v) for k, v in unit.params if k not in changed] + list(changed.items())
        return unit.url + "?" + encode_query(params)


class NextPage(Paginator):
    """The data.ai style: the body's `next_page` is a path relative to the host, null at the end."""

    def next_url(self, unit: Unit, page: Page) -> str | None:
        following = page.doc.get("next_page") if isinstance(page.doc, dict) else None
        return urljoin(page.url, following) if isinstance(following, str) and following else None


class PageIndex(Paginator):
    """The data.ai style: `page_index=0,1,…` until `page_index + 1 == page_num`."""

    def next_url(self, unit: Unit, page: Page) -> str | None:
        doc = page.doc if isinstance(page.doc, dict) else {}
        total, index = doc.get("page_num"), doc.get("page_index", page.number - 1)
        if not isinstance(total, int) or not isinstance(index, int) or index + 1 >= total:
            return None
        return self.with_params(unit, page_index=str(index + 1))


class _Styled(Paginator):
    """A style configured in the job file. A page's records are at `records_path`, or the page
    itself when it is a bare array (the default); an empty list of them ends paging. A page
    without a list there fails the unit when the style needs records to know where paging ends."""

    def __init__(self, spec: PagingStyle) -> None:
        self.spec = spec

    def records(self, unit: Unit, page: Page) -> list[Any] | None:
        path = self.spec.records_path
        records = dig(page.doc, path) if path else page.doc
        if isinstance(records, list):
            return records
        if path:  # a wrong path must not end paging silently
            raise TransferError(f"{unit.id}: page {page.number} has no list of records at records_path {path!r}")
        if self.needs_records():
            raise TransferError(f"{unit.id}: page {page.number} is not a bare array of records; set records_path to where its list is")
        return None

    def needs_records(self) -> bool:
        """Whether this style can tell where paging ends only from the records."""
        return False

    def empty(self, unit: Unit, page: Page) -> bool:
        return self.records(unit, page) == []

    def next_url(self, unit: Unit, page: Page) -> str | None:
        records = self.records(unit, page)
        if records == []:
            return None
        return self.following(unit, page, records)

    def following(self, unit: Unit, page: Page, records: Any) -> str | None:
        raise NotImplementedError


class JsonLink(_Styled):
    """A next URL in the body (absolute, or relative to the page), null or missing at the end."""

    spec: JsonLinkPaging

    def following(self, unit: Unit, page: Page, records: Any) -> str | None:
        link = dig(page.doc, self.spec.next_url_path)
        return urljoin(page.url, link) if isinstance(link, str) and link else None


_LINK = re.compile(r'<(?P<url>[^>]*)>(?P<params>(?:[^,<"]|"[^"]*")*)')
_REL = re.compile(r'(?i);\s*rel\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s;,]+))')


def link_header(value: str, rel: str) -> str | None:
    """The target of the first link with relation `rel` in an RFC 8288 `Link` header."""
    for match in _LINK.finditer(value):
        found = _REL.search(match.group("params"))
        if found and rel.lower() in (found.group("quoted") or found.group("bare") or "").lower().split():
            return match.group("url").strip()
    return None


class HeaderLink(_Styled):
    """RFC 8288: `Link: <https://…?page=2>; rel="next"` (GitHub, many REST APIs)."""

    spec: HeaderLinkPaging

    def following(self, unit: Unit, page: Page, records: Any) -> str | None:
        link = link_header(page.headers.get("link", ""), self.spec.rel)
        return urljoin(page.url, link) if link else None


class Cursor(_Styled):
    """A cursor from the body goes into a query parameter of the next request (Stripe's
    `starting_after`, `next_cursor`); a missing or null cursor, or `has_more: false`, ends it."""

    spec: CursorPaging

    def following(self, unit: Unit, page: Page, records: Any) -> str | None:
        if self.spec.has_more_path and dig(page.doc, self.spec.has_more_path) is not True:
            return None
        cursor = dig(page.doc, self.spec.cursor_path)
        if cursor is None or cursor == "" or isinstance(cursor, (dict, list, bool)):
            return None
        return self.with_params(unit, **{self.spec.cursor_param: str(cursor)})


def count(value: Any) -> int | None:
    """A total as a vendor may give it (a JSON number, or a header's digits); None for anything
    else (`null`, a string of words, a boolean), which leaves paging to the pages themselves."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class Offset(_Styled):
    """`offset` and `limit` parameters; a short or empty page, or the total, ends it."""

    spec: OffsetPaging

    def needs_records(self) -> bool:
        return True  # a short page ends it

    def total(self, page: Page) -> int | None:
        """The number of records, from the body (`total_path`) or a header (`total_header`)."""
        if self.spec.total_header is not None:
            return count(page.headers.get(self.spec.total_header.lower()))
        return count(dig(page.doc, self.spec.total_path))

    def at(self, unit: Unit, number: int) -> str:
        """The URL of page `number` (1-based)."""
        spec = self.spec
        offset = spec.start + (number - 1) * spec.limit
        return self.with_params(unit, **{spec.offset_param: str(offset), spec.limit_param: str(spec.limit)})

    def following(self, unit: Unit, page: Page, records: Any) -> str | None:
        spec = self.spec
        if len(records) < spec.limit:
            return None
        total = self.total(page)
        if total is not None and spec.start + page.number * spec.limit >= total:
            return None
        return self.at(unit, page.number + 1)

    def planned(self, unit: Unit, first: Page, max_pages: int) -> list[str]:
        total = self.total(first)
        records = self.records(unit, first)
        if total is None or records is None or len(records) < self.spec.limit:
            return []
        pages = -(-(total - self.spec.start) // self.spec.limit)  # the offsets below the total
        return [self.at(unit, number) for number in range(2, min(pages, max_pages) + 1)]


class PageNumber(_Styled):
    """`page=1,2,…`; an empty page or the number of pages ends it."""

    spec: PageNumberPaging

    def needs_records(self) -> bool:
        return self.spec.total_pages_path is None  # then only an empty page ends it

    def following(self, unit: Unit, page: Page, records: Any) -> str | None:
        pages = count(dig(page.doc, self.spec.total_pages_path))
        if pages is not None and page.number >= pages:
            return None
        return self.at(unit, page.number + 1)

    def at(self, unit: Unit, number: int) -> str:
        """The URL of page `number` (1-based)."""
        return self.with_params(unit, **{self.spec.page_param: str(self.spec.start + number - 1)})

    def planned(self, unit: Unit, first: Page, max_pages: int) -> list[str]:
        pages = count(dig(first.doc, self.spec.total_pages_path))
        if pages is None or self.records(unit, first) == []:
            return []
        return [self.at(unit, number) for number in range(2, min(pages, max_pages) + 1)]


STYLES: dict[type[PagingStyle], type[_Styled]] = {
    JsonLinkPaging: JsonLink,
    HeaderLinkPaging: HeaderLink,
    CursorPaging: Cursor,
    OffsetPaging: Offset,
    PageNumberPaging: PageNumber,
}


def paginator_for(endpoint: Endpoint | None, style: str = "none") -> Paginator:
    """The paginator of an endpoint (`style`, the unit's, serves when the endpoint is not at hand)."""
    spec = endpoint.paginate if endpoint is not None else style
    if isinstance(spec, PagingStyle):
        return STYLES[type(spec)](spec)
    return {"next_page": NextPage, "page_index": PageIndex}.get(spec, Paginator)()
