"""Runtime configuration of the emulator (mutable: tests swap faults between runs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .faults import Fault

__all__ = ["EmulatorConfig"]


@dataclass
class EmulatorConfig:
    """How the emulated vendor behaves; read afresh on every request."""

    token: str = "demo-token"
    page_size: int = 10
    metric_files: int = 2
    dimensions: tuple[str, ...] = ("product_id", "company_id")
    file_size: int = 64 * 1024
    file_sizes: dict[str, int] = field(default_factory=dict)
    latency_ms: float = 0
    #: latency of the files origin (pre-signed object store), before it answers
    files_latency_ms: float = 0
    #: per-connection bandwidth of every body, like a long-distance link (None: as fast as loopback)
    bytes_per_second: int | None = None
    requests_per_minute: int | None = None
    quota_retry_after: int | None = None
    #: length of the quota's sliding window; 60 s like the vendor, shorter in tests
    quota_window_s: float = 60.0
    #: gzip JSON answers for clients that send `Accept-Encoding: gzip`, as many APIs do
    compress_json: bool = False
    faults: list[Fault] = field(default_factory=list)

    def file_size_for(self, name: str) -> int:
        """Target size of a bulk file: the first ``file_sizes`` key contained in the name wins.

        The served length is ``data.file_length(name, target)``, which equals the
        target for anything but tiny targets.
        """
        for part, size in self.file_sizes.items():
            if part in name:
                return size
        return self.file_size
