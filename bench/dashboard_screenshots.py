"""The screenshots of docs/dashboard.md, from a real bulk run: N questions with references answered by real
workers of two model versions (the shipped bundle with the phrase-bank decoder at its default confidence threshold,
then at --min-confidence 0.3; a copy of it named default-b with the hybrid decoder), then each dashboard page,
Flower and /docs in headless Chromium; it prints the compare view's figures.

    python bench/dashboard_screenshots.py --questions 1000 --out docs/img --broker redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402 - the bench directory is put on the path just above
from dashboard_pages import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

TOKEN = "docs-screenshot-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(args: list[str], env: dict[str, str], log: Path, probe: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "cubeqa", *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    for _ in range(240):
        try:
            urllib.request.urlopen(probe, timeout=2)
            return process
        except urllib.error.HTTPError:
            return process
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{args[0]} did not start; see {log}")


def run_batch(env: dict[str, str], logdir: Path, sessions, items: list, broker_url: str, during=None,
              min_confidence: float | None = None) -> str:
    """Answers `items` with one worker per stage started with `env`; `during(batch_id)` runs while they work."""
    from cubeqa import supervise as demo
    from storage.repository import Pin
    from tasks.app import configure
    from tasks.producer import submit

    logdir.mkdir()
    source = f"{len(items)} SQuAD questions" + ("" if min_confidence is None else f", min_confidence {min_confidence}")
    with demo.stage_workers(env, logdir) as workers:
        demo.wait_for_workers(configure(broker_url), workers, logdir, timeout=300)
        batch_id = submit(sessions, items, micro_batch=32, source=source, pin=Pin(min_confidence=min_confidence)).batch_id
        if during is not None:
            during(batch_id)
        while not finished(sessions, batch_id):
            time.sleep(1)
    return batch_id


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    p.add_argument("--broker", default=f"{common.DEFAULT_REDIS}/13", help="Redis database URL the script may empty")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    from cubeqa.settings import default_bundle_dir
    from pipeline.decoder_workflows import save_threshold
    from storage.db import make_engine, session_factory, upgrade
    from storage.repository import NewJob, iter_results

    common.flush(args.broker)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in common.VAL.read_text().splitlines()[: args.questions]]
    items = [NewJob(question=r["question"], reference=r["answer"]) for r in rows]
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        database_url = f"sqlite:///{root / 'store.db'}"
        upgrade(database_url)
        sessions = session_factory(make_engine(database_url))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUBEQA_")}
        env |= {"CUBEQA_BROKER_URL": args.broker, "CUBEQA_DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1"}
        api_port, token_port, flower_port = free_port(), free_port(), free_port()
        servers = [
            serve(["api", "--port", str(api_port)], env, root / "api.log", f"http://127.0.0.1:{api_port}/livez"),
            serve(["api", "--port", str(token_port)], env | {"CUBEQA_API_TOKEN": TOKEN}, root / "api2.log", f"http://127.0.0.1:{token_port}/livez"),
        ]
        stack.callback(lambda: [s.terminate() for s in servers])
        api = f"http://127.0.0.1:{api_port}"
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})

        def shot(url: str, name: str, full: bool = True, height: int = 900) -> None:
            page.set_viewport_size({"width": 1400, "height": height})
            page.goto(url)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(800)
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=full)
            print(f"wrote {args.out / name}.png", flush=True)

        started = time.perf_counter()
        batch_a = run_batch(env, root / "workers-a", sessions, items, args.broker)
        print(f"version a: {args.questions} questions in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        batch_low = run_batch(env, root / "workers-a-0.3", sessions, items, args.broker, min_confidence=0.3)
        print(f"version a at min_confidence 0.3: {args.questions} questions in {time.perf_counter() - started:.0f} s",
              flush=True)
        bundle_b = root / "default-b"
        shutil.copytree(default_bundle_dir(), bundle_b)
        # Version b answers generatively below a bank score of 0.5 (the shipped bundle's threshold, -1, never does).
        save_threshold(bundle_b, {"threshold": 0.5, "chosen_on": "dashboard screenshots"})

        def during_b(batch_id: str) -> None:
            servers.append(serve(["flower", "--port", str(flower_port)], env, root / "flower.log", f"http://127.0.0.1:{flower_port}/healthcheck"))
            time.sleep(20)
            shot(f"{api}/dashboard/batches/{batch_id}", "dashboard-batch-running", full=False, height=1250)
            flower = f"http://127.0.0.1:{flower_port}"
            shot(flower + "/", "flower-workers", full=False)
            shot(flower + "/broker", "flower-broker", full=False)

        started = time.perf_counter()
        batch_b = run_batch(env | {"CUBEQA_BUNDLE_DIR": str(bundle_b), "CUBEQA_DECODER": "hybrid"},
                            root / "workers-b", sessions, items, args.broker, during_b)
        print(f"version b: {args.questions} questions in {time.perf_counter() - started:.0f} s", flush=True)
        with sessions() as session:
            versions = {name: next(iter_results(session=session, batch_id=batch))["model_version"] for name, batch in (("a", batch_a), ("b", batch_b))}
        shot(f"{api}/dashboard", "dashboard-batches")
        shot(f"{api}/dashboard/batches/{batch_a}", "dashboard-batch", full=False, height=1250)
        shot(f"{api}/dashboard/batches/{batch_b}?text=kenya#jobs-section", "dashboard-batch-filtered", full=False)
        with sessions() as session:  # a refused job, its best match with neighbours where the bank keeps them
            refused = [r for r in iter_results(session=session, batch_id=batch_a)
                       if r["decoder_path"] == "none" and r["evidence"]]
        job = max(refused, key=lambda r: len(r["evidence"]["before"]) + len(r["evidence"]["after"]))
        shot(f"{api}/dashboard/jobs/{job['id']}", "dashboard-job")
        shot(f"{api}/dashboard/compare?a={batch_a}&b={batch_low}", "dashboard-compare", full=False, height=1700)
        print_comparison(page)
        sides = urllib.parse.urlencode({"a": f"v:{versions['a']}", "b": f"v:{versions['b']}"})  # versions hold a "+"
        shot(f"{api}/dashboard/compare?{sides}", "dashboard-compare-versions", full=False, height=1700)
        print_comparison(page)
        shot(f"http://127.0.0.1:{token_port}/dashboard", "dashboard-login")
        shot(f"{api}/docs", "api-docs", full=False)
        timings = []
        for _ in range(5):
            t = time.perf_counter()
            page.goto(f"{api}/dashboard/batches/{batch_a}")
            page.wait_for_function("[...document.querySelectorAll('[data-chart]')].every(e => e.dataset.points !== undefined)")
            timings.append(time.perf_counter() - t)
        print(f"batch page of {args.questions} jobs, navigation to charts drawn in Chromium: {common.band(common.spread([1000 * x for x in timings]), 0)} ms")



def print_comparison(page) -> None:
    """The compare view's rows as the page shows them: figure, n, A, B, B − A, interval."""
    for row in page.locator("#rates tbody tr, #diffs tbody tr").all():
        print(" | ".join(cell.inner_text() for cell in row.locator("td").all()), flush=True)
    print(f"outcome differs on {page.locator('#changed-count').inner_text()} questions", flush=True)


def finished(sessions, batch_id: str) -> bool:
    """Whether every job of the batch is final."""
    from storage.repository import batch_summary

    with sessions() as session:
        return batch_summary(session=session, batch_id=batch_id).finished


if __name__ == "__main__":
    main()
