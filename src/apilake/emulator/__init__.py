"""A loopback emulator of the data.ai vendor API (v1.3 JSON API + Bulk API).

Used by the demo, the end-to-end tests and the benchmarks: a real HTTP server
whose data is deterministic (see :mod:`.data`) and whose faults are injectable
(see :class:`Fault`).
"""

from .acme import Acme, AcmeConfig, acme_items, export_csv, report_file_names
from .config import EmulatorConfig
from .data import (
    ApiError,
    bulk_file_names,
    expected_file_names,
    expected_records,
    file_bytes,
    file_length,
    file_rows,
    file_sha256,
    gunzip_members,
    iter_file_chunks,
    iter_file_range,
    list_key,
)
from .faults import FAULT_KINDS, Fault
from .server import Emulator, serve
from .stats import RequestRecord, Stats

__all__ = [
    "FAULT_KINDS",
    "Acme",
    "AcmeConfig",
    "ApiError",
    "Emulator",
    "EmulatorConfig",
    "Fault",
    "RequestRecord",
    "Stats",
    "acme_items",
    "bulk_file_names",
    "expected_file_names",
    "expected_records",
    "export_csv",
    "file_bytes",
    "file_length",
    "file_rows",
    "file_sha256",
    "gunzip_members",
    "iter_file_chunks",
    "iter_file_range",
    "list_key",
    "report_file_names",
    "serve",
]
