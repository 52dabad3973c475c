"""Bad input through every door: ProductionPipeline, the HTTP API (a real worker answering) and `cubeqa submit`.

Every input is either answered or refused with a typed error / a 4xx naming what is wrong (the line, for
bulk files); nothing crashes, every accepted job reaches a final state, and a refused file leaves nothing
written.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobsystem import postgres_database, results_of, service_env, summary_of, view_of
from single_worker import all_stage_worker, clean_settings

from pipeline import NO_CONFIDENT_ANSWER, InputError
from tests.conftest import ROOT, migrated

pytestmark = pytest.mark.slow

FRAGMENTS = st.sampled_from([
    "", " ", "\t", "\n", "\r\n", "\x00", "\x01", "\x1b[31m", "\x7f", "\u00a0", "\u2003", "\u200b", "\ufeff", "\u202e",
    "\ud800", "\udcff", "😀", "🇰🇪", "👩\u200d👩\u200d👧", "Где находится", "肯尼亚", "كينيا", "केन्या", "Kenya", "?",
    "e\u0301\u0301", "\U0010ffff", "'; DROP TABLE job; --", "[/bold]",
])
TEXTS = st.lists(st.one_of(FRAGMENTS, st.text(max_size=12)), max_size=8).map("".join)
ALWAYS_ANSWERED = (
    "Where is Kenya located?",
    "¿Dónde está Kenia? 🇰🇪",
    "Кто написал «Войну и мир»?",
    "東京タワーはいつ建てられましたか?",
    "tab\there and a line\nbreak?",
    "\u200bzero-width space and \u202eright-to-left mark?",
    "x" * 4000,
    "SELECT * FROM job; -- ?",
    "🙂🙂🙂",
    "مرحبا? hello? 你好?",
)
PROPERTY = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def pipeline_refuses(text: str) -> bool:
    """The pipeline's contract (pipeline.encoder.check_texts): blank or not Unicode text is an InputError."""
    return not text.strip() or not encodable(text)


def assert_answered(result, text: str, bank: set[str]) -> None:
    assert result.question == text
    assert result.path in ("bank", "none")
    if result.path == "bank":
        assert result.answer in bank
    else:
        assert result.answer == NO_CONFIDENT_ANSWER
    assert math.isfinite(result.score) and math.isfinite(result.metrics["decode_fidelity"])


# --- ProductionPipeline ---------------------------------------------------------------------------

AWKWARD = {
    "empty": ("", "empty or whitespace"),
    "whitespace": (" \t\n\r\u00a0\u2003\u3000", "empty or whitespace"),
    "undecodable bytes": (b"caf\xe9 \xff?".decode("utf-8", "surrogateescape"), "not valid Unicode"),
    "lone surrogate": ("where\ud800is kenya", "not valid Unicode"),
    "control characters": ("".join(map(chr, range(1, 32))) + "\x7f where is kenya", None),
    "only control characters": ("\x01\x02\x1b", None),
    "NUL": ("where\x00is kenya", None),
    "zero-width only": ("\u200b\u200c\u200d\ufeff", None),
    "mixed scripts": ("Где находится Kenya 肯尼亚 كينيا केन्या?", None),
    "emoji": ("🇰🇪 where is 👩\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈?", None),
    "right-to-left override": ("\u202eWhere is Kenya?", None),
    "combining marks": ("e" + "\u0301" * 2000, None),
}


@pytest.fixture(scope="module")
def bank(in_process) -> set[str]:
    return set(in_process.cube_stage.bundle.bank_texts)


@pytest.mark.parametrize("name", AWKWARD)
def test_awkward_text_is_answered_or_refused_with_an_input_error(in_process, bank, name: str) -> None:
    text, refusal = AWKWARD[name]
    if refusal:
        with pytest.raises(InputError, match=refusal):
            in_process.process_text(text)
    else:
        assert_answered(in_process.process_batch([text])[0], text, bank)


