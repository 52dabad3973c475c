"""Adding a metric to the dashboard is one registry entry plus a migration: two fake metrics added to
storage.metrics.METRICS at runtime (and their columns, as their migration would add them) reach the job table,
the stored result, the batch summary, the batch page's charts and numbers and the compare view, with no other
edit. And docs/architecture.md lists the places to touch, at most three besides the migration."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: the registry is patched before anything reads it, as an entry in the source is.
SCRIPT = r'''
import json, sys

from storage import metrics

FAKES = (
    metrics.Metric("fake_cos", "fake label", "what the fake measures", per_unit=100),
    metrics.Metric("fake_flag", "fake share", "jobs the fake flags", unit="share", share=True),
)
metrics.METRICS = metrics.METRICS + FAKES

from fastapi.testclient import TestClient
from sqlalchemy import select, text

from cubeqa.api import create_app
from cubeqa.settings import Settings
from storage.db import make_engine, session_factory, upgrade
from storage.models import Job
from storage.repository import JobOutcome, NewJob, create_batch, record_outcomes
from storage.summary import batch_summary

url = sys.argv[1]
upgrade(url)
engine = make_engine(url)
with engine.begin() as connection:  # what the new metrics' migration adds
    connection.execute(text("ALTER TABLE job ADD COLUMN fake_cos FLOAT"))
    connection.execute(text("ALTER TABLE job ADD COLUMN fake_flag FLOAT"))
sessions = session_factory(engine)
with sessions.begin() as session:
    batch = create_batch(session=session, items=[NewJob(f"question {i}", reference="r") for i in range(4)])
outcomes = [
    JobOutcome(job_id=job_id, answer="a", decoder_path="bank", score=0.5,
               metrics={"fake_cos": 0.2 * i, "fake_flag": float(i % 2), "e2e_cos": 0.5})
    for i, job_id in enumerate(batch.job_ids)
]
with sessions.begin() as session:
    record_outcomes(session=session, outcomes=outcomes, model_version="m@1")
with sessions() as session:
    stored = session.execute(select(Job.fake_cos, Job.fake_flag).order_by(Job.position)).all()
    summary = batch_summary(session=session, batch_id=batch.id)
client = TestClient(create_app(Settings(database_url=url, broker_url="redis://127.0.0.1:1/0")))
print(json.dumps({
    "columns": [column.name for column in Job.__table__.columns],
    "stored": [list(row) for row in stored],
    "summary": summary.metrics,
    "page": client.get(f"/dashboard/batches/{batch.id}").text,
    "view": client.get(f"/dashboard/batches/{batch.id}/charts.json").json(),
    "compare": client.get(f"/dashboard/compare?a={batch.id}&b=v:m@1").text,
}))
'''


def test_a_registry_entry_and_its_column_put_a_metric_on_every_view(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CUBEQA_")} | {"PYTHONPATH": str(ROOT)}
    url = f"sqlite:///{tmp_path / 'store.db'}"
    run = subprocess.run([sys.executable, "-c", SCRIPT, url], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.splitlines()[-1])
    assert {"fake_cos", "fake_flag"} <= set(found["columns"])
    assert found["stored"] == [[0.0, 0.0], [0.2, 1.0], [0.4, 0.0], [0.6000000000000001, 1.0]]
    assert found["summary"]["fake_cos"]["n"] == 4 and found["summary"]["fake_flag"]["mean"] == 0.5
    chart = found["view"]["charts"]["fake_cos"]
    assert sum(chart["data"][0]["y"]) == 4 and chart["layout"]["xaxis"]["title"]["text"] == "fake label (cosine)"
    assert found["view"]["texts"]["mean-fake_cos"] == "0.300" and found["view"]["texts"]["share-fake_flag"] == "50.0 %"
    page = found["page"]
    assert 'data-chart="fake_cos"' in page and "fake label" in page and "what the fake measures" in page
    assert 'data-text="share-fake_flag"' in page and "fake share" in page
    rows = re.findall(r'<td title="[^"]*">([^<]+)</td><td class="num">(\d+)</td>', found["compare"])
    assert ("fake label", "4") in rows and ("fake share", "4") in rows


def test_the_docs_list_at_most_three_places_to_touch_besides_the_migration() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Adding a metric to the dashboard", 1)[1].split("\n## ", 1)[0]
    places = [line for line in section.splitlines() if re.match(r"\d+\. ", line)]
    besides = [line for line in places if "migration" not in line.lower()]
    assert len(places) == len(besides) + 1 and 1 <= len(besides) <= 3, places
    for path in re.findall(r"`((?:storage|pipeline|cubeqa)/[\w/]+\.py)`", section):
        assert (ROOT / path).is_file(), path


def test_the_stored_metrics_are_the_ones_a_job_gets() -> None:
    """Each stored metric of the registry is a name pipeline.metrics.item_metrics gives an answered job with a
    reference (or one the store decides itself), and each name it gives is stored: a renamed metric cannot
    leave an empty column behind."""
    import numpy as np

    from pipeline.metrics import item_metrics
    from storage.metrics import stored_metrics

    q, out, answer, reference = (np.eye(4, dtype=np.float32)[i : i + 1] for i in range(4))
    (computed,) = item_metrics(q, out, answer, [True], [reference[0]])
    assert set(computed) == {metric.name for metric in stored_metrics() if not metric.by_store}
    assert {metric.name for metric in stored_metrics() if metric.by_store} == {"right_answer"}
