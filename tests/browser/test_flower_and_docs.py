"""Flower and the API's /docs in a real headless Chromium: Flower reads the workers' msgpack replies (every
stage worker listed with its queue, every stage queue on the broker page), stopping `cubeqa flower` stops
Flower, and /docs and /redoc render with no request leaving the machine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from browser.browser_stack import free_port, wait_http

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(1200)]
STAGES = ("encode", "cube", "decode", "rerank")  # the shipped bundle has a reranker: a worker per stage


@pytest.fixture(scope="module")
def flower(stack) -> Iterator[tuple[str, subprocess.Popen, list[str]]]:
    """`cubeqa flower --port P` beside one live worker per stage; yields its URL, the `cubeqa flower` process and the
    names of those workers (`stage-PID@host`, as workers/main.py names them)."""
    from jobsystem import start, stop

    from cubeqa.supervise import worker_stage

    workers = stack.start_workers("flower")
    names = [f"{worker_stage(w)}-{w.pid}@{socket.gethostname()}" for w in workers]
    port = free_port()
    log = stack.root / "flower.log"
    process = start(["flower", "--host", "127.0.0.1", "--port", str(port)], stack.env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", process, log)
        yield f"http://127.0.0.1:{port}", process, names
    finally:
        stop([process])
        stack.stop_workers()
        assert "Refusing to deserialize" not in log.read_text(errors="replace")


def test_flower_lists_every_stage_worker_with_its_queue(flower, visit, shoot) -> None:
    url, _, names = flower
    assert sorted(name.split("-", 1)[0] for name in names) == sorted(STAGES), names
    v = visit()
    page = v.page
    page.goto(url + "/")
    # Ours, by name: the session's earlier workers may still be listed beside them.
    page.wait_for_function("""names => {
        const online = [...document.querySelectorAll('#workers-table tbody tr')].filter(r => /Online/.test(r.textContent))
            .map(r => r.querySelector("a[href^='/worker/']").textContent.trim());
        return names.every(n => online.includes(n));
    }""", arg=names, timeout=120_000)
    shoot(page, "flower-workers")
    for name in names:
        page.goto(f"{url}/worker/{name}")
        assert "Unknown worker" not in page.content()
        page.click("#worker-tab-queues")
        queues = page.locator("#worker-queues").inner_text()
        assert name.split("-", 1)[0] in queues.split(), f"{name}: {queues!r}"
        shoot(page, f"flower-worker-{name.split('-', 1)[0]}")
    page.goto(url + "/broker")
    listed = page.eval_on_selector_all("#queue-table tbody tr", "rows => rows.map(r => r.id)")
    assert set(STAGES) <= set(listed), listed
    shoot(page, "flower-broker")
    assert v.errors == [], v.errors


def test_stopping_cubeqa_flower_stops_flower(flower) -> None:
    url, process, _ = flower
    port = int(url.rsplit(":", 1)[1])
    os.killpg(process.pid, 0)  # alive, in its own group
    process.send_signal(signal.SIGTERM)  # to the `cubeqa flower` process only, not its group
    assert process.wait(timeout=30) == 0  # Flower's SIGTERM handler exits cleanly
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_docs_and_redoc_render_offline(stack, visit, shoot) -> None:
    v = visit()
    page = v.page
    page.goto(stack.api + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=60_000)
    assert "cubeqa" in page.locator(".swagger-ui .info .title").inner_text()
    page.get_by_text("/v1/batches/{batch_id}/results").first.wait_for()
    shoot(page, "api-docs")
    assert v.outside == [], f"/docs asked for {v.outside}"
    page.goto(stack.api + "/redoc")
    page.get_by_text("/v1/batches/{batch_id}/results").first.wait_for(timeout=60_000)
    shoot(page, "api-redoc")
    # ReDoc's script hard-codes its own logo's URL; offline the image fails and ReDoc hides it.
    logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    assert v.outside in ([], [logo]), f"/redoc asked for {v.outside}"
    assert [e for e in v.errors if logo not in e] == [], v.errors
