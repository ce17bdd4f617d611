"""The progress observer: plain lines at most every interval off a terminal, a live bar on one."""

from __future__ import annotations

import io

from apilake.progress import Progress
from apilake.record import LandedObject, UnitResult


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def result(status: str = "landed", size: int = 0, kind: str = "json", **extra: object) -> UnitResult:
    objects = [LandedObject("k", size, None)] if size else []
    return UnitResult("s/e/2026-11-25", "s", "e", "2026-11-25", kind, status, objects=objects, **extra)  # type: ignore[arg-type]


def test_plain_lines_at_most_every_interval() -> None:
    stream, clock = FakeStream(tty=False), Clock()
    progress = Progress(3, stream, interval=30, clock=clock)
    progress.on_result(result(size=1024 * 1024))
    assert stream.getvalue() == ""  # not yet 30 s
    clock.t = 31
    progress.on_result(result("listed", kind="listing", listing={"selected": 2}))  # two files join the total
    clock.t = 40
    progress.on_result(result("failed"))
    assert stream.getvalue().splitlines() == ["progress: 2/5 units, 0 failed, 1.0 MiB, 33.0 KiB/s"]
    progress.close()  # the final count, since it changed
    assert stream.getvalue().splitlines()[-1] == "progress: 3/5 units, 1 failed, 1.0 MiB, 25.6 KiB/s"


def test_quiet_prints_nothing() -> None:
    stream, clock = FakeStream(tty=True), Clock()
    progress = Progress(2, stream, quiet=True, clock=clock)
    clock.t = 100
    progress.on_result(result(size=10))
    progress.close()
    assert stream.getvalue() == ""
    assert progress.done == 1 and progress.bytes == 10


def test_terminal_gets_a_live_bar() -> None:
    stream = FakeStream(tty=True)
    progress = Progress(2, stream)
    progress.on_result(result(size=2048))
    progress.on_result(result("failed"))
    progress.close()
    text = stream.getvalue()
    assert "2/2" in text and "1 failed" in text and "2.0 KiB" in text
