"""Where objects land. One small interface, one module per kind of store.

Every destination keeps the same promise: an object appears whole under its key, or not at all.
Writers stream: `write()` is called chunk by chunk, and the object becomes visible only when the
`open_write` block exits without an exception; an exception discards everything written.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from apilake.jobfile import S3Options

RECORDS_PREFIX = "_apilake/runs/"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None = None  # when the store keeps it (S3 metadata); else the run records tell


class Writer(Protocol):
    async def write(self, chunk: bytes) -> None: ...


class Destination(abc.ABC):
    """A store of objects addressed by `/`-separated keys relative to the destination's root."""

    url: str

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
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, apilake's own temporary files excluded."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove one object; only for pages a shorter refetch left behind (see `fetch.json`)."""

    async def check(self) -> None:
        """Fail early with `DestinationError` if the destination cannot be written at all."""

    async def put(self, key: str, data: bytes) -> None:
        async with self.open_write(key, size_hint=len(data)) as writer:
            await writer.write(data)

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
