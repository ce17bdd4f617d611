"""Bulk endpoints: a JSON listing of file URLs, then one streamed transfer per file.

A file streams from the HTTP response straight into the destination's writer, through a
`StreamCheck` that verifies it on the way (`verify:` length, or gzip too) and computes its
`checksum:`: no local copy, no second pass, and a damaged file never becomes visible under its key.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apilake.destinations import Destination
from apilake.errors import TemplateError, TransferError
from apilake.fetch import dig, skip_if_landed
from apilake.fetch.client import SourceClient
from apilake.fetch.json import JsonAnswer, get_json
from apilake.integrity import StreamCheck
from apilake.jobfile import Endpoint, Source
from apilake.keys import file_selected, file_values, type_extension, typed_keys
from apilake.plan import Unit, file_key
from apilake.record import LandedObject, UnitResult


@dataclass(slots=True)
class FileTransfer:
    """One file of a listing: where it comes from and where it lands."""

    unit: str
    url: str
    key: str
    gzip: bool  # inflate it to its end before it may land: `verify: gzip` and a .gz name (URL or key)
    checksum: str = "crc32c"
    html: bool = False  # an HTML page is the file asked for (an .html or .htm name, URL or key)
    typed: bool = False  # the key takes its extension from the answer's Content-Type (`keys.type_extension`)


HTML_NAMES = (".html", ".htm")
HTML_TYPES = ("text/html", "application/xhtml+xml")


def file_transfer(unit_id: str, url: str, key: str, endpoint: Endpoint, source: Source, file_name: str, *, typed: bool = False) -> FileTransfer:
    """A file's transfer with its checks: gzip (`verify: gzip` and a .gz name or key) and `checksum:`."""
    gzip = (endpoint.verify or source.verify) == "gzip" and (file_name.endswith(".gz") or key.endswith(".gz"))
    html = file_name.lower().endswith(HTML_NAMES) or key.lower().endswith(HTML_NAMES)
    return FileTransfer(unit_id, url, key, gzip, endpoint.checksum or source.checksum, html, typed)


def refuse_html(transfer: FileTransfer, headers: Mapping[str, str]) -> None:
    """An HTML answer where another file is expected is a proxy's or the vendor's maintenance or
    login page, not the file: transient, like a JSON endpoint's, and never landed under its key."""
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media in HTML_TYPES and not transfer.html:
        raise TransferError(f"{transfer.unit}: answered an HTML page ({media}) where a file was expected (a maintenance page?); nothing landed", transient=True)


@dataclass(slots=True)
class Listing:
    result: UnitResult
    files: list[FileTransfer] = field(default_factory=list)


async def fetch_listing(unit: Unit, endpoint: Endpoint, client: SourceClient) -> Listing:
    """GET the listing and choose its files; the listing's facts go into the run record."""
    started = time.monotonic()
    answer = await get_json(
        client,
        unit.request_url,
        f"{unit.id} listing",
        expect=lambda doc: listed_urls(unit, endpoint, doc, transient=True),  # a half-deployed API answers so for a moment
    )
    return listing_of(unit, endpoint, client, answer, started)


def listed_urls(unit: Unit, endpoint: Endpoint, doc: Any, *, transient: bool) -> list[str]:
    """The list of URLs at `endpoint.urls`, or a `TransferError`."""
    urls = dig(doc, endpoint.urls)
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        message = f"{unit.id}: the listing has no list of URLs at {endpoint.urls!r} (set `urls:` on the endpoint)"
        raise TransferError(message, transient=transient)
    return urls


def listing_of(unit: Unit, endpoint: Endpoint, client: SourceClient, answer: JsonAnswer, started: float, **facts: Any) -> Listing:
    """Choose the files a listing (or a finished report) offers at `endpoint.urls`; `facts` go into the record."""
    status, body, doc, attempts, _headers, sha256 = answer
    urls = listed_urls(unit, endpoint, doc, transient=False)
    if not urls:
        raise TransferError(f"{unit.id}: the listing offers no files at {endpoint.urls!r} (published late? see `lag:`)")
    unique = list(dict.fromkeys(urls))
    run_date = dt.date.fromisoformat(unit.date)
    files: dict[str, FileTransfer] = {}
    for url in unique:
        values = file_values(url, run_date)
        if not file_selected(values, endpoint.files, endpoint.include, endpoint.exclude):
            continue
        try:
            key = file_key(unit, url)
        except TemplateError as exc:
            raise TransferError(f"{unit.id}: {client.redact(url)}: {exc}") from None
        if key in files:
            raise TransferError(f"{unit.id}: two listed files would land on key {key!r}; use {{url_path}} or {{file_name}} in the key")
        files[key] = file_transfer(f"{unit.id}/{values['url_path']}", url, key, endpoint, client.source, values["file_name"])
    if not files:
        raise TransferError(f"{unit.id}: none of the {len(unique)} listed files passes files/include/exclude")
    result = UnitResult.for_unit(
        unit,
        "listed",
        kind="listing",
        url=client.redact(unit.request_url),
        attempts=attempts,
        seconds=round(time.monotonic() - started, 3),
        listing={
            "http_status": status,
            "bytes": len(body),
            "sha256": sha256,
            "offered": len(urls),
            "duplicates": len(urls) - len(unique),
            "selected": len(files),
            "urls": [client.redact(u) for u in unique],
            **facts,
        },
    )
    return Listing(result, list(files.values()))


async def transfer_file(
    unit: Unit, transfer: FileTransfer, client: SourceClient, dest: Destination, *, force: bool, recorded: Mapping[str, int] = {}
) -> UnitResult:
    """Stream one file into its key; `recorded` holds the sizes the run records say landed."""
    started = time.monotonic()
    result = UnitResult.for_unit(unit, "landed", unit_id=transfer.unit, kind="file", url=client.redact(transfer.url))
    # A key typed by the Content-Type is known once the vendor answers; a rerun finds it in the records.
    landed = next((k for k in typed_keys(transfer.key) if k in recorded), transfer.key) if transfer.typed else transfer.key
    if await skip_if_landed(dest, landed, result, force=force, recorded=recorded.get(landed)):
        return result

    def make_check(length: int | None) -> StreamCheck:
        return StreamCheck(expected_length=length, gzip=transfer.gzip, checksum=transfer.checksum)

    async def attempt() -> tuple[int, StreamCheck, str]:
        # raw: the stored bytes are the served bytes, whatever the Content-Encoding
        async with client.download(transfer.url, make_check) as download:
            check = download.check
            assert check is not None  # a started download has its check
            refuse_html(transfer, download.headers)
            key = transfer.key + (type_extension(download.headers.get("content-type")) if transfer.typed else "")
            async with dest.open_write(key, size_hint=check.expected_length) as writer:
                async for batch in download.batches():
                    await writer.write(*batch)
            await dest.verify(key, size=check.size, sha256=check.sha256)  # what the store kept
            return download.status_code, check, key

    (status, check, key), attempts = await client.retrying(client.source.retry, attempt, what=transfer.unit)
    result.objects.append(LandedObject(key, check.size, check.sha256, status, attempts, checksum=check.checksum.text))
    result.attempts = attempts
    result.seconds = round(time.monotonic() - started, 3)
    return result
