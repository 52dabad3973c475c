"""Refusals and thresholds in the browser: the same 50 questions answered by real workers at the bundle's default
confidence threshold and at 0.3; a refused job's page shows its confidence, the threshold and its best match with
evidence, and the compare view shows the coverage difference with an interval that excludes zero."""

from __future__ import annotations

import json

import pytest

from browser.browser_stack import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(1800)]
QUESTIONS = 50


@pytest.fixture(scope="module")
def thresholds(stack) -> dict[str, str]:
    """Batch ids by threshold: "default" (the bundle's) and "0.3", the same training questions (their reference
    sentences are in the bundle's own bank)."""
    from jobsystem import wait_for_batch

    from storage.repository import NewJob, Pin
    from tasks.producer import submit

    lines = (ROOT / "data" / "squad_sent_train.jsonl").read_text().splitlines()[:QUESTIONS]
    items = [NewJob(row["question"], reference=row["answer"]) for row in map(json.loads, lines)]
    stack.stop_workers()
    stack.start_workers("thresholds")
    try:
        batches = {name: submit(stack.sessions, items, micro_batch=8, source=f"browser-test:threshold {name}",
                                pin=pin).batch_id
                   for name, pin in (("default", Pin()), ("0.3", Pin(min_confidence=0.3)))}
        for batch_id in batches.values():
            wait_for_batch(stack.sessions, batch_id, timeout=600)
    finally:
        stack.stop_workers()
    return batches


def jobs_of(stack, batch_id: str) -> list[dict]:
    from storage.repository import iter_results

    with stack.sessions() as session:
        return list(iter_results(session=session, batch_id=batch_id))


def clean(visit) -> None:
    assert visit.errors == [], visit.errors
    assert visit.outside == [], f"requests left the machine: {visit.outside}"


def test_a_refused_job_shows_its_confidence_threshold_and_best_match(stack, thresholds, visit, shoot) -> None:
    from cubeqa.render import confidence_text

    refused = [j for j in jobs_of(stack, thresholds["default"]) if j["decoder_path"] == "none"]
    assert refused, "the default threshold refuses some of these questions"
    job = max(refused, key=lambda j: len(j["evidence"]["before"]) + len(j["evidence"]["after"]))
    evidence = job["evidence"]
    threshold = evidence["threshold"]  # the worker recorded the default it judged against
    assert job["min_confidence"] is None and job["confidence"] < threshold
    v = visit()
    page = v.page
    page.goto(f"{stack.api}/dashboard/jobs/{job['id']}")
    page.wait_for_load_state("networkidle")
    verdict = page.locator("#verdict-line").inner_text()
    assert verdict.startswith("Refused") and confidence_text(job["confidence"]) in verdict
    assert page.locator('#verdict [data-field="threshold"]').inner_text() == f"{threshold:.2f}"
    assert "the worker's default" in page.locator("#verdict").inner_text()
    heading = page.locator("#evidence h2").inner_text()
    assert heading.startswith(f"Best match, refused at confidence {confidence_text(job['confidence'])}")
    assert page.locator("#evidence-passage mark").inner_text() == evidence["sentence"]
    passage = page.locator("#evidence-passage").inner_text()
    assert all(sentence in passage for sentence in evidence["before"] + evidence["after"])
    where = page.locator("#evidence-where").inner_text()
    assert (evidence["source"] or evidence["title"] or evidence["doc_id"]) in where
    assert f"sentence {evidence['position'] + 1}" in where
    rows = page.locator("#alternatives tbody tr")
    assert rows.count() == len(evidence["alternatives"]) > 0
    assert evidence["alternatives"][0]["sentence"] in rows.nth(0).inner_text()
    assert page.locator("#job-fields").inner_text().count(job["question"]) == 1
    shoot(page, "dashboard-job-refused")
    clean(v)


def outcome(job: dict) -> str:
    """refused, right or wrong, as the compare view labels a question asked once."""
    if job["decoder_path"] == "none":
        return "refused"
    return "right" if job["metrics"].get("right_answer") == 1.0 else "wrong"


def test_comparing_two_thresholds_shows_the_coverage_difference(stack, thresholds, visit, shoot) -> None:
    a, b = ({j["question"]: j for j in jobs_of(stack, thresholds[name])} for name in ("default", "0.3"))
    answered = {name: sum(j["decoder_path"] != "none" for j in side.values()) for name, side in (("a", a), ("b", b))}
    assert answered["b"] > answered["a"], answered
    changed = sum(outcome(a[q]) != outcome(b[q]) for q in a)
    v = visit()
    page = v.page
    page.goto(f"{stack.api}/dashboard/compare")
    page.select_option('#compare-form select[name="a"]', thresholds["default"])
    page.select_option('#compare-form select[name="b"]', thresholds["0.3"])
    page.click("#compare-form button")
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => document.querySelector('[data-chart=\"rates\"]')?.dataset.points !== undefined")
    assert page.locator("#shared").inner_text() == str(QUESTIONS)
    coverage = page.locator('#rates tr[data-name="coverage"]')
    low, diff = float(coverage.get_attribute("data-low")), float(coverage.get_attribute("data-diff"))
    assert diff == pytest.approx((answered["b"] - answered["a"]) / QUESTIONS) and low > 0
    assert "real" in coverage.inner_text()
    refusal = page.locator('#rates tr[data-name="refusal"]')
    assert float(refusal.get_attribute("data-high")) < 0
    threshold = page.locator('#setup tr[data-setup="threshold"]')
    recorded = {j["evidence"]["threshold"] for j in a.values() if j["evidence"]}  # what the workers judged by
    assert threshold.locator("td").nth(1).inner_text() == f"worker default ({recorded.pop():.2f})" and not recorded
    assert threshold.locator("td").nth(2).inner_text() == "0.30" and "differs" in threshold.get_attribute("class")
    both = sum(a[q]["decoder_path"] != "none" and b[q]["decoder_path"] != "none" for q in a)
    assert page.locator("#both-answered").inner_text() == str(both)
    assert page.locator("#changed-count").inner_text() == str(changed)
    assert page.locator("#changed tbody tr").count() == changed > 0
    shoot(page, "dashboard-compare-thresholds")
    clean(v)
