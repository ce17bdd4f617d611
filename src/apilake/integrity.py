"""Checks a body while it streams, so a damaged file is caught without a second pass.

Two choices, both per source or endpoint in the job file:

- `checksum:` what identifies the landed bytes in the run record. `crc32c` (the default for
  files) costs almost nothing (~0.1 CPU s per GB, SSE4.2) and is one of the checksums S3 itself
  verifies for a whole object, multipart uploads included (`FULL_OBJECT`); `sha256` costs ~0.6 s
  per GB with SHA-NI and ~2 s without, for users who want a cryptographic digest.
- `verify:` what must hold before an object may become visible. `gzip` (the default): the
  Content-Length, and for `.gz` files every gzip member inflated to its end. `length`: the
  Content-Length only, for trusted sources; a file then costs the copy and the checksum alone.
"""

from __future__ import annotations

import hashlib
import zlib
from types import ModuleType
from typing import Literal, get_args

from apilake.errors import IntegrityError

ChecksumName = Literal["crc32c", "sha256"]
VerifyMode = Literal["gzip", "length"]
CHECKSUMS: tuple[str, ...] = get_args(ChecksumName)

_GZIP = 16 + zlib.MAX_WBITS
_SLICE = 64 << 10  # input fed per call: the output of one call stays small for ordinary ratios
_MAX_OUT = 8 << 20  # and bounded for extraordinary ones (a gzip bomb inflates slice by slice)


def _inflater() -> ModuleType:
    """ISA-L inflates gzip about three times faster than zlib, with the same API; a native
    library, so it is loaded only by a process that inflates a gzip body."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - a platform without an isal wheel
        return zlib
    return isal_zlib


class Checksum:
    """A running checksum of one of `CHECKSUMS`; `text` is `algorithm:hex`, as run records keep it."""

    def __init__(self, algorithm: str) -> None:
        if algorithm not in CHECKSUMS:
            raise ValueError(f"unknown checksum {algorithm!r} (one of {', '.join(CHECKSUMS)})")
        self.algorithm = algorithm
        self._digest = hashlib.sha256() if algorithm == "sha256" else None
        self._value = 0
        if self._digest is None:
            import google_crc32c  # a native library: loaded only by a process that computes a CRC

            self._extend = google_crc32c.extend

    def update(self, chunk: bytes | memoryview) -> None:
        if self._digest is not None:
            self._digest.update(chunk)
        else:
            self._value = self._extend(self._value, chunk)

    @property
    def hex(self) -> str:
        if self._digest is not None:
            return self._digest.hexdigest()
        return f"{self._value:08x}"

    @property
    def text(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class StreamCheck:
    """Counts, checksums and (for gzip) inflates a byte stream as it passes.

    `finish()` raises `IntegrityError` when the body is shorter or longer than the
    Content-Length the server announced, or when a gzip body does not end as a whole stream.
    Inflated output is discarded as it is produced, so memory does not grow with the file.
    """

    def __init__(self, *, expected_length: int | None, gzip: bool, checksum: str = "sha256") -> None:
        self.expected_length = expected_length
        self.size = 0
        self.checksum = Checksum(checksum)
        self._gzip = gzip
        self._zlib = _inflater() if gzip else zlib
        self._inflate = self._zlib.decompressobj(_GZIP)
        self._inflated = 0  # input bytes inflated (`size` is counted ahead, maybe in another thread)

    @property
    def heavy(self) -> bool:
        """Whether the per-byte work (inflating, sha256) is worth a thread: `digest()` does it."""
        return self._gzip or self.checksum.algorithm == "sha256"

    def update(self, chunk: bytes) -> None:
        self.count(chunk)
        if self.heavy:
            self.digest([chunk])

    def count(self, chunk: bytes) -> None:
        """The cheap part, in order as chunks arrive: the length, and a CRC unless `heavy`."""
        self.size += len(chunk)
        if self.expected_length is not None and self.size > self.expected_length:
            raise IntegrityError(f"body is longer than its Content-Length of {self.expected_length} bytes")
        if not self.heavy:
            self.checksum.update(chunk)

    def digest(self, chunks: list[bytes]) -> None:
        """The costly part of a `heavy` check, for chunks in order (maybe in another thread)."""
        for chunk in chunks:
            self.checksum.update(chunk)
        if self._gzip:
            # One copy of the batch buys a quarter of the calls into the inflater: each call gives
            # the GIL back and takes it again, and those hand-overs cost more than the copy (-10 %
            # CPU for the check, `bench/`).
            self._inflate_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _inflate_all(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        try:
            for start in range(0, len(view), _SLICE):
                data: bytes | memoryview = view[start : start + _SLICE]
                while data:
                    if self._inflate.eof:  # a multi-member gzip file: the next member starts here
                        self._inflate = self._zlib.decompressobj(_GZIP)
                    self._inflate.decompress(data, _MAX_OUT)
                    data = self._inflate.unconsumed_tail or self._inflate.unused_data
        except (zlib.error, self._zlib.error) as exc:
            raise IntegrityError(f"not a valid gzip stream near byte {self._inflated}: {exc}") from None
        self._inflated += len(chunk)

    @property
    def sha256(self) -> str | None:
        """The sha256 hex digest when that is the chosen checksum (older records keep only this)."""
        return self.checksum.hex if self.checksum.algorithm == "sha256" else None

    def finish(self) -> None:
        if self.expected_length is not None and self.size != self.expected_length:
            raise IntegrityError(f"body ended after {self.size} of {self.expected_length} bytes (Content-Length)")
        if self._gzip and not self._inflate.eof:
            raise IntegrityError(f"gzip stream is truncated: it ends after {self.size} bytes without its trailer")
