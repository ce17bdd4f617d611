"""Bench-only experiment (`bench/run.py --patch isal-thread`): the `isal` patch, plus the streaming
check (sha256 + inflate) of each transfer run on a worker thread instead of the event loop.

hashlib and isal_zlib release the GIL, so the checks of concurrent transfers use every core while
the loop keeps reading sockets. Each transfer keeps at most one chunk in its worker (update()
waits for the previous chunk first), so memory stays bounded and chunks stay in order; an error
found in the worker surfaces on the next update() or at finish(). A sketch of a fix for the lead,
measured end to end; not production code (the wait blocks the loop briefly).
"""

import os
from concurrent.futures import Future, ThreadPoolExecutor

import apilake.integrity

try:
    from isal import isal_zlib
except ImportError:
    import sys

    print("bench patch isal-thread: python-isal is not installed; threads only", file=sys.stderr)
else:
    apilake.integrity.zlib = isal_zlib  # type: ignore[assignment]

_POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="bench-check")
_Base = apilake.integrity.StreamCheck


class ThreadedStreamCheck(_Base):  # type: ignore[misc, valid-type]
    def __init__(self, *, expected_length: int | None, gzip: bool) -> None:
        super().__init__(expected_length=expected_length, gzip=gzip)
        self._pending: Future[None] | None = None

    def _settle(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def update(self, chunk: bytes) -> None:
        self._settle()
        self._pending = _POOL.submit(_Base.update, self, chunk)

    def finish(self) -> None:
        self._settle()
        super().finish()


apilake.integrity.StreamCheck = ThreadedStreamCheck  # type: ignore[misc]
