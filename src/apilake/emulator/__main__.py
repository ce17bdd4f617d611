"""``python -m apilake.emulator``: run the emulated vendor in the foreground."""

from __future__ import annotations

import argparse

from .config import EmulatorConfig
from .server import serve


def main(argv: list[str] | None = None) -> None:
    """Parse a few knobs and serve until SIGINT/SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m apilake.emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="API origin port (0 = any free port)")
    p.add_argument("--files-port", type=int, default=0, help="object-store origin port (0 = any)")
    p.add_argument("--token", default=EmulatorConfig.token)
    p.add_argument("--file-size", type=int, default=EmulatorConfig.file_size, help="bytes per bulk file")
    p.add_argument("--page-size", type=int, default=EmulatorConfig.page_size)
    p.add_argument("--rpm", type=int, default=None, help="requests per minute quota on the API origin")
    a = p.parse_args(argv)
    cfg = EmulatorConfig(token=a.token, file_size=a.file_size, page_size=a.page_size, requests_per_minute=a.rpm)
    serve(a.host, a.port, a.files_port, cfg)


if __name__ == "__main__":
    main()
