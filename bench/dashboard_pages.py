"""Dashboard page times on a 100,000-job batch, on SQLite and PostgreSQL.

Fills a fresh store with one batch of N finished jobs (plus a second batch of the same questions from
another model version, for the compare view) written straight to SQL in the shape the workers write
(answer, score, decoder path, metrics, per-stage timings and hosts), then times each page the API
serves in-process (the server's time to the last byte: SQL aggregates and rendering) and, with
--browser, the time a headless Chromium takes from navigation to every chart drawn.

    python bench/dashboard_pages.py                      # 100,000 jobs, both stores, 5 runs
    python bench/dashboard_pages.py --jobs 10000 --backends sqlite --browser
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402 - the bench directory is put on the path just above

from storage.scratch import scratch_database  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
MICRO_BATCH = 64  # CUBEQA_MICRO_BATCH's default
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def fill(database_url: str, jobs: int, seed: int = 0) -> tuple[str, str]:
    """Two finished batches of `jobs` jobs each (versions A and B on the same questions); returns their ids."""
    from sqlalchemy import insert

    from storage.db import make_engine, session_factory, upgrade
    from storage.models import Batch, Job, ModelVersion, metric_columns
    from storage.repository import new_id

    upgrade(database_url)
    sessions = session_factory(make_engine(database_url))
    rng = random.Random(seed)
    questions = common.questions(common.VAL, jobs)
    ids = []
    start = datetime.now(UTC) - timedelta(hours=2)
    for version, shift in (("default@bench-a", 0.0), ("default@bench-b", 0.01)):
        batch_id = new_id()
        ids.append(batch_id)
        created = start + timedelta(minutes=len(ids) * 30)
        seconds = jobs / 150  # a plausible 150 jobs/s
        with sessions.begin() as session:
            session.add(ModelVersion(id=version, first_seen_at=created))
            session.add(Batch(id=batch_id, key=None, source="bench", total=jobs, done_count=0, failed_count=0, created_at=created))
        rows = []
        done = failed = 0
        for i, question in enumerate(questions):
            finished = created + timedelta(seconds=seconds * (i + 1) / jobs)
            ok = rng.random() > 0.01
            path = "none" if rng.random() < 0.08 else "bank"
            identity = rng.gauss(0.45, 0.12)
            metrics = {"decode_fidelity": rng.gauss(0.8, 0.05), "cube_cos": identity + rng.gauss(0.02 + shift, 0.03), "identity_cos": identity}
            if path != "none":
                metrics |= {"e2e_cos": rng.gauss(0.5 + shift, 0.15), "echo": float(rng.random() < 0.1)}
            if i % MICRO_BATCH == 0:  # the stages stamp one timings and hosts object per micro-batch
                timings = {"encode": rng.uniform(5, 30), "wait_encode": rng.uniform(0, 5000), "cube": rng.uniform(0.5, 3),
                           "wait_cube": rng.uniform(0, 80), "decode": rng.uniform(2, 9), "wait_decode": rng.uniform(0, 60)}
                hosts = {stage: f"{stage}-{1000 + rng.randrange(3)}@bench" for stage in ("encode", "cube", "decode")}
            done, failed = done + ok, failed + (not ok)
            rows.append({
                "id": new_id(), "batch_id": batch_id, "position": i, "line": i + 1, "question": question, "reference": "a reference",
                "status": "done" if ok else "failed", "attempts": 1, "dispatches": 1, "error": None if ok else "input error: bench",
                "answer": "an answer sentence from the bank" if ok and path != "none" else None, "decoder_path": path if ok else None,
                "score": rng.uniform(0.2, 0.8) if ok else None, "metrics": metrics if ok else None, "timings_ms": timings,
                "hosts": hosts, "model_version": version if ok else None, "created_at": created, "dispatched_at": created,
                "started_at": created, "finished_at": finished, **metric_columns(metrics if ok else None),
            })
            if len(rows) == 5000 or i == jobs - 1:
                with sessions.begin() as session:
                    session.execute(insert(Job.__table__), rows)
                rows = []
        with sessions.begin() as session:
            batch = session.get(Batch, batch_id)
            batch.done_count, batch.failed_count, batch.finished_at = done, failed, created + timedelta(seconds=seconds)
    if database_url.startswith("postgresql"):
        with make_engine(database_url).connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ANALYZE")  # committed: in a rolled-back transaction its statistics are lost
    return ids[0], ids[1]


def server_times(database_url: str, a: str, b: str, runs: int) -> dict[str, dict]:
    """Seconds to the last byte of each page, served in-process by the API app. "cold" is an app's first
    view of the batch (its charts computed in SQL), "warm" a later one (a finished batch's charts are kept)."""
    from fastapi.testclient import TestClient

    from cubeqa.api import create_app
    from cubeqa.settings import Settings

    for name in [k for k in os.environ if k.startswith("CUBEQA_")]:
        del os.environ[name]

    def client() -> TestClient:
        fresh = TestClient(create_app(Settings(database_url=database_url, broker_url="redis://127.0.0.1:1/0")))
        assert fresh.get("/dashboard/static/dashboard.css").status_code == 200  # warm: connection pool, templates
        return fresh

    def timed(c: TestClient, url: str) -> float:
        started = time.perf_counter()
        response = c.get(url)
        assert response.status_code == 200, url
        return time.perf_counter() - started

    pages = {
        "batches": "/dashboard",
        "batch": f"/dashboard/batches/{a}",
        "batch charts.json": f"/dashboard/batches/{a}/charts.json",
        "batch progress.json": f"/dashboard/batches/{a}/progress.json",
        "batch, jobs filtered": f"/dashboard/batches/{a}?status=done&text=kenya&page=3",
        "compare": f"/dashboard/compare?a={a}&b={b}",
    }
    out = {}
    cold = [timed(client(), pages["batch"]) for _ in range(runs)]
    out["batch (cold)"] = common.spread(cold)
    warm = client()
    for name, url in pages.items():
        timed(warm, url)
        out[name + (" (warm)" if name.startswith("batch") and "progress" not in name else "")] = common.spread([timed(warm, url) for _ in range(runs)])
    return out


def browser_times(database_url: str, batch_id: str, runs: int) -> dict:
    """Seconds from navigation to every chart of the batch page drawn, in headless Chromium against `cubeqa api`."""
    import socket
    import subprocess

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUBEQA_")} | {
        "CUBEQA_DATABASE_URL": database_url, "CUBEQA_BROKER_URL": "redis://127.0.0.1:1/0"}
    server = subprocess.Popen([sys.executable, "-m", "cubeqa", "api", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = []
    try:
        with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = context.new_page()
            url = f"http://127.0.0.1:{port}/dashboard/batches/{batch_id}"
            for _ in range(60):
                try:
                    page.goto(url)
                    break
                except Exception:  # the server is still starting
                    time.sleep(0.5)
            for _ in range(runs):
                started = time.perf_counter()
                page.goto(url)
                page.wait_for_function("[...document.querySelectorAll('[data-chart]')].every(e => e.dataset.points !== undefined)")
                seconds.append(time.perf_counter() - started)
            context.close()
    finally:
        server.terminate()
        server.wait(30)
    return common.spread(seconds)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], runs=5)
    p.add_argument("--jobs", type=int, default=100_000, help="jobs in the timed batch")
    p.add_argument("--postgres", default=common.DEFAULT_POSTGRES, help="PostgreSQL server URL; a database is created and dropped")
    p.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--browser", action="store_true", help=f"also time the batch page in headless Chromium ({CHROMIUM})")
    args = p.parse_args()
    figures: dict = {"jobs": args.jobs, "runs": args.runs, "backends": {}}
    rows = []
    for backend in common.backends(args.backends):
        with ExitStack() as stack:
            if backend == "postgresql":
                url = stack.enter_context(scratch_database(args.postgres, prefix="cubeqa_bench"))
            else:
                url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/store.db"
            started = time.perf_counter()
            a, b = fill(url, args.jobs)
            print(f"{backend}: filled 2 x {args.jobs} jobs in {time.perf_counter() - started:.1f} s", flush=True)
            pages = server_times(url, a, b, args.runs)
            if args.browser:
                pages["batch in Chromium (to charts drawn)"] = browser_times(url, a, args.runs)
            figures["backends"][backend] = pages
            rows += [(backend, name, common.band({k: v * 1000 for k, v in f.items() if k != "runs"}, 0)) for name, f in pages.items()]
    common.table(f"Dashboard page time, ms (median [min-max] of {args.runs}) on a {args.jobs:,}-job batch", ["store", "page", "ms"], rows)
    common.write_json(args.json, figures)


if __name__ == "__main__":
    main()
