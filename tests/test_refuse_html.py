"""`refuse_html`: which answers to a file request are an HTML page instead of the file."""

from __future__ import annotations

import pytest

from apilake.errors import TransferError
from apilake.fetch.bulk import file_transfer, refuse_html
from apilake.jobfile import Job

JOB = Job.model_validate({"sources": [{"name": "s", "base_url": "http://vendor.test", "endpoints": [{"name": "e", "kind": "file", "path": "/export"}]}]})


@pytest.mark.parametrize(
    "content_type, name, refused",
    [
        ("text/html", "data.csv", True),
        ("text/html; charset=utf-8", "data.csv.gz", True),
        (" TEXT/HTML ;charset=UTF-8", "data.csv", True),
        ("application/xhtml+xml", "export", True),
        ("text/csv", "data.csv", False),
        ("application/gzip", "data.csv.gz", False),
        ("application/octet-stream", "data.csv", False),
        ("", "data.csv", False),
        ("text/html", "page.html", False),  # an HTML page is the file asked for
        ("text/html", "INDEX.HTM", False),
    ],
)
def test_refuse_html(content_type: str, name: str, refused: bool) -> None:
    source = JOB.sources[0]
    transfer = file_transfer("s/e/2026-11-25", f"http://vendor.test/{name}", f"s/e/dt=2026-11-25/{name}", source.endpoints[0], source, name)
    if not refused:
        refuse_html(transfer, {"content-type": content_type})
        return
    with pytest.raises(TransferError, match=r"answered an HTML page .* where a file was expected") as caught:
        refuse_html(transfer, {"content-type": content_type})
    assert caught.value.transient
