"""Jobs answered from knowledge banks through real Redis, SQLite and `cubeqa worker` processes: evidence, the
version pinned at submission, a bank removed or built with another encoder, an unknown bank refused at intake."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import ROOT, migrated
from jobsystem import results_of, service_env, wait_for_batch
from test_knowledge_encoder import BAKERY, PUMP

from cubeqa.wiring import PACKAGED_BANK
from pipeline.knowledge.store import BankStore
from storage.models import Batch, Job
from storage.repository import NewJob, Pin, unfinished_jobs
from tasks.producer import dispatch, store, submit

pytestmark = [pytest.mark.slow, pytest.mark.services]

QUESTIONS = {
    "How often should the intake filter be cleaned?": "The intake filter must be cleaned every two weeks.",
    "On which days is sourdough baked?": "Sourdough bread is baked on Tuesdays and Fridays.",
    "When does the bakery open?": "The bakery opens at seven in the morning.",
}
REBUILT_BAKERY = BAKERY.replace("Sourdough bread is baked on Tuesdays and Fridays.", "Sourdough bread is baked on Mondays only.")


@dataclass
class KB:
    work: Path
    url: str
    sessions: object
    banks: BankStore
    docs: Path
    env: dict[str, str]
    encoder: object

    def embed(self, texts: list[str]):
        return self.encoder.encode(texts).vectors

    def build(self, name: str, paths: list[Path], **kw: object) -> str:
        kw.setdefault("encoder_identity", self.encoder.identity)
        return self.banks.build(name, paths, embed=self.embed, replace=True, **kw).version


def items() -> list[NewJob]:
    return [NewJob(question=q) for q in QUESTIONS]


def count(kb: KB, table: type) -> int:
    from sqlalchemy import func, select

    with kb.sessions() as session:
        return session.scalar(select(func.count()).select_from(table))


def cubeqa(kb: KB, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cubeqa", *args], capture_output=True, text=True, env=kb.env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def kb(broker_url: str, tmp_path_factory: pytest.TempPathFactory, encoder) -> Iterator[KB]:
    """A SQLite store and bank "house" built by the real teacher from a Markdown and a text document."""
    work = tmp_path_factory.mktemp("kb-jobs")
    docs = work / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text(PUMP, encoding="utf-8")
    (docs / "bakery.txt").write_text(BAKERY, encoding="utf-8")
    url = f"sqlite:///{work / 'jobs.db'}"
    sessions = migrated(url)
    env = service_env(broker_url, url, CUBEQA_BANK_ROOT=str(work / "banks"), COLUMNS="200")
    kb = KB(work, url, sessions, BankStore(work / "banks", builtin={"default": PACKAGED_BANK}), docs, env, encoder)
    kb.build("house", [docs])
    yield kb
    sessions.kw["bind"].dispose()


@pytest.fixture(scope="module")
def workers(kb: KB, broker_url: str) -> Iterator[list]:
    """One worker per stage serving the module's banks; started by the first test that needs them."""
    from cubeqa import supervise
    from tasks.app import configure

    with supervise.stage_workers(kb.env, kb.work) as processes:
        supervise.wait_for_workers(configure(broker_url), processes, kb.work, timeout=120)
        yield processes


def api(kb: KB, broker_url: str):
    """The HTTP API on the module's store and banks, in this process."""
    from fastapi.testclient import TestClient

    from cubeqa.api.main import create_app
    from cubeqa.settings import Settings

    return TestClient(create_app(Settings(database_url=kb.url, broker_url=broker_url, bank_root=kb.work / "banks")))


