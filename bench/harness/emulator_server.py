"""Child process: the vendor emulator with a full `EmulatorConfig` given as JSON on the command line.

`apilake emulator` exposes only a few knobs; the benchmark also needs `file_sizes`, `dimensions`
and `quota_window_s`. Running it in its own process keeps its CPU out of every contender's numbers
(the harness reads it separately from /proc).

    python -m harness.emulator_server '{"file_size": 67108864, "metric_files": 8, "dimensions": []}'
"""

from __future__ import annotations

import json
import sys

from apilake.emulator import EmulatorConfig, serve


def main(argv: list[str]) -> None:
    fields = json.loads(argv[0]) if argv else {}
    if "dimensions" in fields:
        fields["dimensions"] = tuple(fields["dimensions"])
    serve("127.0.0.1", 0, 0, EmulatorConfig(**fields))


if __name__ == "__main__":
    main(sys.argv[1:])