def test_a_one_megabyte_question_is_answered_from_its_first_tokens(in_process, bank) -> None:
    text = ("Where is Kenya, the country in east Africa? " * 25_000)[:1_000_000]
    result = in_process.process_batch([text])[0]
    assert result.truncated
    assert_answered(result, text, bank)
    assert result.answer == in_process.process_text(text[:1000])  # the encoder only sees the first 256 tokens
    # and says nothing on stderr: transformers' "indexing errors" warning for long texts was a false alarm
    assert "sequence-length-is-longer-than-the-specified-maximum" not in in_process.encode_stage.encoder.tokenizer.deprecation_warnings


def test_one_bad_text_in_a_batch_is_named_by_its_position(in_process) -> None:
    with pytest.raises(InputError, match="text #2 is empty"):
        in_process.process_batch(["Where is Kenya?", "Who built the fort?", "  ", "What is rain?"])


@PROPERTY
@given(texts=st.lists(TEXTS, min_size=1, max_size=3))
def test_any_batch_of_texts_is_answered_or_refused(in_process, bank, texts: list[str]) -> None:
    refused = [i for i, text in enumerate(texts) if pipeline_refuses(text)]
    if refused:
        with pytest.raises(InputError, match=f"text #{refused[0]} "):
            in_process.process_batch(texts)
        return
    results = in_process.process_batch(texts)
    assert len(results) == len(texts)
    for result, text in zip(results, texts):
        assert_answered(result, text, bank)


# --- the HTTP API and `cubeqa submit`, with a real worker ----------------------------------------


@dataclass
class Stack:
    broker_url: str
    database_url: str
    sessions: object
    client: object
    work: Path


