"""JSON units: every page of one request, checked, then landed as returned.

Pages land as separate objects (see `keys.page_key`), page 1 last: once the unit's key exists,
every page of it exists, which is what reruns rely on to skip it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin

from apilake.destinations import Destination
from apilake.errors import TransferError
from apilake.fetch import skip_if_landed
from apilake.fetch.client import SourceClient, is_transient
from apilake.integrity import StreamCheck
from apilake.keys import page_key
from apilake.plan import Unit, encode_query
from apilake.record import LandedObject, UnitResult

MAX_PAGES = 10_000


async def get_json(
    client: SourceClient, url: str, what: str, *, limit: int | None = None, expect: Callable[[Any], None] | None = None
) -> tuple[int, bytes, Any, int]:
    """One JSON document with retries: (status, body, parsed body, attempts).

    Reading stops past `limit` bytes (default: the source's `max_json_mb`), so a runaway body
    fails its unit instead of exhausting memory. `expect` checks the parsed document's shape and
    raises a (transient) `TransferError` when it is not the answer asked for: a 2xx that is not
    the expected JSON is usually a proxy's maintenance page, gone on the next try.
    """
    mb = client.source.max_json_mb
    limit = int(mb * 1024 * 1024) if limit is None else limit

    async def attempt() -> tuple[int, bytes, Any]:
        async with client.stream(url) as response:
            length = response.headers.get("content-length")
            encoded = "content-encoding" in response.headers  # the length is of the encoded body
            check = StreamCheck(expected_length=int(length) if length and length.isdigit() and not encoded else None, gzip=False)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                check.update(chunk)
                body += chunk
                if len(body) > limit:
                    raise TransferError(
                        f"{what}: response is larger than max_json_mb ({mb:g} MB), which counts all pages of a "
                        "unit together; raise sources[].max_json_mb if such bodies are expected"
                    )
            check.finish()
            doc = parse_body(bytes(body), what, client)
            if expect is not None:
                expect(doc)
            return response.status_code, bytes(body), doc

    (status, body, doc), attempts = await client.retrying(client.source.retry, attempt, what=what)
    return status, body, doc, attempts


def parse_body(body: bytes, what: str, client: SourceClient) -> Any:
    """The parsed body, or a `TransferError` for bodies that are not a successful JSON answer.

    A 2xx body that is not JSON at all is transient (retried): proxies and load balancers answer
    maintenance pages with 200. JSON nested too deeply is the vendor's data, and stays wrong.
    """
    try:
        doc = json.loads(body)
    except RecursionError:
        raise TransferError(f"{what}: JSON is nested too deeply to be data") from None
    except ValueError:
        start = body[:60].decode("utf-8", "replace").replace("\n", " ")
        raise TransferError(client.redact(f"{what}: body is not JSON (it starts with {start!r})"), transient=True) from None
    if isinstance(doc, dict) and "code" in doc and str(doc["code"]) not in ("200", "0"):
        code = doc["code"]
        status = code if isinstance(code, int) else None
        message = client.redact(f"{what}: the body says code {code}: {str(doc.get('error', ''))[:300]}")
        raise TransferError(message, status=status, transient=status is not None and is_transient(status))
    return doc


def next_url(unit: Unit, doc: Any, current: str, page: int) -> str | None:
    """The URL of the page after `page` (1-based), or None when this was the last one."""
    if not isinstance(doc, dict):
        return None
    if unit.paginate == "next_page":
        following = doc.get("next_page")
        return urljoin(current, following) if isinstance(following, str) and following else None
    if unit.paginate == "page_index":
        total, index = doc.get("page_num"), doc.get("page_index", page - 1)
        if not isinstance(total, int) or not isinstance(index, int) or index + 1 >= total:
            return None
        params = [(k, v) for k, v in unit.params if k != "page_index"] + [("page_index", str(index + 1))]
        return unit.url + "?" + encode_query(params)
    return None


async def fetch_json_unit(
    unit: Unit, client: SourceClient, dest: Destination, *, force: bool, recorded: Mapping[str, int] = {}
) -> UnitResult:
    """Fetch every page, then land them; `recorded` holds the sizes the run records say landed."""
    started = time.monotonic()
    result = UnitResult(
        unit.id, unit.source, unit.endpoint, unit.date, "json", "landed", url=client.redact(unit.request_url)
    )
    if await skip_if_landed(dest, unit.key, result, force=force, recorded=recorded.get(unit.key)):
        return result
    pages: list[tuple[int, bytes, int]] = []
    url: str | None = unit.request_url
    seen = set()
    budget = int(client.source.max_json_mb * 1024 * 1024)  # all pages are held until page 1 lands
    while url is not None:
        if len(pages) >= MAX_PAGES or url in seen:
            raise TransferError(f"{unit.id}: pagination does not end (page {len(pages) + 1}, {client.redact(url)})")
        seen.add(url)
        held = sum(len(p[1]) for p in pages)
        status, body, doc, attempts = await get_json(client, url, f"{unit.id} page {len(pages) + 1}", limit=budget - held)
        pages.append((status, body, attempts))
        url = next_url(unit, doc, url, len(pages))
    for number in range(len(pages), 0, -1):
        if number == 1 and unit.paginate != "none":
            await _remove_stale_pages(dest, unit.key, after=len(pages))
        status, body, attempts = pages[number - 1]
        key = page_key(unit.key, number)
        await dest.put(key, body)
        result.objects.insert(0, LandedObject(key, len(body), hashlib.sha256(body).hexdigest(), status, attempts))
    result.attempts = sum(p[2] for p in pages)
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
