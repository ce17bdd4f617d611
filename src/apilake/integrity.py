"""Checks a body while it streams, so a damaged file is caught without a second pass."""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

from apilake.errors import IntegrityError

try:  # ISA-L inflates gzip about three times faster than zlib, with the same API
    from isal import isal_zlib as _inflater
except ImportError:  # pragma: no cover - a platform without an isal wheel
    _inflater = zlib  # type: ignore[assignment]

_GZIP = 16 + zlib.MAX_WBITS
_SLICE = 64 << 10  # input fed per call: the output of one call stays small for ordinary ratios
_MAX_OUT = 8 << 20  # and bounded for extraordinary ones (a gzip bomb inflates slice by slice)
_BATCH = 1 << 20  # bytes per hand-over to the check thread and the writer
_AHEAD = 3  # batches the reader may run ahead of the check: slack for both, bounded memory


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
        self._inflate = _inflater.decompressobj(_GZIP)
        self._inflated = 0  # input bytes inflated: `size` belongs to hash(), maybe in another thread

    def update(self, chunk: bytes) -> None:
        self.hash(chunk)
        self.inflate(chunk)

    def hash(self, chunk: bytes) -> None:
        """Count and hash: the half of `update()` that `inflate()` may run beside, in another thread."""
        self.size += len(chunk)
        if self.expected_length is not None and self.size > self.expected_length:
            raise IntegrityError(f"body is longer than its Content-Length of {self.expected_length} bytes")
        self._sha256.update(chunk)

    def inflate(self, chunk: bytes) -> None:
        if not self._gzip:
            return
        self._inflated += len(chunk)
        view = memoryview(chunk)
        try:
            for start in range(0, len(view), _SLICE):
                data: bytes | memoryview = view[start : start + _SLICE]
                while data:
                    if self._inflate.eof:  # a multi-member gzip file: the next member starts here
                        self._inflate = _inflater.decompressobj(_GZIP)
                    self._inflate.decompress(data, _MAX_OUT)
                    data = self._inflate.unconsumed_tail or self._inflate.unused_data
        except (zlib.error, _inflater.error) as exc:
            raise IntegrityError(f"not a valid gzip stream near byte {self._inflated}: {exc}") from None

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def finish(self) -> None:
        if self.expected_length is not None and self.size != self.expected_length:
            raise IntegrityError(f"body ended after {self.size} of {self.expected_length} bytes (Content-Length)")
        if self._gzip and not self._inflate.eof:
            raise IntegrityError(f"gzip stream is truncated: it ends after {self.size} bytes without its trailer")


class _InOrderThread:
    """Applies `step` to each item in its own thread, in order, at most `ahead` items behind.

    The event loop hands items over without a thread hop per item and waits only when the thread
    is `ahead` items behind, so a slow read or a slow check does not stall the other side while
    memory stays bounded. A thread of its own rather than the default executor's: it lives as
    long as its transfer, and a busy executor must not delay the checks of transfers in flight.
    """

    def __init__(self, step: Callable[[bytes], None], ahead: int, name: str) -> None:
        self._step = step
        self._loop = asyncio.get_running_loop()
        self._items: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(ahead)
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._stopped = False
        threading.Thread(target=self._run, name=name, daemon=True).start()

    async def put(self, item: bytes) -> None:
        await self._room.acquire()
        if self._done.done():  # the thread failed: its error ends the copy
            self._done.result()
        self._items.put(item)

    async def close(self) -> None:
        """Wait until every item is done; raises the error of a failed step."""
        self._items.put(None)
        await self._done

    def stop(self) -> None:
        """Skip what is still queued: the copy is over (failed or cancelled)."""
        self._stopped = True
        self._items.put(None)

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            while (item := self._items.get()) is not None and not self._stopped:
                self._step(item)
                self._notify(self._room.release)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, raised there
            error = exc
        self._notify(self._settle, error)

    def _settle(self, error: BaseException | None) -> None:
        if error is None:
            self._done.set_result(None)
        else:
            self._done.set_exception(error)
            self._done.exception()  # marked as seen: put() or close() raises it, unless the copy already ended
        self._room.release()  # wake a put() waiting for room: it sees the error

    def _notify(self, callback: Callable[..., None], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


async def batches(chunks: AsyncIterable[bytes], size: int = _BATCH) -> AsyncIterator[bytes]:
    """Join the transport's pieces (64-256 KiB) into batches of about `size`: one copy each."""
    pieces: list[bytes] = []
    held = 0
    async for piece in chunks:
        pieces.append(piece)
        held += len(piece)
        if held >= size:
            yield b"".join(pieces)
            pieces, held = [], 0
    if pieces:
        yield b"".join(pieces)


async def copy_checked(chunks: AsyncIterable[bytes], check: StreamCheck, write: Callable[[bytes], Awaitable[None]]) -> None:
    """Copy a stream to `write` in batches, checking them in a thread of their own meanwhile.

    Hashing and inflating release the GIL, so the event loop keeps reading sockets and writing
    while the check runs on another core. `finish()` runs after the last batch is checked, so a
    damaged stream raises before the caller can commit what was written.
    """
    if check.expected_length is not None and check.expected_length <= _BATCH:
        # One batch at most: a hop to a pool thread costs less than starting the check threads.
        async for batch in batches(chunks):
            await asyncio.to_thread(check.update, batch)
            await write(batch)
        check.finish()
        return
    # Two threads: inflating costs five times what hashing does, and each keeps its own pace.
    checkers = [_InOrderThread(check.inflate, _AHEAD, "apilake-inflate"), _InOrderThread(check.hash, _AHEAD, "apilake-sha256")]
    try:
        async for batch in batches(chunks):
            for checker in checkers:
                await checker.put(batch)
            await write(batch)
        for checker in checkers:
            await checker.close()
        check.finish()
    finally:
        for checker in checkers:
            checker.stop()