@pytest.fixture(scope="module")
def stack(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """PostgreSQL (the stricter store), the session's Redis database, one all-stage worker, the API in process."""
    import redis
    from fastapi.testclient import TestClient

    from cubeqa.api import create_app

    work = tmp_path_factory.mktemp("bad-input")
    redis.Redis.from_url(broker_url).flushdb()
    with postgres_database() as url:
        sessions = migrated(url)
        with all_stage_worker(broker_url, url, work / "worker.log"):
            app = create_app(clean_settings(broker_url=broker_url, database_url=url))
            with TestClient(app, raise_server_exceptions=False) as client:
                yield Stack(broker_url, url, sessions, client, work)
        sessions.kw["bind"].dispose()
    redis.Redis.from_url(broker_url).flushdb()


def post_json(client, url: str, body: object):
    """JSON as any client may send it: lone surrogates travel as \\ud800 escapes."""
    return client.post(url, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def wait_final(sessions, job_ids: list[str], timeout: float = 120) -> list[dict]:
    """Every job's view once all are done or failed; fails naming the jobs still open after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        views = [view_of(sessions, job_id) for job_id in job_ids]
        open_jobs = [v for v in views if v is None or v["status"] not in ("done", "failed")]
        if not open_jobs:
            return views
        assert time.monotonic() < deadline, f"{len(open_jobs)} jobs not final after {timeout} s: {open_jobs[:3]}"
        time.sleep(0.3)


def assert_final_and_explained(view: dict) -> None:
    if view["status"] == "done":
        assert view["answer"] and view["decoder_path"] in ("bank", "none")
    else:
        assert view["status"] == "failed" and view["error"]


def api_refusals(question: str, reference: str | None) -> list[str]:
    """The fields the API must name in its 422 (none: it must accept the job)."""
    fields = []
    if not question.strip() or "\x00" in question or not encodable(question):
        fields.append("question")
    if reference is not None and ("\x00" in reference or not encodable(reference)):
        fields.append("reference")
    return fields


@pytest.mark.services
def test_the_api_answers_or_refuses_any_question_and_no_job_hangs(stack: Stack) -> None:
    accepted: list[str] = []

    def check(question: str, reference: str | None) -> None:
        response = post_json(stack.client, "/v1/jobs", {"question": question, "reference": reference})
        # What the server reads: JSON decoding joins two escaped lone surrogates that make a pair into one character.
        question, reference = json.loads(json.dumps([question, reference]))
        fields = api_refusals(question, reference)
        if not fields:
            assert response.status_code == 202, response.text
            assert response.json()["question"] == question
            accepted.append(response.json()["id"])
        else:
            assert response.status_code == 422, response.text
            assert [e["loc"][-1] for e in response.json()["detail"]] == fields

    @PROPERTY
    @given(question=TEXTS, reference=st.none() | TEXTS)
    def post(question: str, reference: str | None) -> None:
        check(question, reference)

    post()
    for question in ALWAYS_ANSWERED:  # the random draw may accept few; these make sure accepted jobs are followed
        check(question, None)
    assert len(accepted) >= len(ALWAYS_ANSWERED)
    for view in wait_final(stack.sessions, accepted):
        assert_final_and_explained(view)


@pytest.mark.services
def test_the_api_refuses_what_it_cannot_take_with_a_clear_4xx(stack: Stack) -> None:
    client = stack.client

    def refused(response, status: int, *needles: str) -> None:
        assert response.status_code == status, response.text
        assert all(n in response.text for n in needles), response.text

    refused(post_json(client, "/v1/jobs", {"question": "x" * 1_000_000}), 422, '"loc": ["body", "question"]', "has 1000000 characters; the limit is 4000")
    refused(post_json(client, "/v1/jobs", {"question": "ok?", "reference": "r" * 4001}), 422, '"loc": ["body", "reference"]', "'reference' has 4001 characters")
    too_long = post_json(client, "/v1/batches", {"items": [{"question": "ok?"}, {"question": "x" * 4001}]})
    refused(too_long, 422, '"loc": ["body", "items", 1, "question"]', "'question' has 4001 characters")
    refused(client.post("/v1/jobs", content=b'{"question": "caf\xe9?"}', headers={"content-type": "application/json"}), 400)
    refused(client.post("/v1/jobs", content=b'{"question": ', headers={"content-type": "application/json"}), 422, "json_invalid")
    refused(post_json(client, "/v1/jobs", ["Where is Kenya?"]), 422)
    refused(post_json(client, "/v1/jobs", {"question": 42}), 422, "string_type")
    refused(post_json(client, "/v1/batches", {"items": []}), 422, "items")
    refused(post_json(client, "/v1/batches", {"items": [{"question": "q?"}], "key": "a\x00b"}), 422, '"loc": ["body", "key"]', "'key' contains a NUL character")
    refused(post_json(client, "/v1/batches", {"items": [{"question": "q?"}], "key": "k\udcff"}), 422, '"loc": ["body", "key"]')
    refused(post_json(client, "/v1/batches", {"items": [{"question": "q?"}], "key": "k" * 201}), 422, '"loc": ["body", "key"]')
    refused(post_json(client, "/v1/batches", {"items": [{"question": "q?"}] * 100_001}), 413, "at most 100000")
    refused(client.post("/v1/jobs", content=b" " * (16 * 1024 * 1024 + 1), headers={"content-type": "application/json"}), 413, "larger than")
    for length in (b"-1", b"\xb2", b"12abc"):
        refused(client.post("/v1/jobs", content=b'{"question": "q?"}', headers={"content-type": "application/json", "content-length": length}), 400, "Content-Length")
    for path in ("/v1/jobs/a%00b", "/v1/batches/a%00b", "/v1/batches/a%00b/results", "/v1/jobs/%ED%A0%80", "/v1/jobs/" + "f" * 5000):
        refused(client.get(path), 404, "no ")


@pytest.mark.services
def test_awkward_questions_through_the_api_are_answered(stack: Stack) -> None:

    texts = [text for text, refusal in AWKWARD.values() if refusal is None and "\x00" not in text]
    accepted = post_json(stack.client, "/v1/batches", {"items": [{"question": text} for text in texts]})
    assert accepted.status_code == 202, accepted.text
    views = wait_final(stack.sessions, [row["id"] for row in results_of(stack.sessions, accepted.json()["batch_id"])])
    assert [v["question"] for v in views] == texts
    assert all(v["status"] == "done" and v["answer"] for v in views), [v for v in views if v["status"] != "done"]


@pytest.mark.services
def test_a_batch_answers_with_its_job_ids_and_is_listed_first(stack: Stack) -> None:
    accepted = post_json(stack.client, "/v1/batches", {"items": [{"question": f"Where is {place}?"} for place in ("Kenya", "Peru", "Laos")]})
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["jobs"] == len(body["job_ids"]) == 3 and body["created"]
    assert body["job_ids"] == [row["id"] for row in results_of(stack.sessions, body["batch_id"])]
    listed = stack.client.get("/v1/batches", params={"limit": 1})
    assert listed.status_code == 200 and [b["id"] for b in listed.json()["batches"]] == [body["batch_id"]]
    assert listed.json()["total"] >= 1 and listed.json()["limit"] == 1
    assert stack.client.get("/v1/batches", params={"limit": 0}).status_code == 422
    assert stack.client.get(f"/v1/batches/{body['batch_id']}").json().keys() == listed.json()["batches"][0].keys()


@pytest.mark.services
def test_a_job_that_is_final_within_the_wait_comes_back_with_200(stack: Stack) -> None:
    waited = post_json(stack.client, "/v1/jobs?wait=60", {"question": "Where is Kenya?"})
    assert waited.status_code == 200, waited.text
    assert waited.json()["status"] == "done" and waited.json()["answer"]
    queued = post_json(stack.client, "/v1/jobs", {"question": "Where is Peru?"})
    assert queued.status_code == 202 and queued.json()["status"] in ("queued", "running")


# --- cubeqa submit ------------------------------------------------------------------------------------


def cli(stack: Stack, *args: str, **extra: str):
    """`cubeqa ARGS` in this process (typer's runner), with only our CUBEQA_* settings."""
    from typer.testing import CliRunner

    from cubeqa.cli import app

    env: dict[str, str | None] = {k: None for k in os.environ if k.upper().startswith("CUBEQA_")}
    env |= {"CUBEQA_BROKER_URL": stack.broker_url, "CUBEQA_DATABASE_URL": stack.database_url, **extra}
    return CliRunner().invoke(app, list(args), env=env)


def flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def batch_count(stack: Stack) -> int:
    from sqlalchemy import func, select

    from storage.models import Batch

    with stack.sessions() as session:
        return session.scalar(select(func.count()).select_from(Batch))


@pytest.mark.services
def test_submit_names_every_bad_line_and_the_good_ones_are_answered(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    monkeypatch.chdir(tmp_path)
    lines: list[bytes] = [
        b'\xef\xbb\xbf{"question": "Where is Kenya?"}',  # 1: a byte-order mark opens the file
        b"{broken json",
        b"[1, 2]",
        b'{"question": 5}',
        b'{"question": "   "}',
        b'{"question": "caf\xe9?"}',  # 6: Latin-1
        b'{"question": "a\\u0000b"}',
        b'{"question": "\\ud800"}',
        json.dumps({"question": "x" * 1_000_000}).encode(),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"question": "ok?", "reference": ["x"]}',
        json.dumps({"question": "🇰🇪 Где находится Kenya 肯尼亚?"}, ensure_ascii=False).encode(),
        b"",
        b'"just a string"',
        json.dumps({"question": "Robert'); DROP TABLE job; --", "answer": "verbatim"}).encode(),
    ]
    Path("messy.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    before = batch_count(stack)
    run = cli(stack, "submit", "messy.jsonl", "--wait")
    assert run.exit_code == 0, run.output
    expected = {
        2: "invalid JSON (Expecting property name", 3: "expected an object with a 'question' field, got list",
        4: "'question' must be a string, not int", 5: "'question' is empty", 6: "not UTF-8 (invalid continuation byte at byte 17)",
        7: "'question' contains a NUL character", 8: "'question' is not valid Unicode text",
        9: "'question' has 1000000 characters; the limit is 4000", 10: "invalid JSON (nested too deeply)",
        11: "'reference' must be a string, not list", 14: "expected an object with a 'question' field, got str",
    }
    for line, reason in expected.items():
        assert f"skipped messy.jsonl:{line}: {reason}" in flat(run.stderr), (line, run.stderr)
    assert "3 jobs queued, 11 lines skipped" in flat(run.stdout)
    assert batch_count(stack) == before + 1
    batch_id = flat(run.stdout).split("batch ")[1].split(":")[0]
    rows = results_of(stack.sessions, batch_id)
    assert [(r["line"], r["question"], r["status"]) for r in rows] == [
        (1, "Where is Kenya?", "done"), (12, "🇰🇪 Где находится Kenya 肯尼亚?", "done"), (15, "Robert'); DROP TABLE job; --", "done"),
    ]
    assert rows[2]["reference"] == "verbatim" and all(r["answer"] for r in rows)


@pytest.mark.services
def test_batches_are_listed_and_csv_results_have_a_column_per_figure(stack: Stack, tmp_path: Path) -> None:
    import csv

    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "Where is Kenya?", "reference": "In Africa."}\n{"question": "What is rain?"}\n', encoding="utf-8")
    run = cli(stack, "submit", str(path), "--wait", "--min-confidence", "0")  # a bank answer, hence an e2e_cos, for each
    assert run.exit_code == 0, run.output
    batch_id = flat(run.stdout).split("batch ")[1].split(":")[0]
    listed = cli(stack, "batches", "--json", "--limit", "1")
    assert listed.exit_code == 0 and [b["id"] for b in json.loads(listed.stdout)["batches"]] == [batch_id]
    table = cli(stack, "batches", "--limit", "3", COLUMNS="300")
    assert table.exit_code == 0 and batch_id[:12] in table.stdout  # the short id, as on the dashboard
    out = tmp_path / "results.csv"
    assert cli(stack, "results", batch_id, "--format", "csv", "--out", str(out)).exit_code == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["question"] for r in rows] == ["Where is Kenya?", "What is rain?"]
    assert {"metrics.e2e_cos", "metrics.cube_cos", "timings_ms.encode", "timings_ms.wait_decode", "hosts.decode"} <= rows[0].keys()
    assert "metrics" not in rows[0] and not any(v.startswith("{") for row in rows for v in row.values())
    assert float(rows[0]["metrics.e2e_cos"]) > 0 and rows[1]["metrics.e2e_cos"] == ""  # no reference, no end-to-end figure


def unreadable_files() -> dict[str, tuple[bytes, str]]:
    """File name -> (content, what the refusal must say)."""
    rows = "".join(f'{{"question": "question {i}?"}}\n' for i in range(8))
    return {
        "utf16.jsonl": ('{"question": "Where is Kenya?"}\n'.encode("utf-16"), "the file is UTF-16"),
        "utf32.csv": ("question\nWhere is Kenya?\n".encode("utf-32"), "the file is UTF-32"),
        "no-bom-utf16.jsonl": ('{"question": "Where?"}\n'.encode("utf-16-le"), "NUL bytes at the start of the file"),
        "latin1.csv": ("question\nWhere is Kenya?\ncafé?\n".encode("latin-1"), "latin1.csv:3: not UTF-8"),
        "quote.csv": (b'question\nWhere is Kenya?\n"Who built\nthe fort?\n', "quote.csv:3: unreadable CSV record starting on this line"),
        "stray-quote.csv": (b'question\n"Where" is Kenya?\n', "stray-quote.csv:2: unreadable CSV record"),
        "huge-field.csv": (b'question\n"' + b"x" * 200_000 + b'"\nok?\n', "huge-field.csv:2: unreadable CSV record starting on this line (field larger than field limit"),
        "header.csv": (b"text,answer\nWhere is Kenya?,Africa\n", "header.csv:1: the CSV header must name a 'question' column (found ['text', 'answer'])"),
        "markup.csv": (b"[/x],[bold]\nq,r\n", "markup.csv:1: the CSV header must name a 'question' column (found ['[/x]', '[bold]'])"),
        "[/bold]name.jsonl": (b'{"question": ""}\n', "[/bold]name.jsonl: no valid questions to submit"),  # a file in the folder "["
        "too-many.jsonl": (rows.encode(), "too-many.jsonl:6: more than 5 jobs by this line; a batch holds at most 5"),
        "questions.txt": (b"Where is Kenya?\n", "unknown format .txt; use .jsonl or .csv"),
    }


@pytest.mark.services
@pytest.mark.parametrize("name", list(unreadable_files()))
def test_an_unreadable_file_is_refused_whole_and_nothing_is_written(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    content, message = unreadable_files()[name]
    monkeypatch.chdir(tmp_path)
    Path(name).parent.mkdir(exist_ok=True)
    Path(name).write_bytes(content)
    before = batch_count(stack)
    run = cli(stack, "submit", name, CUBEQA_MAX_BATCH_ITEMS="5")
    assert run.exit_code == 1, run.output
    assert run.exception is None or isinstance(run.exception, SystemExit), run.exception
    assert message in flat(run.stderr)
    assert batch_count(stack) == before


@pytest.mark.services
@pytest.mark.parametrize(("key", "message"), [("k" * 201, "the key has 201 characters; the limit is 200"), ("k\udcff", "'key' is not valid Unicode"), ("  ", "the key is empty")])
def test_a_key_the_store_cannot_hold_is_refused_before_anything_is_written(stack: Stack, tmp_path: Path, key: str, message: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "Where is Kenya?"}\n', encoding="utf-8")
    before = batch_count(stack)
    run = cli(stack, "submit", str(path), "--key", key)
    assert run.exit_code == 1 and message in flat(run.stderr), run.output
    assert batch_count(stack) == before


@pytest.mark.services
def test_a_file_deep_in_the_tree_is_submitted(stack: Stack, tmp_path: Path) -> None:
    """Its path (over 600 characters) is longer than the batch's source column: the store keeps the end of it."""
    folder = tmp_path.joinpath(*["d" * 200] * 3)
    folder.mkdir(parents=True)
    path = folder / "questions.jsonl"
    path.write_text('{"question": "Where is Kenya?"}\n', encoding="utf-8")
    run = cli(stack, "submit", str(path))
    assert run.exit_code == 0 and "1 jobs queued" in flat(run.stdout), run.output
    again = cli(stack, "submit", str(path), "--key", "deep-file")
    repeat = cli(stack, "submit", str(path), "--key", "deep-file")
    assert again.exit_code == repeat.exit_code == 0 and "nothing submitted" in flat(repeat.stdout)
    assert "warning" not in repeat.stderr  # the stored source is the one this submission would store


@pytest.mark.services
def test_jobs_stored_while_the_broker_was_down_are_finished_by_the_reconciler(stack: Stack, tmp_path: Path) -> None:
    """A submission the broker refused leaves its jobs queued in SQL, and `cubeqa reconcile` completes them."""
    from sqlalchemy import select

    from storage.models import Batch

    path = tmp_path / "q.csv"
    path.write_text("question\nWhere is Kenya?\nWho built the fort?\nWhat is rain?\n", encoding="utf-8")
    down = service_env("redis://127.0.0.1:1/0", stack.database_url, COLUMNS="300")  # nothing listens on port 1
    run = subprocess.run([sys.executable, "-m", "cubeqa", "submit", str(path)], env=down, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "broker unreachable after 0 of 3 jobs were sent" in flat(run.stderr) and "`cubeqa reconcile` sends them" in flat(run.stderr)
    assert "Traceback" not in run.stderr
    with stack.sessions() as session:
        batch_id = session.scalar(select(Batch.id).where(Batch.source == str(path)))
    assert summary_of(stack.sessions, batch_id).counts["queued"] == 3

    time.sleep(1.2)
    again = cli(stack, "reconcile", "--after", "1")
    assert again.exit_code == 0 and "re-sent 3 stuck jobs" in flat(again.stdout), again.output
    views = wait_final(stack.sessions, [row["id"] for row in results_of(stack.sessions, batch_id)])
    assert [v["status"] for v in views] == ["done"] * 3