def test_an_unknown_bank_is_refused_at_intake_and_nothing_is_stored(kb: KB, broker_url: str) -> None:
    before = (count(kb, Batch), count(kb, Job))
    client = api(kb, broker_url)
    refused = client.post("/v1/jobs", json={"question": "When does the bakery open?", "bank": "nowhere"})
    assert refused.status_code == 422
    assert refused.json()["detail"] == [{"type": "value_error", "loc": ["body", "bank"], "msg": "no knowledge bank named 'nowhere'"}]
    batch = client.post("/v1/batches", json={"items": [{"question": "q?"}], "bank": "nowhere"})
    assert batch.status_code == 422 and "'nowhere'" in batch.json()["detail"][0]["msg"]
    bad_name = client.post("/v1/batches", json={"items": [{"question": "q?"}], "bank": "../etc"})
    assert bad_name.status_code == 422 and "bank name '../etc' is not allowed" in bad_name.json()["detail"][0]["msg"]
    out_of_range = client.post("/v1/jobs", json={"question": "q?", "bank": "house", "min_confidence": 1.5})
    assert out_of_range.status_code == 422 and out_of_range.json()["detail"][0]["loc"] == ["body", "min_confidence"]

    questions = kb.work / "unknown.jsonl"
    questions.write_text(json.dumps({"question": "When does the bakery open?"}) + "\n", encoding="utf-8")
    cli = cubeqa(kb, "submit", str(questions), "--bank", "nowhere")
    assert cli.returncode == 1
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and "no bank named 'nowhere'" in lines[0]
    assert (count(kb, Batch), count(kb, Job)) == before


def test_a_batch_answers_from_the_version_pinned_at_submission_and_a_removed_bank_fails_its_jobs(kb: KB, request) -> None:
    """Both batches are sent before any worker runs; the bank is rebuilt (and another removed) while they wait."""
    version_a = kb.build("rebuilt", [kb.docs])
    pinned = submit(kb.sessions, items(), micro_batch=2, source="pinned", pin=Pin("rebuilt", version_a, 0.0))
    kb.build("doomed", [kb.docs])
    doomed = submit(kb.sessions, items(), micro_batch=2, source="doomed", pin=Pin("doomed", kb.banks.resolve("doomed")))
    (kb.docs / "bakery.txt").write_text(REBUILT_BAKERY, encoding="utf-8")
    try:
        version_b = kb.build("rebuilt", [kb.docs])
    finally:
        (kb.docs / "bakery.txt").write_text(BAKERY, encoding="utf-8")
    assert version_b != version_a
    kb.banks.remove("doomed")
    request.getfixturevalue("workers")

    assert wait_for_batch(kb.sessions, pinned.batch_id).done == len(QUESTIONS)
    rows = results_of(kb.sessions, pinned.batch_id)
    assert {(r["bank"], r["bank_version"]) for r in rows} == {("rebuilt", version_a)}
    assert [r["answer"] for r in rows] == list(QUESTIONS.values())  # version A's sourdough sentence, which B no longer has

    summary = wait_for_batch(kb.sessions, doomed.batch_id)
    assert (summary.failed, summary.total) == (len(QUESTIONS), len(QUESTIONS))  # none lost: every job final
    for row in results_of(kb.sessions, doomed.batch_id):
        assert row["status"] == "failed" and "bank 'doomed'" in row["error"] and "removed" in row["error"]

    current = submit(kb.sessions, items()[1:2], micro_batch=2, pin=Pin("rebuilt", version_b, 0.0))
    wait_for_batch(kb.sessions, current.batch_id)
    assert results_of(kb.sessions, current.batch_id)[0]["answer"] == "Sourdough bread is baked on Mondays only."


