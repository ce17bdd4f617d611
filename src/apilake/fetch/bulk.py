"""Bulk endpoints: a JSON listing of file URLs, then one streamed transfer per file.

A file streams from the HTTP response straight into the destination's writer, through a
`StreamCheck` that verifies length and gzip framing on the way: no local copy, no second pass,
and a damaged file never becomes visible under its key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apilake.destinations import Destination
from apilake.errors import TemplateError, TransferError
from apilake.fetch import skip_if_landed
from apilake.fetch.client import SourceClient
from apilake.fetch.json import get_json
from apilake.integrity import StreamCheck, copy_checked
from apilake.jobfile import Endpoint
from apilake.keys import file_selected, file_values
from apilake.plan import Unit, file_key
from apilake.record import LandedObject, UnitResult



@dataclass(slots=True)
class FileTransfer:
    """One file of a listing: where it comes from and where it lands."""

    unit: str
    url: str
    key: str
    gzip: bool  # the file is gzip (by its name in the URL): verify it inflates to its end


@dataclass(slots=True)
class Listing:
    result: UnitResult
    files: list[FileTransfer] = field(default_factory=list)


def dig(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


async def fetch_listing(unit: Unit, endpoint: Endpoint, client: SourceClient) -> Listing:
    """GET the listing and choose its files; the listing's facts go into the run record."""
    started = time.monotonic()

    def has_urls(doc: Any) -> None:
        urls = dig(doc, endpoint.urls)
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            message = f"{unit.id}: the listing has no list of URLs at {endpoint.urls!r} (set `urls:` on the endpoint)"
            raise TransferError(message, transient=True)  # a half-deployed API answers so for a moment

    status, body, doc, attempts = await get_json(client, unit.request_url, f"{unit.id} listing", expect=has_urls)
    urls = dig(doc, endpoint.urls)
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
            raise TransferError(
                f"{unit.id}: two listed files would land on key {key!r}; use {{url_path}} or {{file_name}} in the key"
            )
        files[key] = FileTransfer(f"{unit.id}/{values['url_path']}", url, key, gzip=values["file_name"].endswith(".gz"))
    if not files:
        raise TransferError(f"{unit.id}: none of the {len(unique)} listed files passes files/include/exclude")
    result = UnitResult(
        unit.id,
        unit.source,
        unit.endpoint,
        unit.date,
        "listing",
        "listed",
        url=client.redact(unit.request_url),
        attempts=attempts,
        seconds=round(time.monotonic() - started, 3),
        listing={
            "http_status": status,
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "offered": len(urls),
            "duplicates": len(urls) - len(unique),
            "selected": len(files),
            "urls": [client.redact(u) for u in unique],
        },
    )
    return Listing(result, list(files.values()))


async def transfer_file(
    unit: Unit, transfer: FileTransfer, client: SourceClient, dest: Destination, *, force: bool, recorded: Mapping[str, int] = {}
) -> UnitResult:
    """Stream one file into its key; `recorded` holds the sizes the run records say landed."""
    started = time.monotonic()
    result = UnitResult(
        transfer.unit, unit.source, unit.endpoint, unit.date, "file", "landed", url=client.redact(transfer.url)
    )
    if await skip_if_landed(dest, transfer.key, result, force=force, recorded=recorded.get(transfer.key)):
        return result

    async def attempt() -> tuple[int, StreamCheck]:
        async with client.stream(transfer.url) as response:
            length = response.headers.get("content-length")
            expected = int(length) if length and length.isdigit() else None
            check = StreamCheck(expected_length=expected, gzip=transfer.gzip or transfer.key.endswith(".gz"))
            async with dest.open_write(transfer.key, size_hint=expected) as writer:
                # raw: the stored bytes are the served bytes, whatever the Content-Encoding
                await copy_checked(response.aiter_raw(), check, writer.write)
            await dest.verify(transfer.key, size=check.size, sha256=check.sha256)  # what the store kept
            return response.status_code, check

    (status, check), attempts = await client.retrying(client.source.retry, attempt, what=transfer.unit)
    result.objects.append(LandedObject(transfer.key, check.size, check.sha256, status, attempts))
    result.attempts = attempts
    result.seconds = round(time.monotonic() - started, 3)
    return result
