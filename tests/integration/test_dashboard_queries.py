"""The dashboard's SQL aggregates on SQLite and PostgreSQL against the same figures computed in Python from
the rows, and the paired bootstrap of the compare view."""

from __future__ import annotations

import random
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from jobsystem import postgres_database
from sqlalchemy import insert

from storage import dashboard_queries as q
from storage.db import make_engine, session_factory, upgrade
from storage.figures import BatchFigures, Share, batch_figures
from storage.models import Batch, Job, ModelVersion, metric_columns

pytestmark = pytest.mark.services
STAGES = ("encode", "cube", "decode")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path):  # (sessions, batch id, rows)
    """A store with one batch of 300 jobs in the shape the workers write: micro-batches of 16 share timings and hosts."""
    with ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else stack.enter_context(postgres_database())
        upgrade(url)
        sessions = session_factory(make_engine(url))
        rng = random.Random(7)
        created = datetime(2026, 1, 1, tzinfo=UTC)
        rows = []
        for i in range(300):
            if i % 16 == 0:
                timings = {s: rng.uniform(1, 50) for s in STAGES} | {f"wait_{s}": rng.uniform(0, 900) for s in STAGES}
                hosts = {s: f"{s}-{rng.randrange(2)}@h" for s in STAGES}
            status = "failed" if i % 37 == 5 else "done"
            path = "none" if i % 9 == 0 else "bank"
            metrics = {"cube_cos": rng.uniform(-0.2, 0.9), "identity_cos": rng.uniform(-0.2, 0.9), "decode_fidelity": rng.random()}
            if path != "none":
                metrics |= {"e2e_cos": rng.uniform(-0.3, 0.95), "echo": float(rng.random() < 0.3)}
                metrics["right_answer"] = float(i % 3 == 0)
            rows.append({
                "id": f"{i:032x}", "batch_id": "b" * 32, "position": i, "question": f"question {i % 250}", "status": status,
                "attempts": 1, "dispatches": 1, "score": rng.uniform(0.1, 0.9) if status == "done" else None,
                "decoder_path": path if status == "done" else None, "metrics": metrics if status == "done" else None,
                "timings_ms": timings, "hosts": hosts, "model_version": "m@1" if status == "done" else None,
                "created_at": created, "finished_at": created + timedelta(seconds=i / 10), "error": None if status == "done" else "bad input",
                "answer": "an answer" if status == "done" and path != "none" else None,
                **metric_columns(metrics if status == "done" else None),
            })
        with sessions.begin() as session:
            session.add(ModelVersion(id="m@1", first_seen_at=created))
            session.add(Batch(id="b" * 32, total=len(rows), done_count=0, failed_count=0, created_at=created))
            session.flush()
            session.execute(insert(Job.__table__), rows)
        yield sessions, "b" * 32, rows


def done(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "done"]


def page_figures(sessions, batch_id: str) -> BatchFigures:
    """The batch page's figures, as the page reads them: from the batch's row, at most 30 bars, 40 buckets."""
    with sessions() as session:
        return batch_figures(session, q.batch_rows(session, batch_id=batch_id)[0], bars=30, buckets=40)


def test_histograms_count_every_value_in_its_bar(store) -> None:
    sessions, batch_id, rows = store
    stats = page_figures(sessions, batch_id)
    values = {
        "score": [r["score"] for r in done(rows)],
        "e2e_cos": [r["metrics"]["e2e_cos"] for r in done(rows) if "e2e_cos" in r["metrics"]],
        "cube_gain": [r["metrics"]["cube_cos"] - r["metrics"]["identity_cos"] for r in done(rows)],
    }
    assert set(stats.histograms) == set(values)
    for name, xs in values.items():
        hist = stats.histograms[name]
        assert hist.n == len(xs) == sum(hist.counts), name
        assert hist.mean == pytest.approx(np.mean(xs)), name
        assert len(hist.counts) <= 30 and len(hist.edges) == len(hist.counts) + 1
        expected = np.histogram(xs, bins=hist.edges)[0]
        # Fine-bin edges are exact multiples of 1/per_unit; a value on an inner edge counts in the bar above it.
        assert list(expected) == hist.counts, name
    echo = [r["metrics"]["echo"] for r in done(rows) if "echo" in r["metrics"]]
    right = [r["metrics"]["right_answer"] for r in done(rows) if "right_answer" in r["metrics"]]
    assert stats.shares == {
        "echo": Share(share=pytest.approx(np.mean(echo)), n=len(echo)),
        "right_answer": Share(share=pytest.approx(np.mean(right)), n=len(right)),
    }


def test_stage_quantiles_and_workers_match_the_rows(store) -> None:
    sessions, batch_id, rows = store
    stats = page_figures(sessions, batch_id)
    workers, paths = stats.workers, stats.paths
    for stage in STAGES:
        compute = [r["timings_ms"][stage] for r in done(rows)]
        wait = [r["timings_ms"][f"wait_{stage}"] for r in done(rows)]
        figures = stats.times[stage]
        assert figures.compute_p50 == pytest.approx(np.percentile(compute, 50))
        assert figures.compute_p90 == pytest.approx(np.percentile(compute, 90))
        assert figures.wait_p90 == pytest.approx(np.percentile(wait, 90))
    expected: dict[tuple[str, str], int] = {}
    for r in rows:
        for stage in STAGES:
            expected[(stage, r["hosts"][stage])] = expected.get((stage, r["hosts"][stage]), 0) + 1
    assert {(w.stage, w.host): w.jobs for w in workers} == expected
    assert paths == {"bank": sum(r["decoder_path"] == "bank" for r in done(rows)), "none": sum(r["decoder_path"] == "none" for r in done(rows))}


