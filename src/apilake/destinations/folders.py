"""The folders a local lake's writer made, so that none is left empty behind it.

A failed write leaves the folders made for it (a new date folder, its `.apilake-tmp/`) empty,
and a process killed with `kill -9` never removes its temporary folders. So each writer notes
every folder in a journal of its own before making it, and holds an OS lock on that journal
while it lives. `close()` removes the noted folders that are empty, deepest first, and the
journal; a later run removes those of every journal whose writer died (its lock is free: the
kernel dropped it with the process). A folder that holds anything stays, and so does every
folder apilake did not make. Removing an empty folder is safe even while another writer is
about to use it: that writer makes it again (`LocalDestination._create_temp`).

Journals are `.apilake-folders-<random>` files in the lake's top `.apilake-tmp/`, one folder
(relative to the lake) per line.
"""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

from apilake.keys import TEMP_DIR

JOURNAL_MARK = ".apilake-folders-"


class FolderJournal:
    """The folders one destination object made under `root` (thread-safe: `put_if` writes from threads)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fd: int | None = None
        self._path: Path | None = None
        self._noted: set[Path] = set()
        self._lock = threading.Lock()

    def note(self, folder: Path) -> None:
        """Note `folder` before making it (once per folder: a line only when it is new here)."""
        with self._lock:
            if folder in self._noted:
                return
            if self._fd is None:
                self._open()
            assert self._fd is not None
            os.write(self._fd, os.fsencode(folder.relative_to(self.root)) + b"\n")
            self._noted.add(folder)

    def make(self, folder: Path) -> None:
        """Make `folder` and its missing parents inside the lake, each noted first."""
        missing = []
        while folder != self.root and not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        self.root.mkdir(parents=True, exist_ok=True)  # the lake itself is the user's: never noted
        for made in reversed(missing):
            self.note(made)
            try:
                os.mkdir(made)
            except FileExistsError:
                pass  # another writer made it at the same time

    def close(self) -> None:
        """Remove the empty noted folders and the journal."""
        with self._lock:
            noted, self._noted = self._noted, set()
            fd, path, self._fd, self._path = self._fd, self._path, None, None
        if fd is None or path is None:
            return
        _remove_empty(noted)
        path.unlink(missing_ok=True)
        os.close(fd)  # (the lock goes with it)
        _remove_empty([path.parent])

    def _open(self) -> None:
        """Create this writer's journal and lock it, in the lake's top `.apilake-tmp/` (made again
        if another process removes it, empty, meanwhile)."""
        path = self.root / TEMP_DIR / f"{JOURNAL_MARK}{uuid.uuid4().hex[:12]}"
        while True:
            try:
                os.makedirs(path.parent, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileNotFoundError:
                continue
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks only while a sweep looks at it (see `sweep`)
        self._fd, self._path = fd, path


def sweep(root: Path) -> None:
    """Remove the empty folders noted by writers that died, and their journals."""
    try:
        with os.scandir(root / TEMP_DIR) as entries:
            journals = [Path(e.path) for e in entries if e.name.startswith(JOURNAL_MARK)]
    except FileNotFoundError:
        return
    for journal in journals:
        try:
            fd = os.open(journal, os.O_RDONLY)
        except FileNotFoundError:
            continue  # its writer closed it just now
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its writer lives
            text = os.read(fd, os.fstat(fd).st_size)
            if not text:
                continue  # just created, not yet locked by its writer (a dead writer's empty journal noted nothing)
            noted = (Path(os.fsdecode(line)) for line in text.splitlines() if line)
            _remove_empty(root / f for f in noted if not f.is_absolute() and ".." not in f.parts)  # inside the lake only
            journal.unlink(missing_ok=True)
        finally:
            os.close(fd)
    _remove_empty([root / TEMP_DIR])


def _remove_empty(folders: Iterable[Path]) -> None:
    """Remove each folder that is empty, deepest first (a date folder after its `.apilake-tmp/`)."""
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        try:
            os.rmdir(folder)
        except OSError:
            pass  # it holds something (other writes in flight, a killed one's leftovers), or is gone
