"""The services of the browser tests and what they share: ports, readiness waits, the question set, the token."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-test-token-8f2c"
QUESTIONS = 200  # per batch: enough for every chart to have shape, quick on two shared cores
SCREENSHOTS: list[Path] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until `url` answers (any HTTP status), or the process exits (its log tail is the error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not answering after {timeout} s; log {log}")


def reference_items(count: int, offset: int = 0) -> list:
    from storage.repository import NewJob

    rows = [json.loads(line) for line in (ROOT / "data" / "squad_sent_val.jsonl").read_text().splitlines()[offset : offset + count]]
    return [NewJob(question=row["question"], reference=row["answer"]) for row in rows]


@dataclass
class Stack:
    """The running services and what the store holds."""

    root: Path
    broker_url: str
    database_url: str
    sessions: object
    api: str
    api_token: str
    batches: dict[str, str] = field(default_factory=dict)  # name -> batch id
    versions: dict[str, str] = field(default_factory=dict)  # name -> model version
    env: dict[str, str] = field(default_factory=dict)
    worker_contexts: list = field(default_factory=list)  # the open demo.stage_workers contexts

    def start_workers(self, name: str, **env: str) -> list[subprocess.Popen]:
        from cubeqa import supervise as demo
        from tasks.app import configure

        logdir = self.root / f"workers-{name}"
        logdir.mkdir()
        context = demo.stage_workers({**self.env, **env}, logdir)
        workers = context.__enter__()
        demo.wait_for_workers(configure(self.broker_url), workers, logdir, timeout=240)
        self.worker_contexts.append(context)
        return workers

    def stop_workers(self) -> None:
        while self.worker_contexts:
            self.worker_contexts.pop().__exit__(None, None, None)

    def submit(self, items: list, micro_batch: int, source: str) -> str:
        """Sends `items` with no confidence threshold, so every job is answered by a decoder path and the two
        versions' e2e_cos pair up on every question (refusals have their own tests)."""
        from storage.repository import Pin
        from tasks.producer import submit

        return submit(self.sessions, items, micro_batch=micro_batch, source=source, pin=Pin(min_confidence=0.0)).batch_id


