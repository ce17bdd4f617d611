"""The console script's exit code survives obstore's Rust runtime at interpreter exit.

Once obstore has made requests, its worker threads may hand a result to Python while Python
finalizes; Python 3.11 ends such a thread in a way Rust turns into SIGABRT (exit code -6 / 134)
in a good share of runs. `cli.entry` leaves without the teardown when obstore is loaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from moto_server import s3

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import obstore
    from obstore.store import S3Store
    from apilake import cli

    store = S3Store("exit", aws_endpoint_url_s3=sys.argv[1], region="us-east-1", access_key_id="k",
                    secret_access_key="s", client_options={"allow_http": True})

    async def puts():
        await asyncio.gather(*(obstore.put_async(store, f"k{i}", b"x" * 200_000) for i in range(20)))

    @cli.main.command("puts")  # a command whose last act is obstore's, as an S3 run's can be
    def puts_command():
        asyncio.run(puts())
        print("put 20")

    sys.argv = ["apilake", "puts"]
    cli.entry()
    """
)


def test_the_exit_code_is_the_commands_after_obstore_ran(moto_endpoint: str) -> None:
    # With `cli.main` (the interpreter's own teardown) a few of the 16 end in SIGABRT.
    s3(moto_endpoint).create_bucket(Bucket="exit")
    runs = [subprocess.run([sys.executable, "-c", SCRIPT, moto_endpoint], capture_output=True, text=True) for _ in range(16)]
    assert [r.returncode for r in runs] == [0] * 16, [r.stderr[-300:] for r in runs if r.returncode]
    assert all(r.stdout == "put 20\n" for r in runs)  # flushed before leaving
