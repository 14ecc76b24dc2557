"""One headless Chromium shared by every browser test (the demo page of ``emitlab serve``, the
HTML run report), as pytest fixtures:

``chromium`` (session)
    Starts Chromium once, as its own process with a DevTools port (skips the test when Chromium
    or Playwright is missing), and stops it at the end of the session.
``browser_page`` (function)
    A factory: ``page = browser_page(viewport={"width": 1000, "height": 900})`` returns a new
    page in a fresh browser context of the shared Chromium (Playwright's sync API connected over
    CDP); every context is closed and Playwright stopped after the test.

Why Playwright is not kept open for the whole session: its sync API marks an asyncio loop as
running in the main thread for as long as it is started, so any later test calling
``asyncio.run`` would fail ("cannot be called from a running event loop"). Starting Playwright
per test costs about half a second; starting Chromium, the slow part, happens once.

Use them from tests/conftest.py (``from browser import browser_page, chromium``) so that all
test files share the one Chromium.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

#: Where Chromium is looked for: $EMITLAB_CHROMIUM, then these (paths or names on PATH).
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                 "--disable-dev-shm-usage", "--mute-audio"]
START_TIMEOUT_S = 60


def chromium_executable() -> str | None:
    for candidate in filter(None, (os.environ.get("EMITLAB_CHROMIUM"), *CHROMIUM_CANDIDATES)):
        path = candidate if Path(candidate).is_absolute() else shutil.which(candidate)
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    return None


class Chromium:
    """A running Chromium with remote debugging on a free loopback port."""

    def __init__(self, executable: str, profile: Path):
        self.executable = executable
        self.profile = Path(profile)
        self.log = self.profile.parent / "chromium.log"
        self.profile.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [executable, *CHROMIUM_ARGS, "--remote-debugging-port=0",
                 f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            self.endpoint = f"http://127.0.0.1:{self._wait_for_port()}"
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self) -> int:
        """Chromium writes the port it chose into ``<profile>/DevToolsActivePort`` once it listens."""
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            lines = active.read_text().splitlines() if active.is_file() else []
            if len(lines) >= 2 and lines[0].isdigit():
                return int(lines[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"Chromium exited with status {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Chromium opened no DevTools port in {START_TIMEOUT_S} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.is_file() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_chromium(tmp_dir: Path) -> Iterator[Chromium]:
    """The ``chromium`` fixture's body: skip without Chromium or Playwright, else start it once."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("Chromium not found (apt-get install -y chromium, or set EMITLAB_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    browser = Chromium(executable, Path(tmp_dir) / "profile")
    try:
        yield browser
    finally:
        browser.stop()


def open_pages(chromium: Chromium) -> Iterator[Callable[..., object]]:
    """The ``browser_page`` fixture's body: Playwright connected to the shared Chromium for one
    test; yields ``new_page(**context_options) -> Page``."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    if not chromium.alive():
        pytest.fail(f"the shared Chromium has exited:\n{chromium.log_tail()}")
    contexts = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(chromium.endpoint)

        def new_page(**context_options):
            context = browser.new_context(**context_options)
            contexts.append(context)
            return context.new_page()

        try:
            yield new_page
        finally:
            for context in contexts:
                context.close()
            browser.close()  # over CDP: disconnects; Chromium keeps running for the next test


@pytest.fixture(scope="session")
def chromium(tmp_path_factory) -> Iterator[Chromium]:
    """One headless Chromium for the whole session (see tests/browser.py)."""
    yield from start_chromium(tmp_path_factory.mktemp("chromium"))


@pytest.fixture
def browser_page(chromium) -> Iterator[Callable[..., object]]:
    """``browser_page(viewport=...) -> Page``: fresh pages in the shared Chromium for one test."""
    yield from open_pages(chromium)
