"""The lease's rules on a local folder (its compare-and-swap is a file lock there): one holder,
takeover only after expiry or once the holder's OS lock is free, a lost lease noticed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from filelock import FileLock

from apilake.destinations.local import LocalDestination
from apilake.errors import JobFileError, RunLockedError
from apilake.jobfile import LeaseOptions, load_job
from apilake.lease import Lease, lease_key, unleased_warning, wanted

FAST = LeaseOptions(expiry_seconds=1, renew_seconds=0.2)


def test_one_holder_at_a_time_and_a_silent_one_is_taken_over_after_its_expiry(tmp_path: Path) -> None:
    lock = tmp_path / "holder.lock"

    async def scenario() -> None:
        dest = LocalDestination(tmp_path / "lake")
        first = Lease(dest, "jobs/daily.yaml", "run-1", FAST, lock=str(lock))
        await first.acquire()
        second = Lease(dest, "/elsewhere/daily.yaml", "run-2", FAST, lock=str(tmp_path / "other.lock"))
        with pytest.raises(RunLockedError, match=r"holds its lease \(host \S+, pid \d+, run run-1, since "):
            await second.acquire()
        await asyncio.sleep(1.1)  # run-1 never renewed: dead after its expiry
        await second.acquire()
        lost: list[str] = []
        await asyncio.wait_for(first.hold(lost.append), timeout=2)  # its next renewal finds run-2's lease
        assert lost and "taken over by another run" in lost[0]
        await first.release()  # never writes over run-2's lease
        doc = json.loads((tmp_path / "lake" / lease_key("daily.yaml")).read_text())
        assert doc["run_id"] == "run-2" and not doc["released"]
        await second.release()
        third = Lease(dest, "daily.yaml", "run-3", FAST, lock=str(lock))
        await third.acquire()  # a released lease is free at once

    with FileLock(lock):  # run-1's host lock stays taken: only the expiry tells it is dead
        asyncio.run(scenario())


def test_a_holder_on_this_host_whose_lock_is_free_is_dead_at_once(tmp_path: Path) -> None:
    held = tmp_path / "run-1.lock"
    dest = LocalDestination(tmp_path / "lake")

    def take(run_id: str) -> None:  # the default expiry (minutes): only run-1's lock can free its lease
        asyncio.run(Lease(dest, "daily.yaml", run_id, LeaseOptions(), lock=str(tmp_path / f"{run_id}.lock")).acquire())

    take("run-1")
    with FileLock(held), pytest.raises(RunLockedError, match="run run-1"):  # run-1 alive: its lock is held
        take("run-2")
    take("run-3")  # run-1's lock is free: it is dead, its lease taken over without waiting for the expiry
    doc = json.loads((tmp_path / "lake" / lease_key("daily.yaml")).read_text())
    assert doc["run_id"] == "run-3" and not doc["released"]


def test_lease_timings_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "lease: {expiry_seconds: 10, renew_seconds: 8}\nsources: [{name: s, base_url: 'https://x', endpoints: [{name: e, kind: json, path: /e}]}]\n"
    )
    with pytest.raises(JobFileError, match="renew at least twice per expiry_seconds"):
        load_job(path)


@pytest.mark.parametrize(
    "mode, needs_lease, wanted_",
    [
        ("auto", True, True),  # S3, a network file system
        ("auto", False, False),  # a local folder: its OS lock sees every run
        ("always", False, True),
        ("off", True, False),  # a store without conditional writes: the OS lock alone
        ("off", False, False),
    ],
)
def test_which_runs_hold_a_lease(tmp_path: Path, mode: str, needs_lease: bool, wanted_: bool) -> None:
    dest = LocalDestination(tmp_path / "lake")
    dest.needs_lease = needs_lease
    assert wanted(dest, LeaseOptions(mode=mode)) is wanted_


@pytest.mark.parametrize("written, mode", [("off", "off"), ("'off'", "off"), ("always", "always"), ("auto", "auto")])
def test_lease_mode_off_reads_as_written_though_yaml_makes_a_bare_off_false(tmp_path: Path, written: str, mode: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(f"lease: {{mode: {written}}}\nsources: [{{name: s, base_url: 'https://x', endpoints: [{{name: e, kind: json, path: /e}}]}}]\n")
    assert load_job(path).lease.mode == mode


@pytest.mark.parametrize(
    "settings, says",
    [
        ("lease: {mode: auto}", None),
        ("lease: {mode: off}", "requests_per_day is counted per host (in /var/quota)"),
        ("lease: {mode: off}\nquota_ledger: s3://ledgers/shared", "requests_per_day is counted in the quota_ledger s3://ledgers/shared"),
        ("lease: {mode: off}\nrefresh: yes", "refresh tokens are kept per host (in /var/tokens): a run on another host would spend"),
    ],
)
def test_a_run_without_a_lease_says_what_it_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: str, says: str | None) -> None:
    monkeypatch.setenv("APILAKE_QUOTA_DIR", "/var/quota")
    monkeypatch.setenv("APILAKE_TOKEN_DIR", "/var/tokens")
    auth = ", auth: {type: oauth2_refresh_token, token_url: 'https://x/t', client_id: i, client_secret: s, refresh_token: r}"
    settings, refresh = settings.replace("\nrefresh: yes", ""), "refresh: yes" in settings
    path = tmp_path / "job.yaml"
    path.write_text(f"{settings}\nsources: [{{name: s, base_url: 'https://x'{auth if refresh else ''}, endpoints: [{{name: e, kind: json, path: /e}}]}}]\n")
    job = load_job(path)
    if refresh:  # a token_store shared by the hosts keeps one chain: nothing more to say
        shared = unleased_warning(job.model_copy(update={"token_store": "s3://secrets/apilake"}), LocalDestination(tmp_path / "lake"))
        assert shared is not None and "refresh tokens" not in shared
    warning = unleased_warning(job, LocalDestination(tmp_path / "lake"))
    if says is None:
        assert warning is None
    else:
        assert warning is not None and "kept apart only on this host" in warning and says in warning


MOUNTS = r"""/dev/vda / ext4 rw,relatime 0 0
nas:/export/lake /mnt/lake nfs4 rw,relatime 0 0
//fs/share /mnt/smb\040share cifs rw 0 0
tmpfs /mnt/lake/scratch tmpfs rw 0 0
me@host:/data /mnt/sshfs fuse.sshfs rw 0 0
"""


@pytest.mark.parametrize(
    "path, kind",
    [
        ("/data/lake", None),
        ("/mnt/lake", "nfs4"),
        ("/mnt/lake/raw/dataai", "nfs4"),
        ("/mnt/lake/scratch/x", None),  # the longest mount point wins
        ("/mnt/lakehouse", None),  # a prefix of the name is not the mount
        ("/mnt/smb share/lake", "cifs"),
        ("/mnt/sshfs/lake", "fuse.sshfs"),
    ],
)
def test_lakes_on_network_file_systems_are_found_by_the_mount_table(path: str, kind: str | None) -> None:
    from apilake.destinations.local import network_filesystem

    assert network_filesystem(Path(path), MOUNTS) == kind


class HangingStore(LocalDestination):
    """A lake whose conditional writes stop answering once `hang` is set."""

    hang = False

    async def put_if(self, key: str, data: bytes, *, version: str | None) -> str | None:
        if self.hang:
            await asyncio.sleep(3600)
        return await super().put_if(key, data, version=version)


def test_a_renewal_the_store_never_answers_loses_the_lease_by_its_expiry(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        dest = HangingStore(tmp_path / "lake")
        lease = Lease(dest, "daily.yaml", "run-1", FAST, lock=str(tmp_path / "run.lock"))
        await lease.acquire()
        dest.hang = True
        lost: list[str] = []
        await asyncio.wait_for(lease.hold(lost.append), timeout=5)  # returns once the lease is given up
        return lost

    lost = asyncio.run(scenario())
    assert len(lost) == 1 and "did not answer in time" in lost[0]


def test_release_wins_over_a_renewal_that_landed_after_the_run_stopped_waiting_for_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        dest = LocalDestination(tmp_path / "lake")
        lease = Lease(dest, "daily.yaml", "run-1", FAST, lock=str(tmp_path / "run.lock"))
        await lease.acquire()
        await lease._renew()  # a renewal whose answer the cancelled heartbeat never took in
        await lease.release()

    asyncio.run(scenario())
    assert json.loads((tmp_path / "lake" / lease_key("daily.yaml")).read_text())["released"] is True
