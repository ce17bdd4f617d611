"""Amazon S3 (and S3-compatible stores) as a destination: `s3://bucket/prefix`.

Same promise as the local folder: an object appears whole under its key, or not at all.
Small bodies go up in one `PutObject`; anything of a part or more becomes a multipart upload that
is completed only when the `open_write` block exits cleanly and aborted on any exception
(cancellation included), so neither a half object nor orphaned parts are left behind.

Credentials come from the standard AWS chain only (environment, shared config / profile, instance
or task role); apilake never reads or stores keys itself, and no message ever contains one.

boto3 is blocking and slow to import, so it is imported on first use and every call runs on this
destination's own thread pool: part uploads of many concurrent transfers then do not starve the
event loop's default executor, which the rest of apilake shares.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import concurrent.futures
import datetime as dt
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

from apilake.destinations import Destination, ObjectInfo, Versioned, s3_leftovers
from apilake.errors import DestinationError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from apilake.jobfile import S3Options

log = logging.getLogger(__name__)

T = TypeVar("T")

MIB = 1 << 20
MIN_PART = 5 * MIB  # S3: every part but the last must be at least this big
MAX_PART = 5 * 1024 * MIB  # S3: no part may be bigger
MAX_PARTS = 10_000  # S3: part numbers run 1..10,000
HINT_PARTS = 9_000  # with a size hint, aim below the limit so a slightly long stream still fits
GROW_EVERY = 1_000  # without a hint, double the part size every this many parts
OVERRUN_GROW_EVERY = 100  # a stream longer than its hint doubles faster over its last 1,000 parts
SMALL_BUFFER = 1 * MIB  # below this a body grows in place; past it the whole part is reserved once
THREADS = 32  # boto3 calls in flight per destination (also the HTTP connection pool size)
SHA256_META = "sha256"  # stored as x-amz-meta-sha256 on single-request objects

CREDENTIALS_HELP = (
    "apilake takes S3 credentials only from the standard AWS chain: the environment "
    "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), a profile in ~/.aws/config "
    "(AWS_PROFILE or s3.profile in the job file), or an instance / task role"
)
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
# A conditional write lost to another writer: 412, or 409 when two conditional writes race.
_CONFLICT_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
ALTERED_HINT = (
    "S3-compatible stores that keep the aws-chunked framing of botocore's default checksums as data do this: "
    "set AWS_REQUEST_CHECKSUM_CALCULATION=when_required (and AWS_RESPONSE_CHECKSUM_VALIDATION=when_required) "
    "in the environment of apilake, or fix the store."
)


def part_size(part_number: int, *, part_size_mb: int, size_hint: int | None = None) -> int:
    """Bytes in part `part_number` (1-based) of a multipart upload.

    With a size hint, every part has one size, big enough that the hinted length needs at most
    9,000 parts (rounded up to a MiB), so a 50 GB file with 8 MiB parts still fits S3's 10,000.
    Without one, the size doubles every 1,000 parts (8, 16, 32 ... MiB), which keeps memory small
    for the common case and still fits streams of many terabytes. A stream that outruns its hint
    doubles every 100 parts past part 9,000. Every part is between 5 MiB and 5 GiB.
    """
    if not 1 <= part_number <= MAX_PARTS:
        raise DestinationError(f"an S3 multipart upload has at most {MAX_PARTS:,} parts (asked for part {part_number})")
    base = max(part_size_mb * MIB, MIN_PART)
    if size_hint is not None and size_hint > 0:
        base = max(base, _ceil_mib(-(-size_hint // HINT_PARTS)))
        doublings = 0 if part_number <= HINT_PARTS else (part_number - HINT_PARTS - 1) // OVERRUN_GROW_EVERY + 1
    else:
        doublings = (part_number - 1) // GROW_EVERY
    return min(MAX_PART, base << doublings)


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
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._checksum_parts = False
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
        return self.options.endpoint_url or f"AWS S3 ({self.options.region or 'default region'})"

    @property
    def place(self) -> str:
        """The prefix in its store: one bucket name on two endpoints (AWS and a MinIO) is two places."""
        return f"{self._where()} at {self.options.endpoint_url or 'AWS S3'}"

    def client(self) -> S3Client:
        """The boto3 S3 client, created on first use (blocking: call it from a thread)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        opts = self.options
        config = Config(
            retries={"mode": "standard"},
            max_pool_connections=THREADS,
            connect_timeout=10,
            s3={"addressing_style": opts.addressing_style},
        )
        try:
            session = boto3.session.Session(profile_name=opts.profile)
            client = session.client(
                "s3",
                endpoint_url=opts.endpoint_url,
                region_name=opts.region,
                # None keeps AWS_CA_BUNDLE / ca_bundle from the AWS config working.
                verify=None if opts.verify_tls else False,
                config=config,
            )
        except Exception as exc:
            raise self._error(exc, "connect to", None) from None
        # Mirror s3transfer: when botocore adds CRC32 checksums by default (AWS), declare the
        # algorithm on the multipart upload and hand part checksums back on completion; when the
        # user turned that off (AWS_REQUEST_CHECKSUM_CALCULATION=when_required, for S3-compatible
        # stores that reject it) send none.
        self._checksum_parts = getattr(client.meta.config, "request_checksum_calculation", None) == "when_supported"
        return client

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="apilake-s3")
        return self._pool

    def _sync(self, action: str, key: str | None, call: Callable[..., T], /, **kwargs: Any) -> T:
        """Run one boto3 call, turning its failures into `DestinationError` (no secrets, no chain)."""
        try:
            return call(**kwargs)
        except DestinationError:
            raise
        except Exception as exc:
            raise self._error(exc, action, key) from None

    async def _run(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await asyncio.wrap_future(self._executor().submit(fn, *args))

    async def _call(self, action: str, key: str | None, method: str, /, **kwargs: Any) -> Any:
        def go() -> Any:
            return self._sync(action, key, getattr(self.client(), method), **kwargs)

        return await self._run(go)

    def _error(self, exc: BaseException, action: str, key: str | None) -> DestinationError:
        from botocore import exceptions as bx

        where = self._where(key) if key is not None else f"s3://{self.bucket}"
        if isinstance(exc, bx.ProfileNotFound):
            # The profile may come from AWS_PROFILE rather than the job file: name the one botocore looked for.
            profile = exc.kwargs.get("profile", self.options.profile)
            return DestinationError(f"AWS profile {profile!r} is not in the shared AWS config; {CREDENTIALS_HELP}")
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError | bx.CredentialRetrievalError):
            return DestinationError(f"no usable AWS credentials to {action} {where}; {CREDENTIALS_HELP}")
        if isinstance(exc, bx.SSLError):
            return DestinationError(f"TLS failed talking to the S3 endpoint {self._endpoint()}: {exc}")
        if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ConnectionClosedError):
            return DestinationError(f"cannot reach the S3 endpoint {self._endpoint()} to {action} {where}: {exc}")
        if isinstance(exc, bx.ReadTimeoutError):
            return DestinationError(f"the S3 endpoint {self._endpoint()} timed out while we tried to {action} {where}")
        if isinstance(exc, bx.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "?"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _NO_BUCKET_CODES or (action == "access" and status == 404):
                return DestinationError(f"bucket {self.bucket!r} does not exist at {self._endpoint()}; create it or fix the destination URL")
            if code in _AUTH_CODES:
                return DestinationError(f"S3 rejected the credentials ({code}) trying to {action} {where}; {CREDENTIALS_HELP}")
            if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled") or status == 403:
                return DestinationError(
                    f"access denied (HTTP 403) trying to {action} {where}: the credentials are invalid or lack "
                    f"permission on bucket {self.bucket!r}; {CREDENTIALS_HELP}"
                )
            message = error.get("Message") or ""
            return DestinationError(f"S3 could not {action} {where}: {code} {message}".rstrip())
        if isinstance(exc, bx.BotoCoreError):
            return DestinationError(f"S3 could not {action} {where}: {exc}")
        return DestinationError(f"S3 could not {action} {where}: {type(exc).__name__}: {exc}")

    # -- the Destination interface ------------------------------------------------------------

    async def check(self) -> None:
        """The bucket exists and the credentials may see it (HEAD bucket), before any transfer."""
        await self._call("access", None, "head_bucket", Bucket=self.bucket)

    @asynccontextmanager
    async def open_write(self, key: str, *, size_hint: int | None = None) -> AsyncIterator[S3Writer]:
        writer = S3Writer(self, key, self._full_key(key), size_hint)
        await self._run(self.client)
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
        full = self._full_key(key)

        def head() -> ObjectInfo | None:
            try:
                found = self.client().head_object(Bucket=self.bucket, Key=full)
            except Exception as exc:
                if _is_missing(exc):
                    return None
                raise self._error(exc, "stat", key) from None
            return ObjectInfo(key, int(found["ContentLength"]), found.get("Metadata", {}).get(SHA256_META))

        return await self._run(head)

    async def read(self, key: str) -> bytes:
        """The whole object; a missing key raises FileNotFoundError, as the local destination does."""
        full = self._full_key(key)

        def get() -> bytes:
            try:
                return self.client().get_object(Bucket=self.bucket, Key=full)["Body"].read()
            except Exception as exc:
                if _is_missing(exc):
                    raise FileNotFoundError(f"no object {self._where(key)}") from None
                raise self._error(exc, "read", key) from None

        return await self._run(get)

    def open_read(self, key: str) -> tuple[int, BinaryIO] | None:
        try:
            answer = self.client().get_object(Bucket=self.bucket, Key=self._full_key(key))
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise self._error(exc, "read", key) from None
        return int(answer["ContentLength"]), cast(BinaryIO, answer["Body"])  # botocore's StreamingBody reads as one

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Objects under `prefix` (keys relative to the destination), in key order, page by page."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.root + prefix}
        while True:
            page = await self._call("list", prefix, "list_objects_v2", **kwargs)
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"][len(self.root) :], int(item["Size"]))
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    async def delete(self, key: str) -> None:
        await self._call("delete", key, "delete_object", Bucket=self.bucket, Key=self._full_key(key))

    altered_hint = ALTERED_HINT
    needs_lease = True

    async def verify(self, key: str, *, size: int, sha256: str | None = None) -> None:
        """A `PutObject` whose answer carried our checksum (or the plain MD5 ETag of our bytes)
        needs no HEAD: the store has said what it kept. Multipart objects always get one."""
        confirmed = self._confirmed.pop(key, None)
        if confirmed is not None and confirmed[0] == size and sha256 in (None, confirmed[1]):
            return
        await super().verify(key, size=size, sha256=sha256)

    async def read_versioned(self, key: str) -> Versioned | None:
        full = self._full_key(key)

        def get() -> Versioned | None:
            try:
                found = self.client().get_object(Bucket=self.bucket, Key=full)
            except Exception as exc:
                if _is_missing(exc):
                    return None
                raise self._error(exc, "read", key) from None
            return Versioned(found["Body"].read(), found["ETag"])

        return await self._run(get)

    async def put_if(self, key: str, data: bytes, *, version: str | None, private: bool = False) -> str | None:
        """S3 conditional writes: `If-None-Match: *` to create, `If-Match: <ETag>` to replace.
        (`private` asks nothing more: who reads an object is the bucket's policy.)"""
        full = self._full_key(key)

        def put() -> str | None:
            client = self.client()
            try:
                if version is None:
                    return client.put_object(Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*")["ETag"]
                return client.put_object(Bucket=self.bucket, Key=full, Body=data, IfMatch=version)["ETag"]
            except Exception as exc:
                if _is_conflict(exc) or (version is not None and _is_missing(exc)):
                    return None
                raise self._error(exc, "write", key) from None

        return await self._run(put)

    async def close(self) -> None:
        """Wait for calls still running (an abort, say), then drop threads and connections."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True)
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

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


class PartBudget:
    """Bytes of part buffers that all transfers into one destination may hold together.

    Each transfer may hold up to (parts_in_flight + 1) parts, so without a shared bound eight
    transfers of big files hold 8 × 3 × 8 MiB; with it, memory stays at `s3.part_memory_mb`
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

    def release(self, size: int) -> None:
        with self._lock:
            self.held -= size
            waiting, self._waiting = self._waiting, []
        for loop, room in waiting:
            try:
                loop.call_soon_threadsafe(_wake, room)
            except RuntimeError:
                pass  # that loop has closed: nobody waits there any more


def _wake(room: asyncio.Future[None]) -> None:
    if not room.done():  # a waiter cancelled meanwhile has nothing to wake
        room.set_result(None)


class S3Writer:
    """Buffers one part at a time and keeps at most `parts_in_flight` part uploads running.

    `write()` waits while that many are in flight, so a transfer holds at most
    (parts_in_flight + 1) parts in memory; `held_bytes` / `peak_held_bytes` count them. Every part
    buffer is reserved from the destination's `PartBudget` first, shared by all transfers.
    """

    def __init__(self, dest: S3Destination, key: str, full_key: str, size_hint: int | None) -> None:
        self._dest = dest
        self.key = key
        self._full_key = full_key
        self._size_hint = size_hint
        self._buf = bytearray()
        self._filled = 0
        self._part_number = 1
        self._target = self._part_size(1)
        self._upload_id: str | None = None
        self._in_flight: dict[asyncio.Future[dict[str, Any]], int] = {}
        self._started: list[concurrent.futures.Future[dict[str, Any]]] = []
        self._parts: list[dict[str, Any]] = []
        self._committed = False
        self._reserved = 0  # budget bytes of the part being filled
        self.size = 0
        self.peak_held_bytes = 0

    def _part_size(self, number: int) -> int:
        return part_size(number, part_size_mb=self._dest.options.part_size_mb, size_hint=self._size_hint)

    @property
    def held_bytes(self) -> int:
        """Bytes this transfer keeps in memory: the part being filled plus the parts in flight."""
        return len(self._buf) + sum(self._in_flight.values())

    def _note_held(self) -> None:
        self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)

    async def write(self, *pieces: bytes) -> None:
        self._collect(fut for fut in self._in_flight if fut.done())
        for piece in pieces:
            view = memoryview(piece).cast("B")
            while view.nbytes:
                if self._part_number > MAX_PARTS:
                    raise DestinationError(f"{self._dest._where(self.key)} is too big for one S3 multipart upload")
                take = view[: self._target - self._filled]
                if not self._reserved and self._needs_part(take.nbytes):
                    await self._dest.part_budget.reserve(self._target)
                    self._reserved = self._target
                self._store(take)
                view = view[take.nbytes :]
                if self._filled == self._target:
                    await self._ship_part()

    def _needs_part(self, more: int) -> bool:
        """Whether `more` bytes make the body reserve a whole part (see `_store`)."""
        end = self._filled + more
        return end > len(self._buf) and not (end <= SMALL_BUFFER and self._upload_id is None)

    def _store(self, data: memoryview) -> None:
        end = self._filled + data.nbytes
        if end <= len(self._buf):
            self._buf[self._filled : end] = data
        elif end <= SMALL_BUFFER and self._upload_id is None:
            self._buf += data  # small bodies (most API responses) never reserve a whole part
        else:
            # Reserve the exact part once: growing a bytearray over-allocates by up to 1/8.
            part = bytearray(self._target)
            part[: self._filled] = self._buf[: self._filled]
            part[self._filled : end] = data
            self._buf = part
        self._filled = end
        self.size += data.nbytes
        self._note_held()

    async def _ship_part(self) -> None:
        dest = self._dest
        if self._upload_id is None:
            await self._settle(self._create)
        while len(self._in_flight) >= dest.options.parts_in_flight:
            done, _ = await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            self._collect(done)
        data = self._buf
        if len(data) > self._filled:
            del data[self._filled :]
        size = len(data)
        started = dest._executor().submit(self._upload_part, self._part_number, [data])
        del data
        self._started.append(started)
        uploading = asyncio.wrap_future(started)
        reserved, self._reserved = self._reserved, 0
        if reserved:  # freed when the upload ends, whoever waits for it
            uploading.add_done_callback(lambda _: dest.part_budget.release(reserved))
        self._in_flight[uploading] = size
        self._buf = bytearray()
        self._filled = 0
        self._part_number += 1
        if self._part_number <= MAX_PARTS:
            self._target = self._part_size(self._part_number)

    def _create(self) -> None:
        dest = self._dest
        dest.abort_stale_uploads(self._full_key)
        extra = {"ChecksumAlgorithm": "CRC32"} if dest._checksum_parts else {}
        created = dest._sync(
            "start a multipart upload of", self.key, dest.client().create_multipart_upload,
            Bucket=dest.bucket, Key=self._full_key, **extra,
        )  # fmt: skip
        self._upload_id = created["UploadId"]  # set in the thread: a cancelled caller still aborts it

    def _upload_part(self, number: int, holder: list[bytearray]) -> dict[str, Any]:
        # The part arrives in a list that is emptied here, so the buffer is freed as soon as it is
        # sent, before the event loop hears the part is done and fills the next one: the executor's
        # work item would otherwise keep it alive a moment longer, one part over the memory bound.
        data = holder.pop()
        dest = self._dest
        extra = {"ChecksumAlgorithm": "CRC32"} if dest._checksum_parts else {}
        try:
            sent = dest._sync(
                f"upload part {number} of", self.key, dest.client().upload_part,
                Bucket=dest.bucket, Key=self._full_key, UploadId=self._upload_id, PartNumber=number,
                Body=data, ContentLength=len(data), **extra,
            )  # fmt: skip
        finally:
            del data
        part = {"PartNumber": number, "ETag": sent["ETag"]}
        if "ChecksumCRC32" in sent and dest._checksum_parts:
            part["ChecksumCRC32"] = sent["ChecksumCRC32"]
        return part

    def _collect(self, done: Any) -> None:
        for fut in list(done):
            self._in_flight.pop(fut)
            self._parts.append(fut.result())  # a failed part raises its DestinationError here

    async def commit(self) -> None:
        """Make the object visible: one PutObject, or the last part and CompleteMultipartUpload."""
        if self._upload_id is None:
            body = self._buf
            if len(body) > self._filled:
                del body[self._filled :]
            try:
                await self._settle(self._put, body)
            finally:
                self._give_back()
            return
        if self._filled:
            await self._ship_part()
        while self._in_flight:
            done, _ = await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            self._collect(done)
        await self._settle(self._complete)

    def _put(self, body: bytearray) -> None:
        dest = self._dest
        digest = hashlib.sha256(body).digest()
        checksum = base64.b64encode(digest).decode()
        sent = dest._sync(
            "write", self.key, dest.client().put_object,
            Bucket=dest.bucket, Key=self._full_key, Body=body, ContentLength=len(body),
            Metadata={SHA256_META: digest.hex()}, ChecksumSHA256=checksum,
        )  # fmt: skip
        self._committed = True
        if sent.get("ChecksumSHA256") == checksum or sent.get("ETag", "").strip('"') == hashlib.md5(body, usedforsecurity=False).hexdigest():
            dest._confirmed[self.key] = (len(body), digest.hex())  # the store's answer vouches for the bytes

    def _complete(self) -> None:
        dest = self._dest
        dest._sync(
            "complete the multipart upload of", self.key, dest.client().complete_multipart_upload,
            Bucket=dest.bucket, Key=self._full_key, UploadId=self._upload_id,
            MultipartUpload={"Parts": sorted(self._parts, key=lambda p: p["PartNumber"])},
        )  # fmt: skip
        self._committed = True

    async def _settle(self, fn: Callable[..., None], /, *args: Any) -> None:
        """Run a call that changes what S3 holds (start, put, complete) to its end even when the
        caller is cancelled meanwhile, so the abort that follows knows the upload to drop and a key
        is either landed or untouched when the CancelledError goes on, never unknown."""
        fut = asyncio.wrap_future(self._dest._executor().submit(fn, *args))
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            try:
                await fut
            except Exception:
                pass  # the abort that follows cleans up
            raise

    def _give_back(self) -> None:
        reserved, self._reserved = self._reserved, 0
        if reserved:
            self._dest.part_budget.release(reserved)

    async def abort(self) -> None:
        """Drop the multipart upload and its parts; shielded, so cancellation cannot skip it."""
        self._give_back()
        if self._upload_id is None or self._committed:
            return
        for started in self._started:
            started.cancel()  # parts not yet begun never start
        fut = asyncio.wrap_future(self._dest._executor().submit(self._abort))
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            raise  # the abort goes on in its thread
        except Exception as exc:  # the original error matters more; say what is left behind
            log.warning("%s; %s", exc, s3_leftovers.LIFECYCLE_HINT)

    def _abort(self) -> None:
        # Parts still uploading could outlive the abort and linger as orphans: let them end first.
        concurrent.futures.wait(self._started)
        dest = self._dest
        dest._sync(
            "abort the multipart upload of", self.key, dest.client().abort_multipart_upload,
            Bucket=dest.bucket, Key=self._full_key, UploadId=self._upload_id,
        )  # fmt: skip


def _is_conflict(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in _CONFLICT_CODES or response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412)


def _is_missing(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in _MISSING_CODES or response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404
