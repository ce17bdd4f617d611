"""Amazon S3 (and S3-compatible stores) as a destination: `s3://bucket/prefix`.

Same promise as the local folder: an object appears whole under its key, or not at all.
Small bodies go up in one `PutObject`; anything of a part or more becomes a multipart upload that
is completed only when the `open_write` block exits cleanly and aborted on any exception
(cancellation included), so neither a half object nor orphaned parts are left behind.

The data path is obstore (Rust `object_store`, native asyncio): single PUTs, multipart uploads,
the conditional writes of the lease, quota ledger and report store, listing, HEAD, GET and
DELETE. Every request carries `x-amz-checksum-sha256` of its body, which the store verifies.
Credentials come from the standard AWS chain, resolved as boto3 resolves them (`s3_credentials`);
apilake never stores keys itself, and no message ever contains one. What obstore cannot do
(listing, sizing and aborting the multipart uploads killed runs left open, `s3_leftovers`) goes
through three requests signed by botocore's signer (`s3_requests`); boto3 is not used.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import dataclasses
import datetime as dt
import hashlib
import io
import logging
import mmap
import re
import ssl
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

from apilake.destinations import Destination, ObjectInfo, Versioned, s3_credentials, s3_leftovers, s3_requests
from apilake.errors import DestinationError

if TYPE_CHECKING:
    from obstore import PutMode
    from obstore.store import ClientConfig, S3Store
    from typing_extensions import Buffer  # collections.abc from Python 3.12

    from apilake.jobfile import S3Options

log = logging.getLogger(__name__)

T = TypeVar("T")

MIB = 1 << 20
MIN_PART = 5 * MIB  # S3: every part but the last must be at least this big
MAX_PART = 5 * 1024 * MIB  # S3: no part may be bigger
MAX_PARTS = 10_000  # S3: part numbers run 1..10,000
HINT_PARTS = 9_000  # with a size hint, aim below the limit so a slightly long stream still fits
SMALL_BUFFER = 1 * MIB  # below this a body grows in place; past it the whole part is reserved once
THREADS = 8  # blocking calls at once: the AWS chain, the multipart housekeeping (`s3_leftovers`)
READ_BUFFER = 1 * MIB  # the chunks `open_read` reads a GET in
READ_TIMEOUT = 60  # seconds without a byte before a request is given up (and retried)
REQUEST_TIMEOUT = 3600  # seconds one request may last: a part at 2.4 KB/s, 1 GiB read at 0.3 MB/s
SHA256_META = "sha256"  # stored as x-amz-meta-sha256 on single-request objects

CREDENTIALS_HELP = s3_credentials.HELP
TLS_HELP = "trust its CA with AWS_CA_BUNDLE (or ca_bundle in the AWS config), or set s3.verify_tls: false"
_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
    }
)
_NO_BUCKET_CODES = frozenset({"NoSuchBucket"})
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_CODE = re.compile(r"<Code>([^<]+)</Code>")
_STATUS = re.compile(r"status(?: code)?:? (\d{3})")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_CERTIFICATE = re.compile(r"InvalidCertificate\(\s*(\w+)")  # rustls's reason, in obstore's error chain
_PART_NUMBER = re.compile(r"partNumber=(\d+)")
ALTERED_HINT = (
    "S3-compatible stores that keep the aws-chunked framing of botocore's default checksums as data do this: "
    "set AWS_REQUEST_CHECKSUM_CALCULATION=when_required (and AWS_RESPONSE_CHECKSUM_VALIDATION=when_required) "
    "in the environment of apilake, or fix the store."
)


def part_size(*, part_size_mb: int, size_hint: int | None = None) -> int:
    """Bytes in every part of one multipart upload (obstore cuts a stream into parts of one size).

    With a size hint the part is big enough that the hinted length needs at most 9,000 parts
    (rounded up to a MiB), so a 50 GB file with 8 MiB parts still fits S3's 10,000 and a stream a
    little longer than its hint still fits. Without one it is `part_size_mb`: a stream of unknown
    length may then be up to 10,000 parts long (78 GiB at 8 MiB), past which the upload fails
    naming the setting to raise. Every part is between 5 MiB and 5 GiB.
    """
    base = max(part_size_mb * MIB, MIN_PART)
    if size_hint is not None and size_hint > 0:
        base = max(base, _ceil_mib(-(-size_hint // HINT_PARTS)))
    return min(MAX_PART, base)


def _ceil_mib(n: int) -> int:
    return -(-n // MIB) * MIB


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix ending in `/` or empty) of `s3://bucket/prefix`."""
    if not url.startswith("s3://"):
        raise DestinationError(f"destination {url!r} is not an s3:// URL (s3://bucket/prefix)")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise DestinationError(f"destination {url!r} names no bucket; write it as s3://bucket or s3://bucket/prefix")
    if any(c in bucket for c in "?#\\ ") or bucket != bucket.strip():
        raise DestinationError(f"destination {url!r}: {bucket!r} is not a valid S3 bucket name")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3Destination(Destination):
    """Objects are S3 objects under `s3://bucket/prefix/`; keys are relative to the prefix."""

    def __init__(self, url: str, options: S3Options) -> None:
        self._opened = dt.datetime.now(dt.UTC)
        self.url = url
        self.options = options
        self.bucket, self.root = parse_s3_url(url)
        self._settings: s3_credentials.Settings | None = None
        self._store: S3Store | None = None
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.part_budget = PartBudget(max(options.part_memory_mb * MIB, MIN_PART))
        self._confirmed: dict[str, tuple[int, str]] = {}  # key → (size, sha256) the store's answer to PutObject vouched for

    # -- plumbing ------------------------------------------------------------------------------

    def _full_key(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in (".", "..") for p in parts):
            raise DestinationError(f"key {key!r} is not a valid object key under {self.url}")
        return self.root + key

    def _where(self, key: str | None = None) -> str:
        return f"s3://{self.bucket}/{self.root}{key or ''}"

    def _endpoint(self) -> str:
        found = self._settings  # the chain's answer once resolved (it may name the endpoint)
        endpoint = found.endpoint if found is not None else self.options.endpoint_url
        region = found.region if found is not None else self.options.region
        return endpoint or f"AWS S3 ({region or 'default region'})"

    @property
    def place(self) -> str:
        """The prefix in its store: one bucket name on two endpoints (AWS and a MinIO) is two places."""
        return f"{self._where()} at {self.options.endpoint_url or 'AWS S3'}"

    def settings(self) -> s3_credentials.Settings:
        """The AWS chain's answer for this destination, resolved once (blocking: it may read files
        or ask a metadata endpoint)."""
        with self._lock:
            if self._settings is None:
                found = s3_credentials.resolve(self.options)
                if not found.region_given and found.endpoint is None:
                    # boto3 followed S3's redirect to the bucket's region; obstore does not: ask S3 once.
                    region = s3_requests.bucket_region(self.bucket, verify_tls=self.options.verify_tls, ca_bundle=found.ca_bundle)
                    found = dataclasses.replace(found, region=region or found.region)
                self._settings = found
            return self._settings

    def store(self) -> S3Store:
        """The obstore S3 store of the bucket (the data path), made on first use (blocking)."""
        with self._lock:
            store = self._store
        if store is None:
            try:
                store = self._make_store(self.settings())
            except DestinationError:
                raise
            except Exception as exc:
                raise self._error(exc, "connect to", None) from None
            with self._lock:
                self._store = store
        return store

    def _make_store(self, found: s3_credentials.Settings) -> S3Store:
        from obstore.store import S3Store

        opts = self.options
        # obstore's default ends every request after 30 s, a part upload or a GET included: botocore's
        # 60 s without a byte finds a stalled connection, and an hour ends a request that crawls.
        client: ClientConfig = {
            "connect_timeout": dt.timedelta(seconds=10),
            "read_timeout": dt.timedelta(seconds=READ_TIMEOUT),
            "timeout": dt.timedelta(seconds=REQUEST_TIMEOUT),
            "allow_http": True,
        }
        if not opts.verify_tls:
            client["allow_invalid_certificates"] = True
        elif found.ca_bundle:
            try:  # AWS_CA_BUNDLE / ca_bundle names a file; obstore takes the PEM text
                client["root_certificate"] = Path(found.ca_bundle).expanduser().read_bytes()
            except OSError as exc:
                where = "AWS_CA_BUNDLE or ca_bundle in the AWS config"
                raise DestinationError(f"the CA bundle {found.ca_bundle!r} ({where}) cannot be read: {exc.strerror}") from None
        virtual = _virtual_hosted(opts.addressing_style, found.endpoint, self.bucket)
        return S3Store(
            self.bucket,
            region=found.region,
            # Every setting that decides where requests go and how they are checked is given here:
            # obstore would otherwise take AWS_* variables of its own reading from the environment.
            aws_endpoint_url_s3=_store_url(found.endpoint, self.bucket, found.region, virtual=virtual),
            virtual_hosted_style_request=virtual,
            checksum_algorithm="sha256",  # the store verifies every body it is sent
            unsigned_payload=False,
            skip_signature=False,
            conditional_put="etag",
            client_options=client,
            retry_config={"max_retries": found.max_attempts - 1, "retry_timeout": dt.timedelta(minutes=3)},
            credential_provider=found.credentials,
        )

    def requests(self) -> s3_requests.Requests:
        """Signed requests for what obstore cannot do (the multipart housekeeping); blocking."""
        found = self.settings()
        opts = self.options
        virtual = _virtual_hosted(opts.addressing_style, found.endpoint, self.bucket)
        endpoint = found.endpoint or s3_credentials.aws_endpoint(found.region)
        return s3_requests.Requests(endpoint, self.bucket, virtual, found.region, found.current_keys, opts.verify_tls, found.ca_bundle)

    async def _ready(self) -> S3Store:
        """The store, made in a thread the first time (the AWS chain may ask a metadata endpoint)."""
        if self._store is not None:
            return self._store
        return await self._run(self.store)

    async def _run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """A blocking call (the chain, the housekeeping, a reader) on this destination's own
        threads, off the event loop's default executor that the rest of apilake shares."""
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="apilake-s3")
            pool = self._pool
        return await asyncio.wrap_future(pool.submit(fn, *args))

    async def _call(self, action: str, key: str | None, op: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """One obstore call on the store, its failure a `DestinationError` (`_Missing` for a 404)."""
        store = await self._ready()
        try:
            return await op(store, *args, **kwargs)
        except DestinationError:
            raise
        except Exception as exc:
            if action != "access" and _missing(exc):
                raise _Missing(f"no object {self._where(key)}") from None
            raise self._error(exc, action, key) from None

    def _error(self, exc: BaseException, action: str, key: str | None) -> DestinationError:
        """The message for a failed S3 call, whichever client made it: no secret, no chain."""
        where = self._where(key) if key is not None else f"s3://{self.bucket}"
        if isinstance(exc, DestinationError):
            return exc
        if isinstance(exc, s3_requests.S3Answer):
            return self._coded_error(exc.code, exc.status, exc.message, action, where)
        if isinstance(exc, s3_requests.RequestFailed):
            return DestinationError(f"S3 could not {action} {where}: {exc}")
        text = str(exc)
        if isinstance(exc, ssl.SSLError):
            return DestinationError(f"TLS failed talking to the S3 endpoint {self._endpoint()}: {exc}; {TLS_HELP}")
        if isinstance(exc, OSError):
            return DestinationError(f"cannot reach the S3 endpoint {self._endpoint()} to {action} {where}: {exc}")
        code_match, status = _CODE.search(text), _status(text)
        code = code_match.group(1) if code_match else ""
        if status is None and code == "":
            certificate = _CERTIFICATE.search(text)
            if certificate or any(t in text.lower() for t in ("certificate", "tls handshake", "ssl")):
                why = f"the store's certificate is not trusted ({certificate.group(1)})" if certificate else _first_line(text)
                return DestinationError(f"TLS failed talking to the S3 endpoint {self._endpoint()}: {why}; {TLS_HELP}")
            if "timed out" in text.lower() or "Timeout" in text:
                return DestinationError(f"the S3 endpoint {self._endpoint()} timed out while we tried to {action} {where}")
            if any(t in text for t in ("error sending request", "Connection refused", "connect", "dns error")):
                return DestinationError(f"cannot reach the S3 endpoint {self._endpoint()} to {action} {where}: {_first_line(text)}")
        return self._coded_error(code or str(status or "?"), status, _message(text), action, where)

    def _coded_error(self, code: str, status: int | None, message: str, action: str, where: str) -> DestinationError:
        """The message for an S3 error answer: its code and HTTP status."""
        if code in _NO_BUCKET_CODES or (action == "access" and status == 404):
            return DestinationError(f"bucket {self.bucket!r} does not exist at {self._endpoint()}; create it or fix the destination URL")
        if code in _AUTH_CODES:
            http = f", HTTP {status}" if status else ""
            return DestinationError(f"S3 rejected the credentials ({code}{http}) trying to {action} {where}; {CREDENTIALS_HELP}")
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled") or status == 403:
            return DestinationError(
                f"access denied (HTTP 403) trying to {action} {where}: the credentials are invalid or lack "
                f"permission on bucket {self.bucket!r}; {CREDENTIALS_HELP}"
            )
        return DestinationError(f"S3 could not {action} {where}: {code} {message}".rstrip())

    # -- the Destination interface ------------------------------------------------------------

    async def check(self) -> None:
        """The bucket exists and the credentials may see it (a one-key listing), before any transfer."""
        import obstore

        async def probe(store: S3Store) -> None:
            try:  # one page of one key: the whole listing of a big lake would cost minutes
                await obstore.list(store, self.root or None, chunk_size=1).__anext__()
            except StopAsyncIteration:
                pass  # an empty prefix is fine

        await self._call("access", None, probe)

    @asynccontextmanager
    async def open_write(self, key: str, *, size_hint: int | None = None) -> AsyncIterator[S3Writer]:
        writer = S3Writer(self, key, self._full_key(key), size_hint)
        await self._ready()  # the store (and the AWS chain behind it) made off the event loop
        try:
            yield writer
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size and, for single-request objects, the sha256 kept in the object's metadata.

        Multipart objects carry no sha256 (it is known only after the last part, and S3 metadata
        cannot be changed without copying the object): `sha256` is None; the run records hold it.
        """
        import obstore

        try:
            found = await self._call("stat", key, obstore.get_async, self._full_key(key), options={"head": True})
        except _Missing:
            return None
        return ObjectInfo(key, int(found.meta["size"]), found.attributes.get(SHA256_META))

    async def read(self, key: str) -> bytes:
        """The whole object; a missing key raises FileNotFoundError, as the local destination does."""
        try:
            return (await self._get(key)).data
        except _Missing:
            raise FileNotFoundError(f"no object {self._where(key)}") from None

    def open_read(self, key: str) -> tuple[int, BinaryIO] | None:
        import obstore

        try:
            found = obstore.get(self.store(), self._full_key(key))
        except Exception as exc:
            if _missing(exc):
                return None
            raise self._error(exc, "read", key) from None
        body = _Body(found.stream(READ_BUFFER), lambda exc: self._error(exc, "read", key))
        return int(found.meta["size"]), cast(BinaryIO, io.BufferedReader(body, READ_BUFFER))

    async def _get(self, key: str) -> Versioned:
        import obstore

        found = await self._call("read", key, obstore.get_async, self._full_key(key))
        return Versioned(bytes(await found.bytes_async()), str(found.meta["e_tag"]))

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Objects under `prefix` (keys relative to the destination), in key order, page by page."""
        import obstore

        full = self.root + prefix
        # obstore lists whole `/`-separated segments: ask for the folder, keep what starts with the prefix.
        stream = obstore.list(await self._ready(), full.rpartition("/")[0] or None)
        while True:
            try:
                page = await stream.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                raise self._error(exc, "list", prefix) from None
            for item in sorted(page, key=lambda found: found["path"]):
                if item["path"].startswith(full):
                    yield ObjectInfo(item["path"][len(self.root) :], int(item["size"]))

    async def delete(self, key: str) -> None:
        import obstore

        await self._call("delete", key, obstore.delete_async, self._full_key(key))

    altered_hint = ALTERED_HINT
    needs_lease = True

    async def verify(self, key: str, *, size: int, sha256: str | None = None) -> None:
        """A `PutObject` whose answer carried the plain MD5 ETag of our bytes needs no HEAD: the
        store has said what it kept. Multipart objects always get one."""
        confirmed = self._confirmed.pop(key, None)
        if confirmed is not None and confirmed[0] == size and sha256 in (None, confirmed[1]):
            return
        await super().verify(key, size=size, sha256=sha256)

    async def read_versioned(self, key: str) -> Versioned | None:
        try:
            return await self._get(key)
        except _Missing:
            return None

    async def put_if(self, key: str, data: bytes, *, version: str | None, private: bool = False) -> str | None:
        """S3 conditional writes: `If-None-Match: *` to create, `If-Match: <ETag>` to replace.
        (`private` asks nothing more: who reads an object is the bucket's policy.)"""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        mode: PutMode = "create" if version is None else {"e_tag": version}
        try:
            sent = await obstore.put_async(await self._ready(), self._full_key(key), data, mode=mode, use_multipart=False)
        except (AlreadyExistsError, PreconditionError):
            return None
        except Exception as exc:
            if _conflict(exc) or (version is not None and _missing(exc)):
                return None
            raise self._error(exc, "write", key) from None
        return str(sent["e_tag"])

    async def close(self) -> None:
        """Wait for housekeeping calls still running (an abort, say), then drop threads and connections."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._store = None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True)
        self.part_budget.drain()

    def open_multipart_uploads(self) -> builtins.list[str]:
        """Keys (relative to the destination) of multipart uploads in progress under the prefix.

        Blocking; meant for tests and housekeeping (call it through `asyncio.to_thread` from async
        code).
        """
        return [upload.key[len(self.root) :] for upload in s3_leftovers.uploads(self, self.root)]

    def abort_stale_uploads(self, full_key: str) -> None:
        """Abort uploads of `full_key` that a killed run left open (the run's lease says none is
        live): begun before this run, since a live run elsewhere keeps its own. Blocking."""
        s3_leftovers.abort_key(self, full_key, self._opened)

    async def clear_stale_uploads(self, prefixes: Iterable[str], older_than: dt.timedelta) -> None:
        await s3_leftovers.clear(self, prefixes, older_than)


class _Body(io.RawIOBase):
    """The chunks of one streaming GET as a standard binary stream (pyarrow's readers take one)."""

    def __init__(self, chunks: Iterator[Buffer], error: Callable[[BaseException], DestinationError]) -> None:
        super().__init__()
        self._chunks = chunks
        self._error = error  # a failure mid-body, as the destination names it
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, into: Buffer) -> int:
        while not self._left:
            try:
                chunk = next(self._chunks, None)
            except Exception as exc:
                raise self._error(exc) from None
            if chunk is None:
                return 0
            self._left = memoryview(chunk).cast("B")
        target = memoryview(into).cast("B")
        n = min(target.nbytes, self._left.nbytes)
        target[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class _Missing(DestinationError):
    """No such object (raised by `S3Destination._call` for a 404, caught where absence is an answer)."""


def _store_url(endpoint: str | None, bucket: str, region: str, *, virtual: bool) -> str:
    """The URL obstore sends to: the endpoint (AWS's for the region by default), with the bucket
    as the first label of the host when it is addressed virtually."""
    base = urlsplit(endpoint or s3_credentials.aws_endpoint(region))
    netloc = f"{bucket}.{base.netloc}" if virtual else base.netloc
    return f"{base.scheme}://{netloc}{base.path.rstrip('/')}"


def _virtual_hosted(style: str, endpoint: str | None, bucket: str) -> bool:
    """boto3's addressing: `auto` is virtual hosting on AWS for a bucket name that is a DNS label
    and path style on any other endpoint; `virtual` falls back to path style on an IP address."""
    host = (urlsplit(endpoint).hostname or "") if endpoint else ""
    if style == "path" or (host and re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", host)):
        return False
    if style == "virtual":
        return True
    return not endpoint and re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", bucket) is not None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _message(text: str) -> str:
    found = _MESSAGE.search(text)
    return found.group(1) if found else _first_line(text)


def _missing(exc: BaseException) -> bool:
    """No such object: a 404 that is not about the bucket (a missing bucket is an error to name)."""
    from obstore.exceptions import NotFoundError

    text = str(exc)
    return (isinstance(exc, NotFoundError | FileNotFoundError) or _status(text) == 404) and "NoSuchBucket" not in text


def _conflict(exc: BaseException) -> bool:
    """A conditional write lost to another writer: 412, or 409 when two conditional writes race."""
    text = str(exc)
    return _status(text) in (409, 412) or "ConditionalRequestConflict" in text


def _status(text: str) -> int | None:
    """The HTTP status in an obstore error's text, if it names one."""
    found = _STATUS.search(text)
    return int(found.group(1)) if found else None


class PartBudget:
    """Bytes of part buffers that all transfers into one destination may hold together.

    Each transfer may hold up to (parts_in_flight + 3) parts, so without a shared bound eight
    transfers of big files hold 8 × 5 × 8 MiB; with it, memory stays at `s3.part_memory_mb`
    however many run, and a transfer waiting for room pauses its download. A transfer only
    waits for a new part while its own parts already reserved can still finish (they free
    their bytes when their upload ends), so the budget never deadlocks; a part bigger than the
    whole budget (very large files) goes through alone.

    Thread-safe and loop-agnostic: on a Dask worker the tasks of one destination each run their
    own event loop, in their own thread, and share this budget.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._spare: list[mmap.mmap] = []  # part buffers sent and let go, kept for the next parts
        self.mapped = 0  # part buffers made (the rest were reused)

    def buffer(self, size: int) -> mmap.mmap:
        """A part buffer of `size` bytes: a spare one when there is one. A fresh memory map costs
        its page faults and zeroing again (~1 CPU s per GB), a reused one nothing."""
        with self._lock:
            for i, spare in enumerate(self._spare):
                if len(spare) == size:
                    return self._spare.pop(i)
            # Spares of other sizes (another transfer's part size) would sit beside the new map
            # and take the budget's memory twice over: drop them.
            stale, self._spare = self._spare, []
            self.mapped += 1
        for spare in stale:
            _unmap(spare)
        return mmap.mmap(-1, size)

    def drain(self) -> None:
        """Unmap the spare buffers (the destination closes)."""
        with self._lock:
            spare, self._spare = self._spare, []
        for part in spare:
            _unmap(part)

    async def reserve(self, size: int) -> None:
        while True:
            with self._lock:
                if self.held == 0 or self.held + size <= self.limit:
                    self.held += size
                    self.peak = max(self.peak, self.held)
                    return
                loop = asyncio.get_running_loop()
                room = loop.create_future()
                self._waiting.append((loop, room))
            await room  # a release came: try again

    def release(self, size: int, part: mmap.mmap | None = None) -> None:
        """Give back `size` reserved bytes and the buffer that held them, kept as a spare while
        spares and the bytes held together stay within the limit (else unmapped)."""
        with self._lock:
            self.held -= size
            if part is not None and self.held + sum(map(len, self._spare)) + len(part) <= self.limit:
                self._spare.append(part)
                part = None
            waiting, self._waiting = self._waiting, []
        if part is not None:
            _unmap(part)
        for loop, room in waiting:
            try:
                loop.call_soon_threadsafe(_wake, room)
            except RuntimeError:
                pass  # that loop has closed: nobody waits there any more


def _unmap(part: mmap.mmap) -> None:
    try:
        part.close()
    except BufferError:
        pass  # still exported somewhere: unmapped when that lets go


def _wake(room: asyncio.Future[None]) -> None:
    if not room.done():  # a waiter cancelled meanwhile has nothing to wake
        room.set_result(None)


class S3Writer:
    """Buffers one part at a time and hands full parts to one obstore multipart upload.

    obstore runs `parts_in_flight` part uploads at once and asks for the next part only when one
    has room, so `write()` waits meanwhile: a transfer holds at most (parts_in_flight + 3) parts
    (those sent, one waiting for room, one handed over, one being filled).
    Every part buffer is reserved from the destination's `PartBudget` first, shared by all
    transfers, and given back when obstore lets go of it (its part is sent), not before.
    Parts are anonymous memory maps obstore reads in place, without a copy, reused once sent.
    """

    def __init__(self, dest: S3Destination, key: str, full_key: str, size_hint: int | None) -> None:
        self._dest = dest
        self.key = key
        self._full_key = full_key
        self._part = part_size(part_size_mb=dest.options.part_size_mb, size_hint=size_hint)
        self._buf: bytearray | mmap.mmap = bytearray()
        self._filled = 0
        self._parts = 0  # parts handed to the upload
        self._queue: asyncio.Queue[memoryview | BaseException | None] | None = None
        self._upload: asyncio.Future[Any] | None = None
        self._committed = False
        self._reserved = 0  # budget bytes of the part being filled
        self.size = 0
        self.held_bytes = 0  # bytes of this transfer's parts not yet let go by obstore
        self.peak_held_bytes = 0

    async def write(self, *pieces: bytes) -> None:
        for piece in pieces:
            view = memoryview(piece).cast("B")
            while view.nbytes:
                take = view[: self._part - self._filled]
                if not self._reserved and self._needs_part(take.nbytes):
                    await self._dest.part_budget.reserve(self._part)
                    self._reserved = self._part
                self._store(take)
                view = view[take.nbytes :]
                if self._filled == self._part:
                    await self._ship_part()

    def _needs_part(self, more: int) -> bool:
        """Whether `more` bytes make the body reserve a whole part (see `_store`)."""
        end = self._filled + more
        return not isinstance(self._buf, mmap.mmap) and not (end <= SMALL_BUFFER and self._upload is None)

    def _store(self, data: memoryview) -> None:
        end = self._filled + data.nbytes
        if isinstance(self._buf, mmap.mmap):
            self._buf[self._filled : end] = data
        elif end <= SMALL_BUFFER and self._upload is None:
            self._buf += data  # small bodies (most API responses) never reserve a whole part
        else:
            part = self._dest.part_budget.buffer(self._part)  # the exact part
            part[: self._filled] = self._buf[: self._filled]
            part[self._filled : end] = data
            self._buf = part
            self.held_bytes += len(part)
            self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)
        self._filled = end
        self.size += data.nbytes

    def _let_go(self, part: mmap.mmap, reserved: int) -> None:
        """A part buffer nobody reads any more (obstore sent its part, or the transfer stopped):
        its budget and the buffer itself go back. May run on obstore's threads."""
        self.held_bytes -= len(part)
        self._dest.part_budget.release(reserved, part)

    async def _ship_part(self) -> None:
        if self._parts >= MAX_PARTS:
            raise DestinationError(
                f"{self._dest._where(self.key)} is too big for one S3 multipart upload of {MAX_PARTS:,} parts of {self._part // MIB} MiB; raise s3.part_size_mb"
            )
        if self._upload is None:
            self._start()
        assert self._queue is not None and self._upload is not None
        if self._upload.done():
            self._upload.result()  # the upload failed: its error
        part, self._buf, reserved, self._reserved = self._buf, bytearray(), self._reserved, 0
        assert isinstance(part, mmap.mmap)  # a multipart upload's part always has its own buffer
        view = memoryview(part)[: self._filled]
        weakref.finalize(view, self._let_go, part, reserved)  # obstore lets go of the view once the part is sent
        del part
        self._filled = 0
        self._parts += 1
        await self._hand_over(view)

    def _start(self) -> None:
        import obstore

        dest = self._dest
        self._queue = asyncio.Queue(maxsize=1)

        async def upload() -> Any:
            await dest._run(dest.abort_stale_uploads, self._full_key)
            try:
                return await obstore.put_async(dest.store(), self._full_key, self._parts_from_queue(),
                                               chunk_size=self._part, max_concurrency=dest.options.parts_in_flight)  # fmt: skip
            except Exception as exc:  # obstore has aborted the upload
                number = _PART_NUMBER.search(str(exc))
                action = f"upload part {number.group(1)} of" if number else "upload"
                raise dest._error(exc, action, self.key) from None

        self._upload = asyncio.ensure_future(upload())

    async def _parts_from_queue(self) -> AsyncIterator[memoryview]:
        """The parts, as obstore asks for them; an exception put in the queue makes obstore abort."""
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
            del item

    async def commit(self) -> None:
        """Make the object visible: one PutObject, or the last part and CompleteMultipartUpload."""
        if self._upload is None:
            body = bytes(self._buf[: self._filled])
            self._buf = bytearray()
            try:
                await self._settle(self._put(body))
            finally:
                self._give_back()
            return
        if self._filled:
            await self._ship_part()
        assert self._queue is not None
        await self._settle(self._finish())

    async def _put(self, body: bytes) -> None:
        import obstore

        dest = self._dest
        digest = hashlib.sha256(body).hexdigest()
        try:
            sent = await obstore.put_async(dest.store(), self._full_key, body, attributes={SHA256_META: digest}, use_multipart=False)
        except Exception as exc:
            raise dest._error(exc, "write", self.key) from None
        self._committed = True
        if str(sent.get("e_tag") or "").strip('"') == hashlib.md5(body, usedforsecurity=False).hexdigest():
            dest._confirmed[self.key] = (len(body), digest)  # the store's answer vouches for the bytes

    async def _finish(self) -> None:
        assert self._upload is not None
        await self._hand_over(None)
        await self._upload
        self._committed = True

    async def _hand_over(self, part: memoryview | None) -> None:
        """Give obstore the next part (None: there is no more) once it asks, unless the upload
        ends first: a part that failed meanwhile makes obstore abort and never ask again, and its
        error is raised here instead of waiting for ever."""
        assert self._queue is not None and self._upload is not None
        put = asyncio.ensure_future(self._queue.put(part))
        del part
        try:
            await asyncio.wait([put, self._upload], return_when=asyncio.FIRST_COMPLETED)
        finally:
            put.cancel()  # a part obstore did not take is dropped (its budget comes back with it)
        if not put.done() or put.cancelled():
            self._upload.result()  # the upload failed: its error
            raise DestinationError(f"{self._dest._where(self.key)}: the upload ended before it was sent every part")

    async def _settle(self, work: Any) -> None:
        """Run a call that changes what S3 holds (put, complete) to its end even when the caller
        is cancelled meanwhile, so a key is either landed or untouched when the CancelledError goes
        on, never unknown."""
        fut = asyncio.ensure_future(work)
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            try:
                await fut
            except Exception:
                pass  # the abort that follows cleans up
            raise

    def _give_back(self) -> None:
        """The part being filled, if any, and its budget go back (the transfer ends or stops)."""
        reserved, self._reserved = self._reserved, 0
        part, self._buf = self._buf, bytearray()
        if isinstance(part, mmap.mmap):
            self._let_go(part, reserved)
        elif reserved:
            self._dest.part_budget.release(reserved)

    async def abort(self) -> None:
        """Drop the multipart upload and its parts; shielded, so cancellation cannot skip it."""
        self._give_back()
        if self._upload is None or self._committed:
            return
        assert self._queue is not None
        upload, queue = self._upload, self._queue
        while not queue.empty():  # parts obstore has not taken are dropped
            queue.get_nowait()
        queue.put_nowait(DestinationError("the transfer was stopped"))  # obstore aborts the upload on it

        async def stop() -> None:
            try:
                await upload
            except DestinationError as exc:
                if "the transfer was stopped" not in str(exc):
                    raise

        try:
            await asyncio.shield(asyncio.ensure_future(stop()))
        except asyncio.CancelledError:
            raise  # the abort goes on
        except Exception as exc:  # the original error matters more; say what is left behind
            log.warning("%s; %s", exc, s3_leftovers.LIFECYCLE_HINT)