def test_throughput_counts_every_final_job(store) -> None:
    sessions, batch_id, rows = store
    series = page_figures(sessions, batch_id).throughput
    # the last job finishes 29.9 s after submission: 29 slices of at least MIN_SLICE (1 s), not 40 of 0.75 s
    assert series.width is not None and len(series.seconds) == 29 and series.width == pytest.approx(29.9 / 29)
    assert sum(series.jobs_per_second) * series.width == pytest.approx(len(rows))
    expected = [0] * 29  # no job finishes on an inner bucket edge here
    for r in rows:
        expected[min(int((r["finished_at"] - r["created_at"]).total_seconds() / series.width), 28)] += 1
    assert [round(n * series.width) for n in series.jobs_per_second] == expected


def test_job_page_filters_and_paginates(store) -> None:
    sessions, batch_id, rows = store
    with sessions() as session:
        failed, n_failed = q.job_page(session, batch_id, status="failed")
        counts = q.batch_rows(session, batch_id=batch_id)[0].counts
        assert q.job_page(session, batch_id, status="failed", counts=counts) == (failed, n_failed)
        assert q.job_page(session, batch_id, page=2, counts=counts) == q.job_page(session, batch_id, page=2)
        assert q.job_page(session, batch_id, text="QUESTION 24", counts=counts) == q.job_page(session, batch_id, text="QUESTION 24")
        texts, n_text = q.job_page(session, batch_id, text="QUESTION 24", per_page=5, page=2)
        literal, n_literal = q.job_page(session, batch_id, text="100%_")
    assert n_failed == len(failed) == sum(r["status"] == "failed" for r in rows)
    matching = [r for r in rows if "question 24" in r["question"]]
    assert n_text == len(matching) and [t.position for t in texts] == [r["position"] for r in matching][5:10]
    assert n_literal == 0 and literal == []  # % and _ are matched literally


def test_question_outcomes_setups_and_versions(store) -> None:
    from storage.comparison import OWN_BANK, Setup, outcomes, version_setup

    sessions, batch_id, rows = store
    with sessions() as session:
        by_batch = outcomes(session, batch_id=batch_id)
        by_version = outcomes(session, version="m@1")
        versions = q.model_versions(session)
        [row] = q.batch_rows(session, batch_id=batch_id)
        setup = version_setup(session, "m@1")
    assert by_batch == by_version and versions == [("m@1", len(done(rows)))]
    asked = [r for r in done(rows) if r["question"] == "question 0"]
    answered = [r for r in asked if r["decoder_path"] != "none"]
    outcome = by_batch["question 0"]
    assert (outcome.jobs, outcome.answered) == (len(asked), len(answered)) == (2, 1)
    assert outcome.judged == 1 and outcome.right == sum(r["right_answer"] for r in answered)
    assert outcome.label == f"1 of 2 answered, {outcome.right} right"
    assert outcome.metrics["score"] == pytest.approx(np.mean([r["score"] for r in answered]))  # over answered jobs only
    assert row.setup == setup == Setup(banks=(OWN_BANK,), thresholds=(None,), reranks=(None,), paths=("bank", "none"),
                                       versions=("m@1",))
    assert setup.texts()["threshold"] == "worker default" and row.versions == ["m@1"] and row.banks == []


def test_the_compare_header_reads_the_default_thresholds_the_workers_recorded(store) -> None:
    from sqlalchemy import update

    from storage.comparison import with_defaults

    sessions, batch_id, rows = store
    first, second = (r["id"] for r in done(rows)[:2])
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == first).values(evidence={"sentence": "A.", "threshold": 0.45}))
        session.execute(update(Job).where(Job.id == second).values(evidence={"sentence": "B."}))  # before 0.45 was kept
    with sessions() as session:
        [row] = q.batch_rows(session, batch_id=batch_id)
        setup = with_defaults(session, row.setup, Job.batch_id == batch_id)
    assert setup.defaults == (0.45,) and setup.texts()["threshold"] == "worker default (0.45)"


def test_compare_gives_each_metric_its_paired_interval() -> None:
    from cubeqa.dashboard.compare import compare

    rng = np.random.default_rng(1)
    a = rng.normal(0.5, 0.1, 400)
    b = a + 0.02 + rng.normal(0, 0.01, 400)
    _, [diff] = compare({str(i): {"m": x} for i, x in enumerate(a)}, {str(i): {"m": x} for i, x in enumerate(b)}, ("m",))
    assert diff.n == 400 and diff.diff == pytest.approx(0.02, abs=0.002) and 0 < diff.low < diff.diff < diff.high and diff.significant
    shared, diffs = compare({"x": {"m": 1.0}, "y": {"m": 2.0}, "z": {"m": None}}, {"x": {"m": 1.0}, "y": {"m": 2.0}}, ("m",))
    assert shared == 2 and diffs[0].diff == 0 and (diffs[0].low, diffs[0].high) == (0, 0) and not diffs[0].significant
