"""The dashboard's banks page in a real headless Chromium against a real `cubeqa api`: every bank of the bank root
with its current version, counts and size, each version kept, and the nav link to it; no console errors."""

from __future__ import annotations

import pytest

from browser.browser_stack import free_port, wait_http
from tests.conftest import ROOT, migrated

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(600)]
DOCS = ROOT / "tests" / "data" / "docs" / "starlette"


@pytest.fixture(scope="module")
def banks_api(broker_url, encoder, tmp_path_factory):
    """`cubeqa api` over a bank root holding bank `starlette` in two versions (a build, then an add)."""
    from jobsystem import service_env, start, stop

    from pipeline.knowledge.store import BankStore

    work = tmp_path_factory.mktemp("banks-page")
    root = work / "banks"
    store = BankStore(root)
    embed = {"embed": lambda texts: encoder.encode(texts).vectors, "encoder_identity": encoder.identity}
    store.build("starlette", [DOCS / "testclient.md", DOCS / "staticfiles.md"], **embed)
    store.add("starlette", [DOCS / "background.md"], **embed)
    url = f"sqlite:///{work / 'store.db'}"
    migrated(url).kw["bind"].dispose()
    port = free_port()
    server = start(["api", "--port", str(port)], service_env(broker_url, url, CUBEQA_BANK_ROOT=str(root)), work / "api.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/livez", server, work / "api.log")
        yield f"http://127.0.0.1:{port}", store
    finally:
        stop([server])


def test_banks_page_lists_each_bank_with_its_versions_and_sizes(banks_api, visit, shoot) -> None:
    base, store = banks_api
    v = visit()
    v.page.goto(base + "/dashboard")
    v.page.click("nav >> text=Banks")
    v.page.wait_for_url(base + "/dashboard/banks")
    rows = v.page.locator("#banks tbody tr[data-bank]")
    assert [rows.nth(i).get_attribute("data-bank") for i in range(rows.count())] == ["default", "starlette"]
    info = store.show("starlette")
    row = v.page.locator('tr[data-bank="starlette"]')
    assert row.locator('[data-field="sentences"]').inner_text() == f"{info.sentences:,}"
    assert row.locator('[data-field="documents"]').inner_text() == "3"
    assert row.locator('[data-field="size"]').inner_text() == f"{info.size_bytes / 1e6:.1f} MB"
    kept = row.locator("li[data-version]")
    assert [kept.nth(i).get_attribute("data-version") for i in range(kept.count())] == [kept_version.version for kept_version in store.versions("starlette")]
    assert "current" in kept.nth(0).inner_text() and "current" not in kept.nth(1).inner_text()
    assert "built in" in v.page.locator('tr[data-bank="default"]').inner_text()
    shoot(v.page, "dashboard-banks")
    assert v.errors == [] and v.outside == []
