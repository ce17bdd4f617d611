"""Bad input gets a clear error that names the file, key or unit, never a traceback, never data loss.

One test per row of the "Bad input" table in docs/reliability.md.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from apilake.emulator import Fault
from conftest import APILAKE, TOKEN, all_text, bulk_endpoint, lake_objects, records, run_cli, write_job

REAPER = Path(__file__).parents[1] / "bench" / "harness" / "reaper.py"

DATE = "2026-11-25"
DETAILS = {"name": "details", "kind": "json", "path": "/v1.3/apps/ios/app/{product_id}/details", "matrix": {"product_id": [1, 2]}}
BULK = bulk_endpoint("app_downloads")


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout


# -- the job file: exit 2 before any work --------------------------------------------------------

JOB_FILE_CASES = [
    pytest.param(lambda text: text.replace("kind: json", "kind: [json"), "not valid YAML", id="malformed-yaml"),
    pytest.param(
        lambda text: text.replace("kind: json", "kind: json\n    paginte: next_page"), "sources[0].endpoints[0].paginte: unknown key", id="unknown-key"
    ),
    pytest.param(lambda text: text.replace("concurrency: 4", "concurrency: lots"), "sources[0].concurrency: Input should be a valid integer", id="wrong-type"),
    pytest.param(lambda text: text.replace("kind: json", "kind: xml"), "sources[0].endpoints[0].kind: got 'xml'", id="unknown-kind"),
    pytest.param(
        lambda text: text.replace("${DATAAI_TOKEN}", "${NOT_SET_ANYWHERE}"),
        "sources[0].token: environment variable NOT_SET_ANYWHERE is not set",
        id="missing-var",
    ),
    pytest.param(lambda text: text.replace("path: /v1.3", "key: '{product_id}'\n    path: /v1.3"), "empty key", id="key-renders-empty"),
    pytest.param(lambda text: text.replace("path: /v1.3", "key: _apilake/{product_id}.json\n    path: /v1.3"), "_apilake/", id="key-inside-apilake"),
]


@pytest.mark.parametrize("edit, message", JOB_FILE_CASES)
def test_bad_job_file_exits_2_naming_file_and_key(tmp_path: Path, emulator, edit, message: str) -> None:
    job = write_job(tmp_path, emulator, [{**DETAILS, "matrix": {"product_id": ["", "x"]}} if "empty" in message else DETAILS])
    job.write_text(edit(yaml.safe_dump(yaml.safe_load(job.read_text()), sort_keys=False, default_flow_style=False, indent=2)))
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    no_traceback(result)
    assert emulator.stats.count() == 0
    assert not (tmp_path / "lake").exists()


# -- the network: the unit fails (exit 1), the message names the host --------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "base_url, message",
    [
        pytest.param(f"http://127.0.0.1:{closed_port()}", "cannot connect", id="unreachable-host"),
        pytest.param("http://no-such-host.invalid", "cannot connect", id="dns-failure"),
    ],
)
def test_unreachable_hosts_fail_their_units(tmp_path: Path, emulator, base_url: str, message: str) -> None:
    job = write_job(tmp_path, emulator, [DETAILS], source={"base_url": base_url})
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1
    assert message in result.stdout
    assert base_url.split("//")[1] in result.stdout
    no_traceback(result)


def test_tls_error_fails_without_retrying(tmp_path: Path, emulator) -> None:
    https_to_plain = emulator.api_url.replace("http://", "https://")
    job = write_job(tmp_path, emulator, [DETAILS], source={"base_url": https_to_plain})
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1
    assert "TLS error" in result.stdout
    assert {u["attempts"] for u in records(tmp_path / "lake")[-1]["units"]} == {1}


# -- the destination ------------------------------------------------------------------------------


def test_destination_that_is_not_writable_exits_2(tmp_path: Path, emulator) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    job = write_job(tmp_path, emulator, [DETAILS])
    result = run_cli("run", str(job), "--date", DATE, "--dest", str(blocker / "lake"))
    assert result.returncode == 2
    assert "is not writable" in result.stderr and str(blocker / "lake") in result.stderr
    no_traceback(result)
    assert emulator.stats.count() == 0


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 1 MiB tmpfs: a real full disk (needs root and mount; skipped where unavailable)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_fails_the_unit_and_leaves_no_partial_file(tmp_path: Path, emulator, tiny_disk: Path) -> None:
    emulator.config.file_sizes = {"data.": 3_000_000}  # metric files do not fit in 1 MiB
    emulator.config.file_size = 20_000
    job = write_job(tmp_path, emulator, [BULK])
    result = run_cli("run", str(job), "--date", DATE, "--dest", str(tiny_disk / "lake"))
    assert result.returncode == 1
    assert "disk full" in result.stdout
    landed = lake_objects(tiny_disk / "lake")
    assert landed and not any("/metrics/" in k for k in landed)  # dimension files fit and landed whole
    assert [p for p in tiny_disk.rglob("*") if ".apilake-tmp-" in p.name] == []
    no_traceback(result)


# -- what the vendor sends ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, message",
    [
        pytest.param(Fault(match="get-bulk-urls", kind="body", body=b"<html>maintenance</html>", content_type="text/html"), "not JSON", id="listing-not-json"),
        pytest.param(Fault(match="get-bulk-urls", kind="body", body=b'{"code": 200, "data": {"urls": []}}'), "offers no files", id="listing-zero-urls"),
        pytest.param(Fault(match="get-bulk-urls", kind="body", body=b'{"code": 200, "data": {}}'), "no list of URLs at 'data.urls'", id="listing-without-urls"),
    ],
)
def test_bad_listings_fail_their_unit(tmp_path: Path, emulator, fault: Fault, message: str) -> None:
    emulator.config.faults = [fault]
    job = write_job(tmp_path, emulator, [BULK])
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1
    assert message in result.stdout
    assert lake_objects(tmp_path / "lake") == {}


def test_duplicate_urls_in_a_listing_land_once(tmp_path: Path, emulator) -> None:
    import httpx

    real = httpx.get(
        f"{emulator.api_url}/v2/bulk/get-bulk-urls",
        params=BULK["params"] | {"start_date": DATE, "end_date": DATE},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    urls = real["data"]["urls"]
    emulator.config.faults = [Fault(match="get-bulk-urls", kind="body", body=json.dumps({"code": 200, "data": {"urls": urls + urls[:2]}}).encode())]
    emulator.stats.reset()
    job = write_job(tmp_path, emulator, [BULK])
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 0, result.stdout
    assert len(lake_objects(tmp_path / "lake")) == len(urls)
    assert emulator.stats.count(origin="files") == len(urls)
    [listing] = [u for u in records(tmp_path / "lake")[-1]["units"] if u["kind"] == "listing"]
    assert listing["listing"]["duplicates"] == 2


def test_a_2_gb_json_body_is_capped_not_buffered(tmp_path: Path, emulator) -> None:
    emulator.config.faults = [Fault(match="/app/2/details", kind="huge_json", size=2 * 1024**3)]
    job = write_job(tmp_path, emulator, [DETAILS], source={"max_json_mb": 4})
    result = run_cli("run", str(job), "--date", DATE)
    assert result.returncode == 1
    assert "larger than max_json_mb (4 MB)" in result.stdout
    assert sorted(lake_objects(tmp_path / "lake")) == ["dataai/details/dt=2026-11-25/product_id=1.json"]


def gzip_of(*pieces: bytes, flush: int = zlib.Z_FINISH) -> bytes:
    stream = zlib.compressobj(9, zlib.DEFLATED, 31)  # a gzip member
    return b"".join(stream.compress(p) for p in pieces) + stream.flush(flush)


#: What the hostile server answers, each `Content-Encoding: gzip`: a bomb that never ends (768 KiB
#: of `{},` per ~800 bytes sent: a deflate block after a full flush refers to nothing before it,
#: so it can be sent again and again), a small body that parses to ~25 bytes per byte, and a page.
BOMB_HEAD = gzip_of(b"[", flush=zlib.Z_FULL_FLUSH)
BOMB_BLOCK = (lambda deflate: deflate.compress(b"{}," * (1 << 18)) + deflate.flush(zlib.Z_FULL_FLUSH))(zlib.compressobj(9, zlib.DEFLATED, -15))
OBJECTS = b"[" + b"{}," * 500_000 + b"{}]"  # 1.5 MB: under max_json_mb (2), ~40 MB parsed
FINE = b'[{"id":1,"name":"ok"}]'


class HostileVendor(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        if self.path.startswith("/bomb"):
            self.end_headers()  # no Content-Length: the stream ends when the client hangs up
            try:
                self.wfile.write(BOMB_HEAD)
                for _ in range(4096):  # 3 GiB inflated, if nobody stops reading
                    self.wfile.write(BOMB_BLOCK)
            except OSError:
                pass
            return
        body = gzip_of(OBJECTS if self.path.startswith("/objects") else FINE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile_vendor() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileVendor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def run_measured(*args: str, out: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """`apilake` run to its end, with its own peak resident memory in bytes.

    Started through the benchmarks' tiny reaper: a process's peak RSS starts at that of the
    process that forked it, so forked from this test worker (hundreds of MB late in a run) the
    peak would measure the worker, not apilake.
    """
    usage = out / "usage.json"
    reaper = [sys.executable, "-S", "-I", str(REAPER), str(usage), "120", "--", APILAKE, *args]
    with open(out / "stdout", "w") as stdout, open(out / "stderr", "w") as stderr:
        subprocess.run(reaper, stdout=stdout, stderr=stderr, check=True)
    measured = json.loads(usage.read_text())
    result = subprocess.CompletedProcess(args, measured["exit_code"], (out / "stdout").read_text(), (out / "stderr").read_text())
    return result, measured["peak_rss_bytes"]


def test_a_gzip_bomb_and_a_parse_bomb_fail_their_units_and_memory_stays_bounded(tmp_path: Path, hostile_vendor: str) -> None:
    endpoints = [{"name": name, "kind": "json", "path": f"/{name}"} for name in ("bomb", "objects", "fine")]
    retry = {"attempts": 3, "backoff_initial": 0.05, "backoff_max": 0.2}
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "destination": str(tmp_path / "lake"),
                "sources": [{"name": "hostile", "base_url": hostile_vendor, "max_json_mb": 2, "retry": retry, "endpoints": endpoints}],
            }
        )
    )
    result, peak = run_measured("run", str(job), "--date", DATE, out=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    no_traceback(result)
    assert "internal error" not in result.stdout + result.stderr
    units = {u["endpoint"]: u for u in records(tmp_path / "lake")[-1]["units"]}
    assert "page 1: response is larger than max_json_mb (2 MB)" in units["bomb"]["error"]
    assert "would take about" in units["objects"]["error"] and "than 20 × max_json_mb (2 MB); raise sources[].max_json_mb" in units["objects"]["error"]
    assert units["bomb"]["attempts"] == units["objects"]["attempts"] == 1  # the vendor's data: the same next time
    assert lake_objects(tmp_path / "lake") == {f"hostile/fine/dt={DATE}/data.json": FINE}
    assert peak < 400 << 20  # loosely: the bomb inflated past its limit in memory would take GBs


def test_secret_in_a_query_string_is_masked_everywhere(tmp_path: Path, emulator) -> None:
    emulator.config.faults = [Fault(match="/app/2/details", kind="echo_secret", status=404)]
    job = write_job(tmp_path, emulator, [{**DETAILS, "params": {"api_key": "${VENDOR_API_KEY}"}}])
    result = run_cli("run", str(job), "--date", DATE, "--verbose", env={"VENDOR_API_KEY": "qk-55aa77bb"})
    assert result.returncode == 1
    assert "qk-55aa77bb" not in all_text(tmp_path / "lake", result)
    assert TOKEN not in all_text(tmp_path / "lake", result)
    dry = run_cli("run", str(job), "--date", DATE, "--dry-run", env={"VENDOR_API_KEY": "qk-55aa77bb"})
    assert "api_key=***" in dry.stdout and "qk-55aa77bb" not in dry.stdout


# -- hostile job files and hostile values --------------------------------------------------------


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [DETAILS])
    levels = ['lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]" for i in range(1, 10)]
    job.write_text(job.read_text() + "profiles:\n  bomb:\n" + "".join(f"    {line}\n" for line in levels))
    result = run_cli("validate", str(job), timeout=30)
    assert result.returncode == 2, result.stderr
    assert str(job) in result.stderr and "YAML aliases" in result.stderr and "alias bomb" in result.stderr
    no_traceback(result)


def test_an_unset_variable_in_a_path_is_named_by_offline_commands(tmp_path: Path, emulator) -> None:
    endpoint = {**DETAILS, "path": "/v1.3/accounts/${ACCOUNT_ID}/app/{product_id}/details"}
    job = write_job(tmp_path, emulator, [endpoint])
    for command in (["status", str(job)], ["run", str(job), "--date", DATE, "--dry-run"]):
        result = run_cli(*command)
        assert result.returncode == 2, result.stderr
        assert "sources[0].endpoints[0].path: environment variable ACCOUNT_ID is not set" in result.stderr
        assert "unknown placeholder" not in result.stderr
        no_traceback(result)
    dry = run_cli("run", str(job), "--date", DATE, "--dry-run", env={"ACCOUNT_ID": "a-1", "DATAAI_TOKEN": ""})
    assert dry.returncode == 0 and "/v1.3/accounts/a-1/app/1/details" in dry.stdout  # a credential may still be unset


@pytest.mark.parametrize("value", [".", ".."])
def test_dot_values_stay_one_encoded_path_segment(tmp_path: Path, emulator, value: str) -> None:
    endpoint = {"name": "details", "kind": "json", "path": "/v1.3/apps/{market}/app/1/details", "matrix": {"market": [value]}}
    job = write_job(tmp_path, emulator, [endpoint])
    result = run_cli("run", str(job), "--date", DATE)
    encoded = "%2E" * len(value)
    assert [r.target for r in emulator.stats.requests] == [f"/v1.3/apps/{encoded}/app/1/details"]
    assert result.returncode == 1  # the vendor knows no such market: the unit fails, nothing else is asked
    dry = run_cli("run", str(job), "--date", DATE, "--dry-run")
    assert f"/apps/{encoded}/app/1/details" in dry.stdout
    assert f"dataai/details/dt={DATE}/market={encoded}.json" in dry.stdout


def test_a_header_value_with_crlf_is_refused(tmp_path: Path, emulator) -> None:
    job = write_job(tmp_path, emulator, [DETAILS], source={"headers": {"X-Trace": "${TRACE}"}})
    result = run_cli("run", str(job), "--date", DATE, env={"TRACE": "abc\r\nX-Injected: yes"})
    assert result.returncode == 2, result.stderr
    assert "sources[0].headers: header X-Trace: its value holds a control character" in result.stderr
    assert "X-Injected" not in result.stderr
    assert emulator.stats.count() == 0
    no_traceback(result)


def test_control_characters_from_a_server_cannot_forge_log_lines(tmp_path: Path, emulator) -> None:
    closed = closed_port()
    hostile = f"http://127.0.0.1:{closed}/objects/x?name=metrics/a%0aFORGED%0d\u001b[2J\u0085\u2028.csv.gz"
    emulator.config.faults = [Fault(match="get-bulk-urls", kind="body", body=json.dumps({"code": 200, "data": {"urls": [hostile]}}).encode())]
    job = write_job(tmp_path, emulator, [BULK])
    log_file = tmp_path / "apilake.log"
    result = run_cli("run", str(job), "--date", DATE, "--log-file", str(log_file))
    assert result.returncode == 1
    status = run_cli("status", str(job), "--from", DATE, "--to", DATE)  # the failure as the run record kept it
    assert "FAILED" in status.stdout and "internal error" not in status.stdout
    assert "a\\nFORGED\\r\\x1b[2J\\x85\\u2028" in status.stdout
    for text in (result.stdout, result.stderr, log_file.read_text(), status.stdout):
        assert "a\\nFORGED\\r\\x1b[2J\\x85\\u2028" in text  # visible, escaped
        assert not any(line.startswith("FORGED") for line in text.splitlines())
        assert not {"\x1b", "\r", "\x85", "\u2028"} & set(text)


def test_a_key_that_is_another_endpoints_page_2_is_refused_before_any_request(tmp_path: Path, emulator) -> None:
    paged = {**DETAILS, "matrix": {"product_id": [1]}, "key": "{source}/app/{date}.json", "paginate": {"type": "json_link", "next_url_path": "links.next"}}
    other = {**DETAILS, "name": "other", "matrix": {"product_id": [2]}, "key": "{source}/app/{date}.page-0002.json"}
    job = write_job(tmp_path, emulator, [paged, other])
    for extra in ([], ["--force"], ["--dry-run"]):
        result = run_cli("run", str(job), "--date", DATE, *extra)
        assert result.returncode == 2, result.stdout
        assert (
            f"page 2 of 'dataai/details/{DATE}/product_id=1' (dataai/details) lands on key 'dataai/app/{DATE}.page-0002.json', "
            f"the key of 'dataai/other/{DATE}/product_id=2' (dataai/other)" in result.stderr
        )
        no_traceback(result)
    assert emulator.stats.count() == 0
    assert run_cli("run", str(job), "--date", DATE, "--only", "other").returncode == 0  # each alone is fine
