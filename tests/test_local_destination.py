"""The local lake's writer: pieces written whole, in order, whatever `writev` takes at a time."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from apilake.destinations import local
from apilake.destinations.local import LocalDestination


def write(root: Path, key: str, *batches: tuple[bytes, ...]) -> bytes:
    async def go() -> None:
        dest = LocalDestination(root)
        async with dest.open_write(key) as writer:
            for batch in batches:
                await writer.write(*batch)

    asyncio.run(go())
    return (root / key).read_bytes()


@pytest.mark.parametrize("most", [1, 3, 7, 1 << 30], ids=["1 byte", "3 bytes", "7 bytes", "unlimited"])
def test_short_writes_still_write_every_piece_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, most: int) -> None:
    real = os.writev

    def short(fd: int, views: list[memoryview]) -> int:  # a kernel may take less than it was given
        data = b"".join(bytes(v) for v in views)[:most]
        return real(fd, [data])

    monkeypatch.setattr(local.os, "writev", short)
    batches = ((b"abc", b"", b"defgh"), (b"i",), (bytes(range(256)) * 3, b"end"))
    assert write(tmp_path, "a/b.bin", *batches) == b"".join(b"".join(batch) for batch in batches)


def test_more_pieces_than_one_writev_takes(tmp_path: Path) -> None:
    pieces = tuple(bytes([i % 251]) * (i % 5 + 1) for i in range(3 * local._IOV_MAX + 17))
    assert write(tmp_path, "many.bin", pieces) == b"".join(pieces)


def test_many_concurrent_writes_into_one_folder_all_land_and_leave_no_temporary_folder(tmp_path: Path) -> None:
    # Another process's destination closing removes the empty `.apilake-tmp/` while writers here
    # are about to create their files in it.
    async def go() -> None:
        dest, other = LocalDestination(tmp_path), LocalDestination(tmp_path)

        async def put(i: int) -> None:
            async with dest.open_write(f"day/{i}.json") as writer:
                await writer.write(b"%d" % i)
            if i % 10 == 0:
                await other.put("day/other.json", b"x")
                await other.close()

        await asyncio.gather(*(put(i) for i in range(400)))
        await dest.close()

    asyncio.run(go())
    (tmp_path / "day" / "other.json").unlink()
    assert sorted(p.name for p in (tmp_path / "day").iterdir()) == sorted(f"{i}.json" for i in range(400))
    assert all((tmp_path / "day" / f"{i}.json").read_bytes() == b"%d" % i for i in range(400))


def test_the_temporary_folder_is_kept_between_writes_and_removed_on_close(tmp_path: Path) -> None:
    temps = tmp_path / "day" / local.TEMP_DIR

    async def go() -> None:
        dest = LocalDestination(tmp_path)
        await dest.put("day/a.json", b"a")
        assert temps.is_dir() and not any(temps.iterdir())  # no per-file mkdir and rmdir
        await dest.put("day/b.json", b"b")
        await dest.close()

    asyncio.run(go())
    assert sorted(p.name for p in (tmp_path / "day").iterdir()) == ["a.json", "b.json"]


def test_leftovers_of_a_killed_writer_are_removed_with_the_next_write_of_their_key(tmp_path: Path) -> None:
    temps = tmp_path / "day" / local.TEMP_DIR
    temps.mkdir(parents=True)
    mine, other = temps / f".a.json{local.TEMP_MARK}0123456789ab", temps / f".b.json{local.TEMP_MARK}0123456789ab"
    mine.write_bytes(b"half")
    other.write_bytes(b"half")
    assert write(tmp_path, "day/a.json", (b"whole",)) == b"whole"
    assert not mine.exists() and other.exists()  # another key's file is not this write's to remove


def test_two_writes_of_one_key_in_flight_together_do_not_remove_each_others_temporary_file(tmp_path: Path) -> None:
    async def go() -> None:
        dest = LocalDestination(tmp_path)
        async with dest.open_write("day/a.json") as first:
            await first.write(b"first")
            async with dest.open_write("day/a.json") as second:  # e.g. two listings offering one file
                await second.write(b"second")
            await first.write(b" still writing")

    asyncio.run(go())
    assert (tmp_path / "day" / "a.json").read_bytes() == b"first still writing"  # the last to finish wins, whole


@pytest.mark.parametrize(
    "name, name_max",
    [
        ("a.json", 255),
        ("f" * 217 + ".csv", 255),  # the longest name whose temporary name is `.<name>.apilake-tmp-<12>`
        ("f" * 218 + ".csv", 255),  # one byte more: cut
        ("f" * 251 + ".csv", 255),
        ("é" * 125 + ".gz", 255),  # two bytes a character: a cut may fall inside one
        ("f" * 100 + ".csv", 143),  # eCryptfs
    ],
)
def test_a_temporary_name_fits_the_file_system_and_is_the_keys_own(name: str, name_max: int) -> None:
    prefix = local._temp_prefix(name, name_max)
    assert len(os.fsencode(prefix)) + local._RANDOM <= name_max
    assert prefix.startswith(".") and prefix.endswith(local.TEMP_MARK)
    if len(os.fsencode(f".{name}{local.TEMP_MARK}")) + local._RANDOM <= name_max:
        assert prefix == f".{name}{local.TEMP_MARK}"  # readable where it fits
    else:
        assert local._temp_prefix(name[:-1] + "x", name_max) != prefix  # a cut keeps names that differ at the end apart


def test_a_live_writers_folders_survive_a_sweep_and_a_dead_ones_empty_folders_go(tmp_path: Path) -> None:
    from apilake.destinations.folders import FolderJournal, sweep

    live, dead = FolderJournal(tmp_path), FolderJournal(tmp_path)
    live.make(tmp_path / "live" / "day")
    dead.make(tmp_path / "dead" / "day")
    dead.make(tmp_path / "dead" / "full")
    (tmp_path / "dead" / "full" / "object").write_bytes(b"x")
    (tmp_path / "mine").mkdir()  # the user's
    os.close(dead._fd)  # as the kernel does when its process is killed: the journal's lock is free
    sweep(tmp_path)
    assert (tmp_path / "live" / "day").is_dir()
    assert not (tmp_path / "dead" / "day").exists() and (tmp_path / "dead" / "full" / "object").exists()
    assert (tmp_path / "mine").is_dir()
    live.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dead", "mine"]  # its journal and the top .apilake-tmp/ too


def test_open_read_streams_a_landed_object_and_refuses_a_key_outside(tmp_path: Path) -> None:
    from apilake.errors import DestinationError

    body = write(tmp_path, "a/b.json", (b"[1,", b"2]"))
    size, stream = LocalDestination(tmp_path).open_read("a/b.json")
    with stream:
        assert (size, stream.read()) == (len(body), b"[1,2]")
    assert LocalDestination(tmp_path).open_read("a/missing.json") is None
    (tmp_path.parent / "outside.json").write_bytes(b"secret")
    with pytest.raises(DestinationError, match="outside the destination"):
        LocalDestination(tmp_path).open_read("../outside.json")
