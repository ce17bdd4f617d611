"""Where objects land. One small interface, one module per kind of store.

Every destination keeps the same promise: an object appears whole under its key, or not at all.
Writers stream: `write()` is called chunk by chunk, and the object becomes visible only when the
`open_write` block exits without an exception; an exception discards everything written.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from apilake.errors import DestinationError

if TYPE_CHECKING:
    from apilake.jobfile import S3Options

RECORDS_PREFIX = "_apilake/runs/"
OWN_PREFIX = "_apilake/"  # apilake's own objects: run records, leases, quota ledgers


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None = None  # when the store keeps it (S3 metadata); else the run records tell


@dataclass(frozen=True, slots=True)
class Versioned:
    """A small object and the version it was read at (an ETag on S3), for compare-and-swap."""

    data: bytes
    version: str


class Writer(Protocol):
    async def write(self, *pieces: bytes) -> None:
        """Append the pieces, in order (a body arrives as many small chunks: see `fetch.download`)."""


class Destination(abc.ABC):
    """A store of objects addressed by `/`-separated keys relative to the destination's root."""

    url: str
    #: Whether runs need a lease object here (`apilake.lease`): the OS file lock of one host
    #: cannot see runs on other hosts writing to the same store.
    needs_lease: bool = False

    @abc.abstractmethod
    def open_write(self, key: str, *, size_hint: int | None = None) -> AbstractAsyncContextManager[Writer]:
        """Stream an object; it becomes visible atomically when the block exits cleanly."""

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo | None:
        """The landed object under `key`, or None."""

    @abc.abstractmethod
    async def read(self, key: str) -> bytes:
        """A whole (small) object: run records, tests."""

    @abc.abstractmethod
    def open_read(self, key: str) -> tuple[int, BinaryIO] | None:
        """A landed object as its size and a blocking binary stream the caller closes, or None.

        Blocking on purpose: its readers (the table builder's pyarrow readers) are blocking, and
        a large raw object must stream, never be held whole."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, apilake's own temporary files excluded."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove one object: pages a shorter refetch left behind (see `fetch.json`), or an object
        the store did not keep as sent (`verify`)."""

    @abc.abstractmethod
    async def read_versioned(self, key: str) -> Versioned | None:
        """A small object of apilake's own (lease, quota ledger) with its version, or None."""

    @abc.abstractmethod
    async def put_if(self, key: str, data: bytes, *, version: str | None) -> str | None:
        """Compare-and-swap a small object: create it if `version` is None and it does not exist,
        else replace it if it is still at `version`. The new version, or None if another writer
        got there first (read it again and decide anew)."""

    @property
    def place(self) -> str:
        """Where the objects really are, however the URL spells them (a local folder's real path):
        runs of one job into one place share one lock (`apilake.lock`)."""
        return self.url

    async def check(self) -> None:
        """Fail early with `DestinationError` if the destination cannot be written at all."""

    #: What to tell the user when the store keeps other bytes than it was sent.
    altered_hint = "Check the store."

    async def verify(self, key: str, *, size: int, sha256: str | None = None) -> None:
        """After an upload: the store must report the size (and sha256, where it keeps one) that
        was streamed. Else the object is removed and `DestinationError` raised: a store that
        alters what it is sent must never leave a damaged object that counts as landed."""
        kept = await self.stat(key)
        if kept is not None and kept.size == size and (sha256 is None or kept.sha256 in (None, sha256)):
            return
        what = "nothing" if kept is None else f"{kept.size:,} bytes" if kept.size != size else "other bytes (sha256 differs)"
        if kept is not None:
            await self.delete(key)
        raise DestinationError(
            f"{self.url}: the store kept {what} under {key!r} after {size:,} bytes were sent; the object was removed "
            f"and the key is not landed. {self.altered_hint}"
        )

    async def put(self, key: str, data: bytes) -> None:
        async with self.open_write(key, size_hint=len(data)) as writer:
            await writer.write(data)
        await self.verify(key, size=len(data))

    async def clear_stale_uploads(self, prefixes: Iterable[str], older_than: dt.timedelta) -> None:
        """At a run's start, under the key prefixes the job owns: drop what killed runs left that
        no reader sees but the store keeps and bills (S3's open multipart uploads), begun more than
        `older_than` ago. Nothing to do elsewhere: a local folder's leftovers are hidden temporary
        files, removed when their keys are written again."""

    async def close(self) -> None:
        """Release connections and threads."""


def open_destination(url: str, s3: S3Options | None = None) -> Destination:
    """The destination for a URL: `s3://bucket/prefix`, or a local folder (path or `file://`)."""
    if url.startswith("s3://"):
        from apilake.destinations.s3 import S3Destination
        from apilake.jobfile import S3Options

        return S3Destination(url, s3 or S3Options())
    from apilake.destinations.local import LocalDestination

    return LocalDestination(url.removeprefix("file://"))
