"""A real job system for the browser tests: Redis (CUBEQA_TEST_REDIS), a SQLite store filled by real stage
workers of two model versions, `cubeqa api` (open and token-protected) subprocesses, and a headless Chromium
(/usr/bin/chromium, Debian's package) driven by Playwright. A missing Chromium fails the tests: it is never a
skip. Screenshots go to the session's temporary directory, named in the terminal summary."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from browser.browser_stack import (
    CHROMIUM,
    CHROMIUM_ARGS,
    QUESTIONS,
    SCREENSHOTS,
    TOKEN,
    Stack,
    free_port,
    reference_items,
    wait_http,
)

__all__ = ["QUESTIONS", "TOKEN", "reference_items"]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium; .ci/run installs it. Missing, every browser test fails (never skips)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does this as root)")
    return str(CHROMIUM)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, chromium_path: str, broker_url: str) -> Iterator[Stack]:
    """Batches answered by real workers: `a` by the shipped bundle with the phrase-bank decoder, `b` (the same
    questions) by a copy of it named default-b (another model version) with the hybrid decoder, which answers
    generatively below a bank score of 0.5; two APIs on the store."""
    from jobsystem import service_env, start, stop, wait_for_batch

    from cubeqa.settings import default_bundle_dir
    from pipeline.decoder_workflows import save_threshold
    from storage.db import make_engine, session_factory, upgrade
    from storage.repository import iter_results

    root = tmp_path_factory.mktemp("browser-stack")
    database_url = f"sqlite:///{root / 'store.db'}"  # the session's Redis database (one Celery app per process: see tests/conftest.py)
    upgrade(database_url)
    sessions = session_factory(make_engine(database_url))
    stack = Stack(root=root, broker_url=broker_url, database_url=database_url, sessions=sessions, api="", api_token="",
                  env=service_env(broker_url, database_url))
    servers: list[subprocess.Popen] = []
    try:
        api_port, token_port = free_port(), free_port()
        servers.append(start(["api", "--port", str(api_port)], stack.env, root / "api.log"))
        servers.append(start(["api", "--port", str(token_port)], {**stack.env, "CUBEQA_API_TOKEN": TOKEN}, root / "api-token.log"))
        stack.api, stack.api_token = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{token_port}"
        stack.start_workers("a")
        items = reference_items(QUESTIONS)
        stack.batches["a"] = stack.submit(items, 16, "browser-test:a")
        wait_for_batch(sessions, stack.batches["a"], timeout=600)
        stack.stop_workers()
        bundle_b = root / "default-b"
        shutil.copytree(default_bundle_dir(), bundle_b)
        # Version b answers generatively below a bank score of 0.5 (the shipped bundle's threshold, -1, never does).
        save_threshold(bundle_b, {"threshold": 0.5, "chosen_on": "browser tests"})
        stack.start_workers("b", CUBEQA_BUNDLE_DIR=str(bundle_b), CUBEQA_DECODER="hybrid")
        stack.batches["b"] = stack.submit(items, 16, "browser-test:b")
        wait_for_batch(sessions, stack.batches["b"], timeout=600)
        stack.stop_workers()  # a test that needs workers starts its own: none is left on the session's broker
        for name, batch_id in stack.batches.items():
            with sessions() as session:
                (version,) = {row["model_version"] for row in iter_results(session=session, batch_id=batch_id)}
            stack.versions[name] = version
        wait_http(stack.api + "/livez", servers[0], root / "api.log")
        wait_http(stack.api_token + "/livez", servers[1], root / "api-token.log")
        yield stack
    finally:
        stack.stop_workers()
        stop(servers)


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@dataclass
class Visit:
    """A browser page that records console errors, page errors and requests that left 127.0.0.1."""

    page: object
    errors: list[str]
    outside: list[str]


@pytest.fixture
def visit(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[callable]:
    """visit(http_credentials=None) -> Visit in a fresh browser context (its own cookies)."""
    contexts = []

    def open_page(**context_options: object) -> Visit:
        context = browser.new_context(viewport={"width": 1400, "height": 900}, **context_options)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        outside: list[str] = []
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text} at {m.location.get('url')}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

        def offline(route, request) -> None:  # the network here is closed: any other host is a bug
            if request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
                route.continue_()
            else:
                outside.append(request.url)
                route.abort()

        page.route("**/*", offline)
        return Visit(page=page, errors=errors, outside=outside)

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-screenshots")


@pytest.fixture
def shoot(screenshot_dir: Path) -> callable:
    def save(page, name: str) -> Path:
        path = screenshot_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        SCREENSHOTS.append(path)
        return path

    return save


def pytest_terminal_summary(terminalreporter) -> None:  # pytest hook
    if SCREENSHOTS:
        terminalreporter.write_line(f"browser screenshots ({len(SCREENSHOTS)}) in {SCREENSHOTS[0].parent}")
