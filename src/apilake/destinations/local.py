"""A folder on a local (or mounted) file system: the default destination."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock

from apilake.destinations import Destination, ObjectInfo, Versioned
from apilake.destinations.folders import FolderJournal, sweep
from apilake.errors import DestinationError
from apilake.keys import LOCK_SUFFIX, TEMP_DIR, TEMP_MARK

_WRITEBACK = 16 << 20  # start writing a file out every this many bytes: the final fsync finds little left


class _FileWriter:
    def __init__(self, handle: BinaryIO, key: str) -> None:
        self._handle = handle
        self._key = key
        self._written = 0
        self._flushed = 0

    async def write(self, *pieces: bytes) -> None:
        # Page-cache writes of a MiB return in a fraction of a millisecond: a thread hop would cost more.
        try:
            self._written += _write_all(self._handle.fileno(), pieces)
        except OSError as exc:
            raise _os_error(exc, self._key) from None
        if self._written - self._flushed >= _WRITEBACK and hasattr(os, "posix_fadvise"):
            start, self._flushed = self._flushed, self._written
            # Linux starts writing dirty pages out on DONTNEED without waiting for the disk, so the
            # fsync at the end no longer writes the whole file. The call itself may block for tens of
            # ms, hence the thread; a mere hint, it is harmless even if the file is closed meanwhile.
            await asyncio.to_thread(os.posix_fadvise, self._handle.fileno(), start, self._written - start, os.POSIX_FADV_DONTNEED)


_IOV_MAX = 1024  # pieces per `writev` (Linux's limit)


def _write_all(fd: int, pieces: tuple[bytes, ...]) -> int:
    """Write every piece with as few system calls as may be (`writev`), short writes included."""
    views = [memoryview(p) for p in pieces if p]
    total, first = 0, 0
    while first < len(views):
        done = os.writev(fd, views[first : first + _IOV_MAX])
        total += done
        while first < len(views) and done >= views[first].nbytes:  # the pieces that went out whole
            done -= views[first].nbytes
            first += 1
        if done:  # and the rest of one cut short
            views[first] = views[first][done:]
    return total


class LocalDestination(Destination):
    """Objects are files under `root`; a write goes to a temporary file in the hidden `.apilake-tmp/`
    folder beside its target, is fsynced, then renamed over the key, so readers (and a crash)
    never see half a file.

    The temporary files live in their own folder so that finding a key's leftovers lists only
    the writes in flight, not every object of a folder that may hold thousands. The folders stay
    while the destination is open and go, when empty, with `close()`: making and removing one
    per file doubled the file system's work for a small object (`bench/`). So do the folders a
    failed write made; those of a killed process go with the next run's `check()` (`folders`)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)
        self._inside = os.path.join(self.url, "")  # every object's path starts so
        # On a network file system other hosts write here too, out of sight of this host's lock.
        self.needs_lease = network_filesystem(self.root, _mounts()) is not None
        self._name_max = _name_max(self.root)
        self._writing: set[Path] = set()  # temporary files of the writes in flight here
        self._folders = FolderJournal(self.root)  # the folders made or used here, removed when empty by `close()`

    @property
    def place(self) -> str:
        return os.path.realpath(self.root)  # through symlinks, also for a lake not made yet

    def _path(self, key: str) -> Path:
        # Lexical: `..` cannot climb out, and no lstat per path component per file (realpath
        # cost ~0.8 ms per small file); links the user placed inside the lake are theirs to follow.
        path = os.path.normpath(os.path.join(self.url, key))  # strings: pathlib's checks cost ~0.1 ms per call
        if not path.startswith(self._inside):
            raise DestinationError(f"key {key!r} resolves outside the destination {self.root}")
        return Path(path)

    async def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            sweep(self.root)  # the empty folders of runs killed here before
            probe = self.root / f"{TEMP_MARK}probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise DestinationError(f"destination {self.root} is not writable: {exc.strerror or exc}; choose another --dest or fix its permissions") from None

    @asynccontextmanager
    async def open_write(self, key: str, *, size_hint: int | None = None) -> AsyncIterator[_FileWriter]:
        path = self._path(key)
        try:
            for stale in _stale_temp_files(path, self._name_max):
                if stale not in self._writing:  # another write of this key in this process is live
                    stale.unlink(missing_ok=True)  # left by a killed writer; the run lock says none is live
            temp, handle = self._create_temp(path)
        except OSError as exc:
            raise _os_error(exc, key) from None
        self._writing.add(temp)
        try:
            with handle:
                yield _FileWriter(handle, key)
                # One thread hop per file, not two: a small file's cost is mostly such hand-overs.
                await asyncio.to_thread(_durable, lambda: _publish(temp, path, handle), key)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        finally:
            self._writing.discard(temp)

    altered_hint = "Check the file system or mount under the destination (a failing disk, a filtering driver)."

    async def read_versioned(self, key: str) -> Versioned | None:
        try:
            data = await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            return None
        return Versioned(data, _version(data))

    async def put_if(self, key: str, data: bytes, *, version: str | None, private: bool = False) -> str | None:
        """Compare-and-swap under an OS file lock beside the object (`flock`: local disks; NFS
        only where its locks work, which is why S3 lakes use the store's conditional writes)."""
        path = self._path(key)

        def swap() -> str | None:
            self._folders.make(path.parent)  # noted, so an empty one goes with the run (filelock makes it again if a sweep took it)
            with FileLock(path.parent / f".{path.name}{LOCK_SUFFIX}"):
                try:
                    current: str | None = _version(path.read_bytes())
                except FileNotFoundError:
                    current = None
                if current != version:
                    return None
                temp, handle = self._create_temp(path)
                try:
                    with handle:
                        if private:
                            os.fchmod(handle.fileno(), 0o600)  # before a byte is in it; the rename keeps the mode
                        handle.write(data)
                        handle.flush()
                        os.fsync(handle.fileno())
                    _publish(temp, path)
                finally:
                    temp.unlink(missing_ok=True)
                return _version(data)

        try:
            return await asyncio.to_thread(swap)
        except OSError as exc:
            raise _os_error(exc, key) from None

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            return ObjectInfo(key, self._path(key).stat().st_size)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                return None  # no file can have that name; a write says why
            raise

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    def open_read(self, key: str) -> tuple[int, BinaryIO] | None:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            return None
        return os.fstat(handle.fileno()).st_size, handle

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for folder, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if d != TEMP_DIR]
            for name in sorted(files):
                if TEMP_MARK in name or name.endswith(LOCK_SUFFIX):
                    continue
                path = Path(folder, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield ObjectInfo(key, path.stat().st_size)

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _create_temp(self, path: Path) -> tuple[Path, BinaryIO]:
        """A new temporary file for the object at `path`, open for writing (unbuffered: chunks are
        large), in its folder's `.apilake-tmp/` (which another process may remove when empty)."""
        if len(os.fsencode(path.name)) > self._name_max:  # refused before any byte is written, not at the rename
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path.name)
        temp = path.parent / TEMP_DIR / f"{_temp_prefix(path.name, self._name_max)}{uuid.uuid4().hex[:_RANDOM]}"
        self._folders.note(temp.parent)
        while True:
            try:
                os.mkdir(temp.parent)
            except FileExistsError:
                pass  # (not `Path.mkdir(exist_ok=True)`: it fails if another writer removes the folder meanwhile)
            except FileNotFoundError:  # the object's own folder is new
                self._folders.make(path.parent)
                continue
            try:
                return temp, open(temp, "xb", buffering=0)
            except FileNotFoundError:  # another writer removed the empty folder just now: make it again
                continue

    async def close(self) -> None:
        """Remove the empty temporary folders, and those a failed write made: the lake shows only
        objects once no write is in flight (a folder another process still writes in is not
        empty, and stays)."""
        await asyncio.to_thread(self._folders.close)


NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs", "afs", "beegfs", "ocfs2", "gfs2"})


def network_filesystem(path: Path, mounts: str) -> str | None:
    """The type of the network file system `path` is on (by its mount table, `/proc/mounts`
    format), or None for a local one. FUSE mounts of remote stores (sshfs, s3fs) count too."""
    best, kind = "", ""
    target = path.resolve().as_posix() if path.exists() else path.as_posix()
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    if kind in NETWORK_FILESYSTEMS or kind.startswith(("fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone")):
        return kind
    return None


def _mounts() -> str:
    try:
        return Path("/proc/mounts").read_text()
    except OSError:
        return ""  # not Linux: no mount table to read, the lock alone


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


_RANDOM = 12  # hex digits that tell one temporary file of a key from another
NAME_MAX = 255  # bytes in a file name, where the file system does not say (Linux's ext4, XFS, tmpfs)


def _name_max(root: Path) -> int:
    """The longest file name (bytes) the file system of `root`, or of its nearest existing folder, takes."""
    for folder in (root, *root.parents):
        try:
            found = os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
        return found if found > 0 else NAME_MAX  # -1: no limit stated
    return NAME_MAX


def _temp_prefix(name: str, name_max: int) -> str:
    """How the temporary files of the object `name` start: `.<name>.apilake-tmp-`, or, where that
    leaves no room for the random part within `name_max`, as much of the name as fits and a digest
    of all of it. A name the file system takes must land, however little room it leaves."""
    prefix = f".{name}{TEMP_MARK}"
    room = name_max - _RANDOM
    if len(os.fsencode(prefix)) <= room:
        return prefix
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    tail = f"~{digest}{TEMP_MARK}"
    return f".{os.fsdecode(os.fsencode(name)[: room - 1 - len(tail)])}{tail}"


def _stale_temp_files(path: Path, name_max: int) -> list[Path]:
    """Temporary files of `path` left by a killed writer: an earlier run, or a Dask worker killed
    in this one whose retry runs here. Only the key's own, never another key's."""
    prefix = _temp_prefix(path.name, name_max)
    try:
        with os.scandir(path.parent / TEMP_DIR) as entries:
            return [Path(e.path) for e in entries if e.name.startswith(prefix)]
    except FileNotFoundError:
        return []


def _durable(step: Callable[[], None], key: str) -> None:
    try:
        step()
    except OSError as exc:
        raise _os_error(exc, key) from None


def _publish(temp: Path, path: Path, handle: BinaryIO | None = None) -> None:
    """Rename the finished file over its key (made durable first, given its open `handle`), and
    make the rename itself survive a power cut (one journal transaction holds both folders'
    entries, so syncing the target's folder commits it)."""
    if handle is not None:
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(exc: OSError, key: str) -> DestinationError:
    if exc.errno == errno.ENOSPC:
        return DestinationError(f"disk full while writing {key!r}; nothing was stored under that key")
    if exc.errno == errno.ENAMETOOLONG:
        name = max(key.split("/"), key=lambda part: len(part.encode()))
        return DestinationError(
            f"cannot write {key!r}: its name {name!r} ({len(name.encode())} bytes) is longer than the file system takes "
            "(NAME_MAX, 255 bytes on most); nothing was stored. Give the endpoint a `key:` template that names it shorter "
            "(e.g. from {file_date} and {dimension}), or land into S3"
        )
    return DestinationError(f"cannot write {key!r}: {exc.strerror or exc}")