def test_cli_answers_carry_evidence_and_confidence_in_jsonl_and_csv(kb: KB, workers) -> None:
    questions = kb.work / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS), encoding="utf-8")
    sent = cubeqa(kb, "submit", str(questions), "--bank", "house", "--min-confidence", "0", "--wait")
    assert sent.returncode == 0, sent.stderr
    batch_id = sent.stdout.split("batch ")[1].split(":")[0].strip()
    assert f"bank house@{kb.banks.resolve('house')}" in sent.stdout
    status = json.loads(cubeqa(kb, "status", batch_id, "--json").stdout)
    assert status["banks"] == [f"house@{kb.banks.resolve('house')}"] and status["done"] == len(QUESTIONS)

    jsonl = cubeqa(kb, "results", batch_id)
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["answer"] for r in rows] == list(QUESTIONS.values())
    for row in rows:
        assert row["status"] == "done" and row["decoder_path"] == "bank" and 0.0 <= row["confidence"] <= 1.0
        assert row["evidence"]["sentence"] == row["answer"] and row["min_confidence"] == 0.0
        assert len(row["evidence"]["alternatives"]) == 2  # the top-k (3) others, each with its own provenance
        assert all(alt["sentence"] != row["answer"] and "position" in alt for alt in row["evidence"]["alternatives"])
    filter_row = rows[0]["evidence"]
    assert filter_row["doc_id"].endswith("pump.md") and filter_row["title"] == "Garden pump manual" and filter_row["position"] == 2
    assert filter_row["before"] == ["The pump runs on a twelve volt battery.", "Charge the battery overnight before the first use."]
    assert filter_row["after"] == ["A clogged filter makes the motor overheat."]
    assert filter_row["section"] == ["Garden pump manual"] and rows[2]["evidence"]["section"] == []
    assert rows[2]["evidence"]["doc_id"].endswith("bakery.txt") and rows[2]["evidence"]["position"] == 0

    table = list(csv.DictReader(io.StringIO(cubeqa(kb, "results", batch_id, "--format", "csv").stdout)))
    assert table[0]["evidence.sentence"] == QUESTIONS["How often should the intake filter be cleaned?"]
    assert table[0]["evidence.title"] == "Garden pump manual" and table[0]["evidence.position"] == "2"
    assert table[0]["evidence.section"] == "Garden pump manual" and table[2]["evidence.section"] == ""
    assert table[0]["evidence.context"] == (
        "The pump runs on a twelve volt battery. Charge the battery overnight before the first use. A clogged filter makes the motor overheat."
    )
    assert float(table[0]["confidence"]) == pytest.approx(rows[0]["confidence"]) and table[0]["bank"] == "house"


def test_below_min_confidence_the_api_answers_no_confident_answer_with_the_evidence(kb: KB, broker_url: str, workers) -> None:
    client = api(kb, broker_url)
    question = {"question": "How often should the intake filter be cleaned?", "bank": "house", "min_confidence": 1.0}
    body = client.post("/v1/jobs", params={"wait": 60}, json=question).json()
    assert body["status"] == "done" and body["answer"] == "no confident answer" and body["decoder_path"] == "none"
    assert body["confidence"] < 1.0 and body["evidence"]["sentence"] == "The intake filter must be cleaned every two weeks."
    assert (body["bank"], body["bank_version"], body["min_confidence"]) == ("house", kb.banks.resolve("house"), 1.0)
    assert client.get(f"/v1/jobs/{body['id']}").json() == body


def test_a_removed_bank_still_held_by_the_worker_finishes_its_jobs_resent_from_sql(kb: KB, workers) -> None:
    version = kb.build("held", [kb.docs])
    warm = submit(kb.sessions, items()[:1], micro_batch=2, pin=Pin("held", version, 0.0))
    assert wait_for_batch(kb.sessions, warm.batch_id).done == 1  # the decode worker now holds the version
    waiting = store(kb.sessions, items(), key=None, source="held", pin=Pin("held", version, 0.0))  # stored, not sent
    kb.banks.remove("held")
    with kb.sessions() as session:
        stored = unfinished_jobs(session=session, batch_id=waiting.id)  # what the reconciler re-sends: the pin comes from SQL
    assert {job.pin for job in stored} == {Pin("held", version, 0.0)}
    assert dispatch(kb.sessions, stored, micro_batch=2) == len(QUESTIONS)
    assert wait_for_batch(kb.sessions, waiting.id).done == len(QUESTIONS)
    rows = results_of(kb.sessions, waiting.id)
    assert [r["answer"] for r in rows] == list(QUESTIONS.values()) and {r["bank_version"] for r in rows} == {version}


def test_a_bank_built_with_another_encoder_fails_its_jobs_naming_both_encoders(kb: KB, workers) -> None:
    alien = replace(kb.encoder.identity, model_id="another-encoder", weights_hash="0" * 16)
    version = kb.build("alien", [kb.docs], encoder_identity=alien)
    batch = submit(kb.sessions, items(), micro_batch=2, pin=Pin("alien", version))
    summary = wait_for_batch(kb.sessions, batch.batch_id)
    assert summary.failed == summary.total == len(QUESTIONS)
    for row in results_of(kb.sessions, batch.batch_id):
        assert "'alien'" in row["error"] and "0000000000000000" in row["error"] and kb.encoder.identity.weights_hash in row["error"]
