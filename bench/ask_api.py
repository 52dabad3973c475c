"""`cubeqa ask --api`: questions answered by a running `cubeqa api` and its stage workers, against a local `ask`.

    .venv/bin/python bench/ask_api.py [--questions 20] [--runs 3] [--backends sqlite] [--json PATH]

Per run and backend, from the bench clock:

    ask --api command  = wall time of `cubeqa ask --api URL --file Q` (process start, import, one HTTP request
                         a question, each held by the API until the job is final, printing)
    per question       = one `Client.ask` round trip in this process (POST /v1/jobs?wait=30), pooled over runs
    local ask command  = wall time of `cubeqa ask --file Q` for the same questions (loads the models itself), once
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_api(env: dict[str, str], logdir: Path) -> tuple[subprocess.Popen, str]:
    """`cubeqa api` on a free port, once /healthz answers (every stage pinged through its queue)."""
    import httpx

    port = free_port()
    with (logdir / "api.log").open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "cubeqa", "api"], env={**env, "CUBEQA_API_PORT": str(port)},
                                   stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.terminate()
    raise TimeoutError(f"cubeqa api did not become healthy; log in {logdir / 'api.log'}")


def timed_command(args: list[str], env: dict[str, str], count: int) -> float:
    """Seconds `python -m cubeqa ARGS` takes; it must print one answer per question."""
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "cubeqa", *args], capture_output=True, text=True, env=env, timeout=600)
    seconds = time.perf_counter() - started
    if run.returncode != 0 or run.stdout.count("answer:") != count:
        raise RuntimeError(f"cubeqa {' '.join(args)} failed:\n{run.stderr[-2000:]}")
    return seconds


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], questions=20, runs=3)
    common.service_options(p, redis_db=3, backends="sqlite")
    args = p.parse_args()
    texts = common.questions(args.data, args.questions)
    path = Path(tempfile.mkdtemp(prefix="cubeqa-bench-ask-")) / "questions.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    from cubeqa.client import Client

    results = {}
    for backend in common.backends(args.backends):
        with common.job_stack(backend, args) as stack:
            api, base = serve_api(stack.env, stack.logdir)
            try:
                with Client(base) as client:
                    client.ask(texts[0])  # the API's first request opens its connections
                    per_question = []
                    for _ in range(args.runs):
                        for text in texts:
                            started = time.perf_counter()
                            assert client.ask(text).status == "done"
                            per_question.append(1000 * (time.perf_counter() - started))
                remote = [timed_command(["ask", "--api", base, "--file", str(path)], stack.env, len(texts))
                          for _ in range(args.runs)]
            finally:
                api.terminate()
                api.wait(30)
            local_env = {k: v for k, v in stack.env.items() if k != "CUBEQA_API_URL"}
            local = timed_command(["ask", "--file", str(path)], local_env, len(texts))
        results[backend] = {
            "ask_api_s": common.spread(remote),
            "per_question_ms": common.percentiles(per_question),
            "local_ask_s": local,
        }
        r = results[backend]
        common.table(
            f"{backend}: {len(texts)} questions, {args.runs} runs",
            ["measure", "median", "min", "max"],
            [["ask --api command, s", statistics.median(remote), min(remote), max(remote)],
             ["one question via the API, ms p50", r["per_question_ms"]["p50"], "", ""],
             ["one question via the API, ms p95", r["per_question_ms"]["p95"], "", ""],
             ["local ask command (loads the models), s", local, "", ""]],
        )
    common.write_json(args.json, {"questions": len(texts), "runs": args.runs, "backends": results})


if __name__ == "__main__":
    main()
