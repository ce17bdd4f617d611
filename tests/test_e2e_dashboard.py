"""The dashboard in a real browser: `apilake dashboard` served, and `apilake status --html` as a file.

One lake with a known history (see `history.py`) built by real runs; headless Chromium reads the
grid, clicks a failed cell to see the unit's error, follows a run link, and looks for the token.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By

import history
from apilake.emulator import Emulator, EmulatorConfig
from browser import chromium, screenshot
from conftest import TOKEN, lake_objects, run_cli, start_cli


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[history.History]:
    with Emulator(config=EmulatorConfig(token=TOKEN)) as emu:
        yield history.build(tmp_path_factory.mktemp("dashboard"), emu)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as driver:
        yield driver


def span(lake: history.History) -> list[str]:
    return ["--from", lake.dates[0], "--to", lake.dates[-1]]


def cell(browser, endpoint: str, date: str):  # type: ignore[no-untyped-def]
    return browser.find_element(By.CSS_SELECTOR, f'td.cell[data-endpoint="{endpoint}"][data-date="{date}"]')


def check_page(browser, lake: history.History) -> None:  # type: ignore[no-untyped-def]
    """What both forms of the dashboard must show, on the page the browser has open."""
    states = {
        (c.get_attribute("data-endpoint"), c.get_attribute("data-date")): c.get_attribute("data-state")
        for c in browser.find_elements(By.CSS_SELECTOR, "td.cell")
    }
    assert states == lake.expected_states
    landed, failed, partly, missing, _ = lake.dates
    assert cell(browser, "dataai/details", failed).text == "0/2"
    assert cell(browser, "dataai/details", partly).text == "1/2"
    assert cell(browser, "dataai/countries", landed).text == "1/1"

    # a failed cell: its units and errors appear only once it is clicked
    detail = browser.find_element(By.ID, f"cell-dataai-details-{failed}")
    assert not detail.is_displayed()
    cell(browser, "dataai/details", failed).find_element(By.TAG_NAME, "a").click()
    assert detail.is_displayed()
    rows = {r.get_attribute("data-unit"): r.text for r in detail.find_elements(By.CSS_SELECTOR, "tr")[1:]}
    assert set(rows) == {f"dataai/details/{failed}/market=ios,product_id=1", f"dataai/details/{failed}/market=google-play,product_id=1"}
    assert all("HTTP 400 Bad Request" in text and "authorization=Bearer ***" in text for text in rows.values())

    cell(browser, "dataai/details", partly).find_element(By.TAG_NAME, "a").click()
    partial = browser.find_element(By.ID, f"cell-dataai-details-{partly}")
    missing_rows = partial.find_elements(By.CSS_SELECTOR, "tr.missing-unit")
    assert partial.is_displayed() and [r.get_attribute("data-unit") for r in missing_rows] == [f"dataai/details/{partly}/market=ios,product_id=1"]
    assert "HTTP 404 Not Found" in missing_rows[0].text

    assert [r.get_attribute("data-unit") for r in partial.find_elements(By.CSS_SELECTOR, "tr.present-unit")] == [
        f"dataai/details/{partly}/market=google-play,product_id=1"
    ]

    missing_cell = browser.find_element(By.ID, f"cell-dataai-countries-{missing}")
    cell(browser, "dataai/countries", missing).find_element(By.TAG_NAME, "a").click()
    assert "no run has tried it" in missing_cell.text
    cell(browser, "dataai/countries", landed).find_element(By.TAG_NAME, "a").click()
    assert browser.find_element(By.ID, f"cell-dataai-countries-{landed}").find_element(By.CSS_SELECTOR, "tr.present-unit a").text
    assert not cell(browser, "dataai/details", lake.dates[-1]).find_elements(By.TAG_NAME, "a")  # not yet due: nothing to see

    fill = browser.find_element(By.CSS_SELECTOR, "pre.fill").text.splitlines()
    assert fill == [f"apilake run {lake.job} --date {missing} --only countries", f"apilake run {lake.job} --from {failed} --to {missing} --only details"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr.run")) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 5
    # nothing to fetch from anywhere: no scripts, style sheets, images or frames
    assert not browser.find_elements(By.CSS_SELECTOR, "script, link, img, iframe")
    assert TOKEN not in browser.page_source


def open_failed_run(browser, lake: history.History) -> None:  # type: ignore[no-untyped-def]
    """From the failed cell, the run that tried it: every unit with its status and error."""
    failed = lake.dates[1]
    cell(browser, "dataai/details", failed).find_element(By.TAG_NAME, "a").click()
    browser.find_element(By.ID, f"cell-dataai-details-{failed}").find_element(By.CSS_SELECTOR, "a").click()
    run = next(d for d in browser.find_elements(By.CSS_SELECTOR, "section.run-detail") if d.is_displayed())
    units = {r.get_attribute("data-unit"): r.get_attribute("data-status") for r in run.find_elements(By.CSS_SELECTOR, "tr.unit")}
    assert units == {
        f"dataai/details/{failed}/market=ios,product_id=1": "failed",
        f"dataai/details/{failed}/market=google-play,product_id=1": "failed",
        f"dataai/countries/{failed}": "landed",
    }
    assert "HTTP 400 Bad Request" in run.text and f"dataai/countries/dt={failed}/data.json" in run.text
    assert TOKEN not in browser.page_source


def test_served_dashboard_in_a_browser(lake: history.History, browser) -> None:  # type: ignore[no-untyped-def]
    before = lake_objects(lake.lake)
    server = start_cli("dashboard", str(lake.job), "--port", "0", *span(lake))
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")  # loopback by default
        browser.get(url)
        check_page(browser, lake)
        screenshot(browser, "dashboard-served")
        open_failed_run(browser, lake)
        assert browser.current_url.startswith(url + "runs/")
        screenshot(browser, "dashboard-run")
        page = httpx.get(url)
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert httpx.post(url, content=b"x").status_code == 501  # read-only: no method but GET and HEAD
        assert httpx.get(url + "runs/..%2F..%2Fjob.yaml").status_code == 404
    finally:
        server.terminate()
        assert server.wait(timeout=10) == 0  # SIGTERM stops it cleanly
    assert lake_objects(lake.lake) == before


def test_status_html_file_in_a_browser(lake: history.History, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = tmp_path / "status.html"
    result = run_cli("status", str(lake.job), *span(lake), "--html", str(page))
    assert result.returncode == 1, result.stderr  # gaps
    assert f"dashboard written to {page}" in result.stdout
    assert TOKEN not in page.read_text()
    browser.get(page.as_uri())
    check_page(browser, lake)
    screenshot(browser, "dashboard-file")
    open_failed_run(browser, lake)
    assert browser.current_url.startswith(page.as_uri() + "#run-")  # the run's detail is inside the file


def test_dashboard_errors_are_messages(lake: history.History, tmp_path: Path) -> None:
    with Emulator(config=EmulatorConfig(token=TOKEN)) as emu:  # a port that is taken
        taken = emu.api_url.rsplit(":", 1)[1].rstrip("/")
        result = run_cli("dashboard", str(lake.job), "--port", taken)
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{taken}" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("status", "--dest", str(lake.lake), "--html", str(tmp_path / "x.html"))
    assert result.returncode == 2 and "status --html needs JOB.yaml" in result.stderr
    result = run_cli("status", str(lake.job), "--html", str(tmp_path / "no" / "such" / "x.html"))
    assert result.returncode == 2 and "cannot write it" in result.stderr
