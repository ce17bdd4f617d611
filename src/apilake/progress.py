"""Progress of a run, for whoever watches it: a live bar on a terminal, a periodic line in a log.

The runner calls `on_result` for every finished unit and file. Bulk files are not known before
their listing lands, so each landed listing adds its selected files to the total.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from apilake.record import UnitResult
from apilake.sizes import human_bytes
from apilake.vocabulary import DID_NOT_LAND


class Progress:
    """`quiet`: show nothing. Not a terminal: one plain line at most every `interval` seconds."""

    def __init__(
        self,
        total_units: int,
        stream: TextIO | None = None,
        *,
        quiet: bool = False,
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total_units
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.failed = 0
        self.bytes = 0
        self.started = clock()
        self._last_line = self.started
        self._dirty = False
        self._bar: Any = None
        self._task: Any = None
        isatty = getattr(self.stream, "isatty", None)
        if not quiet and callable(isatty) and isatty():
            self._start_bar()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        console = Console(file=self.stream)
        self._bar = Bar(
            TextColumn("[bold]units"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed  {task.fields[bytes]}  {task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task("run", total=self.total, failed=0, bytes=human_bytes(0), rate="")
        self._bar.start()

    @property
    def rate(self) -> float:
        """Bytes per second since the start."""
        elapsed = self.clock() - self.started
        return self.bytes / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        return f"progress: {self.done}/{self.total} units, {self.failed} failed, {human_bytes(self.bytes)}, {human_bytes(self.rate)}/s"

    def on_result(self, result: UnitResult) -> None:
        self.done += 1
        if result.status in DID_NOT_LAND:
            self.failed += 1
        self.bytes += result.bytes
        if result.status == "listed" and result.listing:
            self.total += int(result.listing.get("selected", 0))
        self.total = max(self.total, self.done)  # fan-out children are known only once their parents landed
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=self.done,
                total=self.total,
                failed=self.failed,
                bytes=human_bytes(self.bytes),
                rate=f"{human_bytes(self.rate)}/s",
            )
            return
        self._dirty = True
        now = self.clock()
        if now - self._last_line >= self.interval:
            self._write()

    def _write(self) -> None:
        self._last_line = self.clock()
        self._dirty = False
        self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Stop the live bar; in line mode, print the final count if it changed since the last line."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._dirty and not self.quiet:
            self._write()
