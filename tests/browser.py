"""Headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium, for page tests.

The flags keep Chromium off the network it would otherwise call home on (the tests' machines
may have none), and every browser gets a fresh profile. Screenshots go to `test-artifacts/`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "browser tests need Debian's chromium and chromium-driver (.ci/run installs them)"
    profile = tempfile.mkdtemp(prefix="apilake-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(browser: webdriver.Chrome, name: str) -> Path:
    """Save the whole page as test-artifacts/<name>.png and return the path."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, max(1000, min(int(height) + 40, 6000)))
    path = ARTIFACTS / f"{name}.png"
    assert browser.save_screenshot(str(path)), f"no screenshot saved at {path}"
    return path
