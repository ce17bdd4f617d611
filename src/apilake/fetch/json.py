"""JSON units: every page of one request, checked, then landed as returned.

Pages land as separate objects (see `keys.page_key`), page 1 last: once the unit's key exists,
every page of it exists, which is what reruns rely on to skip it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from apilake.destinations import Destination
from apilake.errors import TransferError, is_transient
from apilake.fetch import skip_if_landed
from apilake.fetch.ahead import PagesAhead
from apilake.fetch.client import SourceClient, origin
from apilake.fetch.download import ERROR_BODY_BYTES
from apilake.fetch.paginate import Page, Paginator
from apilake.fetch.rules import Answer, active
from apilake.integrity import StreamCheck
from apilake.keys import page_key
from apilake.ndjson import landed_page
from apilake.plan import Unit
from apilake.record import LandedObject, UnitResult
from apilake.redact import ERROR_DETAIL_CHARS


class JsonAnswer(NamedTuple):
    status: int
    body: bytes
    doc: Any
    attempts: int
    headers: Mapping[str, str]  # lower-case names
    sha256: str  # of `body`, computed as it streamed in


async def get_json(
    client: SourceClient,
    url: str,
    what: str,
    *,
    limit: int | None = None,
    method: str = "GET",
    body: str | None = None,
    expect: Callable[[Any], object] | None = None,
    empty_ok: bool = False,
    headers: Mapping[str, str] = {},
    fmt: str = "json",
) -> JsonAnswer:
    """One JSON document with retries (GET, or POST with a JSON `body`).

    Reading stops past `limit` bytes as inflated (default: the source's `max_json_mb`), so a
    runaway or compressed body fails its unit instead of exhausting memory. `expect` checks the
    parsed document's shape and raises a (transient) `TransferError` when it is not the answer
    asked for: a 2xx that is not the expected JSON is usually a proxy's maintenance page, gone on
    the next try. So is an empty answer (a 204, or a 200 without a body), unless `empty_ok`: then
    it is an answer, with no document (`doc` None). `fmt` `ndjson`: the document is the list of
    the body's lines, each parsed.
    """
    mb = client.source.max_json_mb
    limit = int(mb * 1024 * 1024) if limit is None else limit

    def check(length: int | None) -> StreamCheck:
        return CappedCheck(length, limit, too_large(what, mb))

    async def attempt() -> tuple[int, bytes, Any, Mapping[str, str], str]:
        async with client.download(url, check, method=method, body=body, decode=True, headers=headers) as response:
            data = bytearray()
            async for batch in response.batches():
                for chunk in batch:
                    data += chunk
        assert response.check is not None  # a 2xx's body was read to its end, checked
        landed = bytes(data)
        active().judge(Answer(response.status_code, response.headers, landed), f"{what}: HTTP {response.status_code}", client.redact)
        if not landed and not empty_ok:
            raise TransferError(
                f"{what}: the answer is empty (HTTP {response.status_code}); if that means no data, say `empty: ok` on the endpoint", transient=True
            )
        doc = parse_body(landed, what, client, fmt) if landed else None
        if expect is not None:
            expect(doc)
        return response.status_code, landed, doc, response.headers, response.check.checksum.hex

    (status, data, doc, headers, sha256), attempts = await client.retrying(client.source.retry, attempt, what=what)
    return JsonAnswer(status, data, doc, attempts, headers, sha256)


def too_large(what: str, mb: float) -> str:
    return (
        f"{what}: response is larger than max_json_mb ({mb:g} MB), which counts all pages of a unit together; "
        "raise sources[].max_json_mb if such bodies are expected"
    )


class CappedCheck(StreamCheck):
    """A JSON body's check (sha256) that ends its transfer once the body passes `limit` bytes as
    inflated: inside libcurl's write callback, before a few KB of gzip can become gigabytes in memory."""

    def __init__(self, length: int | None, limit: int, message: str) -> None:
        super().__init__(expected_length=length, gzip=False, checksum="sha256")
        self._limit = limit
        self._message = message

    def count(self, chunk: bytes) -> None:
        super().count(chunk)
        if self.size > self._limit:
            raise TransferError(self._message)


#: About the memory `json.loads` takes per token of a document, in bytes (CPython 3.11: an empty
#: dict is 64, a dict's member ~100 with its key and value, an empty list 56, a list's element
#: with a small value ~24, a string ~50 for its pair of quotes). Between 0.5 and 2.1 times the
#: truth for the shapes in tests/test_parse_cost.py; the shapes that explode (empty containers,
#: short strings) within 0.8-1.2 times.
TOKEN_COST = ((b"{", 64), (b"[", 56), (b":", 100), (b",", 24), (b'"', 25))
#: The memory a page's parse may take, in bytes per byte of `max_json_mb`, as estimated. Records of
#: a few short fields are estimated at ~13-16 bytes per byte (they take 6-9); `[{},{},…]` at ~29
#: (it takes 25: 200 MB of it took 5.6 GB), refused past ~70 % of `max_json_mb`.
PARSE_FACTOR = 20


def parse_cost(body: bytes) -> int:
    """About how many bytes `json.loads(body)` would take, told from its tokens without parsing
    (a pass per token, at memory speed). Tokens inside strings count too."""
    return sum(body.count(token) * cost for token, cost in TOKEN_COST)


def parse_body(body: bytes, what: str, client: SourceClient, fmt: str = "json") -> Any:
    """The parsed body (`fmt` `ndjson`: the list of its lines' values), or a `TransferError` for
    bodies that are not a successful JSON answer.

    A 2xx body that is not JSON at all is transient (retried): proxies and load balancers answer
    maintenance pages with 200. JSON nested too deeply, or whose parse would take more than
    `PARSE_FACTOR` times `max_json_mb` of memory, is the vendor's data, and stays wrong.
    """
    mb = client.source.max_json_mb
    cost = parse_cost(body)
    if cost > PARSE_FACTOR * mb * 1024 * 1024:
        raise TransferError(
            f"{what}: parsing this {len(body) / 2**20:.1f} MB answer would take about {cost / 2**20:,.0f} MB of memory, "
            f"more than {PARSE_FACTOR} × max_json_mb ({mb:g} MB); raise sources[].max_json_mb if such answers are expected"
        )
    try:
        doc = landed_page(body, fmt)
    except RecursionError:
        raise TransferError(f"{what}: JSON is nested too deeply to be data") from None
    except ValueError as exc:
        peek = body[:ERROR_BODY_BYTES]
        start = client.redact.cut(peek.decode("utf-8", "replace").replace("\n", " "), 60, truncated=len(body) > len(peek))
        which = f"NDJSON: {exc};" if fmt == "ndjson" else "JSON"
        raise TransferError(client.redact(f"{what}: body is not {which} (it starts with {start!r})"), transient=True) from None
    if isinstance(doc, dict) and "code" in doc and str(doc["code"]) not in ("200", "0"):
        code = doc["code"]
        status = code if isinstance(code, int) else None
        message = client.redact(f"{what}: the body says code {code}: ") + client.redact.cut(str(doc.get("error", "")), ERROR_DETAIL_CHARS)
        raise TransferError(message, status=status, transient=status is not None and is_transient(status))
    return doc


async def fetch_json_unit(
    unit: Unit,
    client: SourceClient,
    dest: Destination,
    *,
    force: bool,
    paginator: Paginator,
    max_pages: int,
    empty_ok: bool = False,
    recorded: Mapping[str, int] = {},
    fmt: str = "json",
) -> UnitResult:
    """Fetch every page, then land them; `recorded` holds the sizes the run records say landed;
    `fmt` is the endpoint's `format` (`json`, `ndjson`).

    An empty page (no records, or with `empty_ok` an empty answer) ends paging; past page 1 it
    is not landed: it holds nothing, and the unit's pages are its data."""
    started = time.monotonic()
    result = UnitResult.for_unit(unit, "landed", kind="json", url=client.redact(unit.request_url))
    if await skip_if_landed(dest, unit.key, result, force=force, recorded=recorded.get(unit.key)):
        return result
    pages: list[JsonAnswer] = []
    url: str | None = unit.request_url
    home = origin(unit.url)
    seen = set()
    attempts = 0
    budget = int(client.source.max_json_mb * 1024 * 1024)  # all pages are held until page 1 lands

    async def fetch(url: str, number: int) -> JsonAnswer:
        held = sum(len(p.body) for p in pages)
        return await get_json(
            client,
            url,
            f"{unit.id} page {number}",
            limit=budget - held,
            method=unit.method,
            body=unit.body,
            empty_ok=empty_ok,
            fmt=fmt,
            headers=dict(unit.headers),
        )

    async with PagesAhead(fetch, client.source.concurrency) as ahead:
        while url is not None:
            number = len(pages) + 1
            if url in seen:
                raise TransferError(client.redact(f"{unit.id}: pagination loop at page {number}: {url} was fetched before"))
            if number > max_pages:
                raise TransferError(f"{unit.id}: more than max_pages ({max_pages}) pages; raise paginate.max_pages if that is expected")
            if origin(url) != home:
                raise TransferError(client.redact(f"{unit.id}: page {number} is on another origin ({url}); refused, the source's credentials stay home"))
            seen.add(url)
            answer = await ahead.page(url, number)
            if sum(len(p.body) for p in pages) + len(answer.body) > budget:  # pages fetched ahead were capped one by one
                raise TransferError(too_large(f"{unit.id} page {number}", client.source.max_json_mb))
            attempts += answer.attempts
            page = Page(url, number, answer.doc, answer.headers)
            if number > 1 and (not answer.body or paginator.empty(unit, page)):
                break
            url = paginator.next_url(unit, page) if answer.body else None
            if number == 1 and url is not None:
                ahead.plan(paginator.planned(unit, page, max_pages))
            pages.append(answer._replace(doc=None))  # landing needs only the bytes: parsed, only the pages not read yet are held
    if len(pages) > 1:
        # Pages land last to first, page 1 (the unit's key) last. Over an earlier landing of the
        # unit, page 1 goes first: a fetch cut short midway must read as missing, never as the
        # earlier page 1 beside some of the new pages.
        await dest.delete(unit.key)
    for number in range(len(pages), 0, -1):
        if number == 1 and unit.paginate != "none":
            await _remove_stale_pages(dest, unit.key, after=len(pages))
        kept = pages[number - 1]
        key = page_key(unit.key, number)
        await dest.put(key, kept.body)
        result.objects.insert(0, LandedObject(key, len(kept.body), kept.sha256, kept.status, kept.attempts))
    result.attempts = attempts
    result.seconds = round(time.monotonic() - started, 3)
    return result


async def _remove_stale_pages(dest: Destination, key: str, *, after: int) -> None:
    """Pages beyond the last one of this fetch are left from an earlier, longer or broken fetch.

    They go before page 1 lands, so once a unit's key exists, exactly its pages exist.
    """
    number = after + 1
    while await dest.stat(page_key(key, number)) is not None:
        await dest.delete(page_key(key, number))
        number += 1


async def landed_pages(dest: Destination, key: str) -> list[bytes]:
    """Every page of a landed JSON unit, page 1 first (what a fan-out child reads of its parent);
    none for an empty answer landed as it came (`empty: ok`), which holds no values."""
    pages = [await dest.read(key)]
    while await dest.stat(page_key(key, len(pages) + 1)) is not None:
        pages.append(await dest.read(page_key(key, len(pages) + 1)))
    return [page for page in pages if page]
