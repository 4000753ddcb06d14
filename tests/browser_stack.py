"""A whole railraft stack for browser tests: a real 3-node cluster with the demo catalogue, the web app in its own
process, and a headless Debian Chromium driven by playwright's sync API.

    with BrowserStack(tmp_path) as stack:            # cluster + demo data + `python -m web`
        with browser_page(stack) as page:             # a fresh browser context (own cookies)
            page.goto(stack.url("/"))

Why the web app runs in a subprocess: the app needs trio-asyncio, and importing trio_asyncio in a process breaks
playwright's sync API; this test process imports it too (other test modules do), so `playwright_session`
swaps in a fresh default asyncio event-loop policy while the browser runs and puts the old one back afterwards.

Screenshots go to test-artifacts/browser/ (kept after the run; CI can collect them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.demo_loader import ADMIN_PASSWORD_ENV, DemoCredentials, LoadReport, load_demo, today_ist
from store import civil

from .cluster_harness import HOST, ROOT, ProcessCluster, free_ports

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
DEMO_DAYS = 5


def chromium_available() -> bool:
    """True when Debian's chromium is installed (`.ci/run` installs it)."""
    return Path(CHROMIUM).exists()


class BrowserStack:
    """Cluster + demo data + web app; `close()` (or the context manager) stops every process it started."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.creds = DemoCredentials("admin", "adm-" + secrets.token_hex(8), "demo", "cust-" + secrets.token_hex(8))
        self.cluster = ProcessCluster(self.root / "cluster", 3, env={ADMIN_PASSWORD_ENV: self.creds.admin_password})
        self.web_port = free_ports(1)[0]
        self.web: subprocess.Popen | None = None
        self.web_log = self.root / "web.log"
        self.report: LoadReport | None = None
        self.first_date = today_ist()
        # Four days ahead: more than 48 h before any departure that day, so a cancellation refunds 90%.
        self.travel_date = civil.format_date(civil.parse_date(self.first_date) + 4)

    def __enter__(self) -> BrowserStack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the nodes, load the demo once a leader exists, then start the web app and wait for it."""
        self.cluster.start_all()
        self.cluster.wait_leader(timeout=20)
        self.report = asyncio.run(load_demo(self.cluster.addrs(), self.creds, days=DEMO_DAYS,
                                            start_date=self.first_date))
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["RAILRAFT_WEB_SECRET"] = secrets.token_hex(32)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.web_log, "ab") as logf:
            self.web = subprocess.Popen(
                [sys.executable, "-m", "web", "--nodes", ",".join(self.cluster.addrs()), "--host", HOST,
                 "--port", str(self.web_port), "--secret-file", str(self.root / "web_secret")],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(self.root),
                start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url("/healthz"), timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.web.poll() is not None:
                raise RuntimeError(f"web app exited with {self.web.returncode}:\n{self.web_log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"web app did not answer /healthz:\n{self.web_log.read_text()[-3000:]}")
            time.sleep(0.1)

    def url(self, path: str = "/") -> str:
        """The web app's URL for `path`."""
        return f"http://{HOST}:{self.web_port}{path}"

    def close(self) -> None:
        """Stop the web app (SIGTERM, then SIGKILL) and every node."""
        if self.web is not None and self.web.poll() is None:
            self.web.send_signal(signal.SIGTERM)
            try:
                self.web.wait(10)
            except subprocess.TimeoutExpired:
                self.web.kill()
                self.web.wait()
        self.cluster.close()

    def off_thread(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` in another thread: the cluster harness runs asyncio loops of its own, which cannot
        start in a thread where playwright's sync API has its loop running."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(fn, *args).result()

    def describe(self) -> str:
        """Logs for a failing test."""
        web = self.web_log.read_text()[-3000:] if self.web_log.exists() else ""
        # The cluster harness runs its own asyncio loop: not in this thread, where playwright's may be running.
        nodes = self.off_thread(self.cluster.describe)
        return f"--- web app log\n{web}\n{nodes}"


@contextlib.contextmanager
def playwright_session() -> Iterator[Any]:
    """A launched headless Chromium (playwright Browser), under a fresh asyncio policy (see the docstring)."""
    from playwright.sync_api import sync_playwright

    old_policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        asyncio.set_event_loop_policy(old_policy)


@contextlib.contextmanager
def browser_page(browser: Any, *, width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A page in its own browser context (its own cookies); console errors are collected in `page.errors`."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as test-artifacts/browser/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


def reset_artifacts() -> None:
    """Empty test-artifacts/browser/ so the screenshots are those of this run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
