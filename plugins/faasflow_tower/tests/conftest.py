"""A real ``faasflow up`` serving the tests' stack (with the dashboard mounted at /ui), and a
headless Chromium driven by Playwright's Python package.

Chromium is Debian's (``apt-get install --no-install-recommends chromium``) and Playwright is
only the Python package (``pip install playwright``; never ``playwright install``, which
downloads a browser): scripts/test installs both. When either is missing the browser tests fail
saying so, they are never skipped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from faasflow.runtime.process import GatewayProcess

STACK = Path(__file__).parent / "stack" / "stack.yml"
IMAGES = Path(__file__).resolve().parents[3] / "docs" / "images"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
INSTALL = ("install them as scripts/test does: apt-get install -y --no-install-recommends "
           "chromium && pip install playwright==1.65.2 (never `playwright install`)")


def _chromium() -> str:
    for name in ("chromium", "chromium-headless-shell"):
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                      else None)
        if path:
            return path
    pytest.fail(f"no Chromium on this machine: {INSTALL}", pytrace=False)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("tower-gateway")
    with GatewayProcess(STACK, data_dir=data, processes=2) as process:
        yield process


@pytest.fixture(scope="session")
def ui(gateway: GatewayProcess) -> str:
    assert f"tower: {gateway.url}/ui/" in gateway.text, gateway.text
    return gateway.url + "/ui"


@pytest.fixture
def start(gateway: GatewayProcess) -> Callable[[str, bytes], str]:
    """Start a request of a flow through the gateway; its id."""

    def run(flow: str, body: bytes) -> str:
        answer = gateway.post(f"/function/{flow}", data=body)
        assert answer.status_code in (200, 202, 500), answer.text
        return answer.headers["X-Faas-Flow-Reqid"]

    return run


Until = Callable[[dict[str, Any]], bool]


@pytest.fixture
def wait_record(gateway: GatewayProcess) -> Callable[[str, str, Until], dict[str, Any]]:
    """Poll a request's record until ``until(record)``; the record."""

    def wait(flow: str, rid: str, until: Until) -> dict[str, Any]:
        return _wait(gateway, flow, rid, until)

    return wait


def _wait(gateway: GatewayProcess, flow: str, rid: str, until: Until,
          timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        reply = requests.get(f"{gateway.url}/function/{flow}/flow/{rid}", timeout=10)
        if reply.status_code == 200:
            doc = reply.json()
            if until(doc):
                return doc
        time.sleep(0.1)
    raise AssertionError(f"request {rid} of {flow} did not get there: {doc}")


@pytest.fixture(scope="session")
def browser_context() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the Python package playwright is missing: {INSTALL}", pytrace=False)
    executable = _chromium()
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=FLAGS,
            viewport={"width": 1000, "height": 760})
        # nothing but loopback: a page reaching out to the internet fails its test
        outside: list[str] = []

        def guard(route: Any) -> None:
            url = route.request.url
            if url.startswith(("http://127.0.0.1", "about:", "data:")):
                route.continue_()
            else:
                outside.append(url)
                route.abort()

        ctx.route("**/*", guard)
        ctx.outside = outside
        yield ctx
        ctx.close()


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    pg = browser_context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("dialog", lambda dialog: dialog.accept())
    yield pg
    pg.close()
    assert not errors, errors
    assert not browser_context.outside, f"requests left 127.0.0.1: {browser_context.outside}"


@pytest.fixture
def shot(page: Any, tmp_path: Path) -> Callable[[str], None]:
    """Take a screenshot of the page; with FAASFLOW_TOWER_SCREENSHOTS=1 it replaces the one in
    docs/images that docs/dashboard.md shows (so an ordinary test run leaves the tree clean)."""
    folder = IMAGES if os.environ.get("FAASFLOW_TOWER_SCREENSHOTS") == "1" else tmp_path

    def save(name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"tower-{name}.png"
        page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 0

    return save
