"""Checks a body while it streams, so a damaged file is caught without a second pass."""

from __future__ import annotations

import hashlib
import zlib

from apilake.errors import IntegrityError

_GZIP = 16 + zlib.MAX_WBITS
_INFLATE_CHUNK = 1 << 20


class StreamCheck:
    """Counts, hashes and (for gzip) inflates a byte stream as it passes.

    `finish()` raises `IntegrityError` when the body is shorter or longer than the
    Content-Length the server announced, or when a gzip body does not end as a whole stream.
    Inflated output is discarded as it is produced, so memory does not grow with the file.
    """

    def __init__(self, *, expected_length: int | None, gzip: bool) -> None:
        self.expected_length = expected_length
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._gzip = gzip
        self._inflate = zlib.decompressobj(_GZIP)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.expected_length is not None and self.size > self.expected_length:
            raise IntegrityError(f"body is longer than its Content-Length of {self.expected_length} bytes")
        self._sha256.update(chunk)
        if self._gzip:
            self._feed(chunk)

    def _feed(self, data: bytes) -> None:
        try:
            while data:
                if self._inflate.eof:  # a multi-member gzip file: the next member starts here
                    self._inflate = zlib.decompressobj(_GZIP)
                self._inflate.decompress(data, _INFLATE_CHUNK)
                data = self._inflate.unconsumed_tail or self._inflate.unused_data
        except zlib.error as exc:
            raise IntegrityError(f"not a valid gzip stream near byte {self.size}: {exc}") from None

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def finish(self) -> None:
        if self.expected_length is not None and self.size != self.expected_length:
            raise IntegrityError(f"body ended after {self.size} of {self.expected_length} bytes (Content-Length)")
        if self._gzip and not self._inflate.eof:
            raise IntegrityError(f"gzip stream is truncated: it ends after {self.size} bytes without its trailer")
