"""The dashboard in a real headless Chromium against a real `cubeqa api` over a store real workers filled:
no console errors, charts with as many bars and points as the store says, live progress, filtering, the
job record, the compare view and the token login."""

from __future__ import annotations

import time

import pytest

from browser.browser_stack import QUESTIONS, TOKEN, reference_items

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(1800)]


def done_jobs(stack, batch_id: str) -> list[dict]:
    from storage.repository import iter_results

    with stack.sessions() as session:
        return [row for row in iter_results(session=session, batch_id=batch_id) if row["status"] == "done"]


def load(visit, url: str):
    """Opens `url` and waits until every chart on it is drawn (or declared empty)."""
    visit.page.goto(url)
    visit.page.wait_for_load_state("networkidle")
    visit.page.wait_for_function("() => [...document.querySelectorAll('[data-chart]')].every(e => e.dataset.points !== undefined)")
    return visit.page


def chart(page, name: str) -> dict:
    """What plotly drew in a chart: its traces' y values and the number of bar or marker elements in its SVG."""
    return page.evaluate(
        """name => {
            const el = document.querySelector(`[data-chart="${name}"]`);
            return {ys: (el.data || []).map(t => t.y), drawn: el.querySelectorAll('.barlayer .point, .scatterlayer .point').length,
                    xtitle: el.querySelector('.g-xtitle')?.textContent || '', ytitle: el.querySelector('.g-ytitle')?.textContent || ''};
        }""",
        name,
    )


def clean(visit) -> None:
    assert visit.errors == [], visit.errors
    assert visit.outside == [], f"requests left the machine: {visit.outside}"


def test_batches_page_lists_every_batch_newest_first(stack, visit, shoot) -> None:
    v = visit()
    page = load(v, stack.api + "/dashboard")
    rows = page.locator("#batches tbody tr[data-batch]")
    assert rows.count() == len(stack.batches)
    assert [rows.nth(i).get_attribute("data-batch") for i in range(rows.count())] == [stack.batches["b"], stack.batches["a"]]
    first = rows.nth(0)
    assert first.locator('[data-field="done"]').inner_text() == str(len(done_jobs(stack, stack.batches["b"])))
    assert stack.versions["b"] in first.inner_text()
    shoot(page, "dashboard-batches")
    clean(v)


def test_batch_page_charts_hold_what_the_store_holds(stack, visit, shoot) -> None:
    batch_id = stack.batches["b"]
    jobs = done_jobs(stack, batch_id)
    v = visit()
    page = load(v, f"{stack.api}/dashboard/batches/{batch_id}")
    expected = {
        "score": sum(job["score"] is not None for job in jobs),
        "e2e_cos": sum("e2e_cos" in job["metrics"] for job in jobs),
        "cube_gain": sum("cube_cos" in job["metrics"] and "identity_cos" in job["metrics"] for job in jobs),
    }
    for name, count in expected.items():
        drawn = chart(page, name)
        assert count > 0 and sum(drawn["ys"][0]) == count, name
        assert drawn["drawn"] == len(drawn["ys"][0]), name  # one bar per bin
        assert drawn["xtitle"] and drawn["ytitle"] == "jobs (count)", name
    paths: dict[str, int] = {}
    for job in jobs:
        paths[job["decoder_path"]] = paths.get(job["decoder_path"], 0) + 1
    drawn = chart(page, "paths")
    assert sorted(drawn["ys"][0]) == sorted(paths.values()) and drawn["drawn"] == len(paths)
    assert set(paths) == {"bank", "generative"}, "version b's hybrid decoder answers by both paths"
    drawn = chart(page, "stages")
    assert len(drawn["ys"]) == 4 and all(len(ys) == 3 for ys in drawn["ys"])  # compute/wait x median/p90, 3 stages
    assert drawn["drawn"] == sum(y > 0 for ys in drawn["ys"] for y in ys)
    assert "ms" in drawn["ytitle"]
    drawn = chart(page, "throughput")
    # the bar width from the first and last bar centres (each rounded to 1 ms, so the error is spread over 39 widths)
    width = page.evaluate("() => fetch(location.pathname + '/charts.json').then(r => r.json()).then(f => { const x = f.charts.throughput.data[0].x; return (x[x.length - 1] - x[0]) / (x.length - 1); })")
    assert drawn["drawn"] == len(drawn["ys"][0]) and (len(drawn["ys"][0]) == 40 or width >= 1.0)  # MIN_SLICE
    assert abs(sum(drawn["ys"][0]) * width - len(jobs)) < 0.5
    assert "jobs/s" in drawn["ytitle"] and "(s)" in drawn["xtitle"]
    workers = page.locator("#workers tbody tr")
    stages = {workers.nth(i).locator("td").nth(0).inner_text() for i in range(workers.count())}
    assert stages == {"encode", "cube", "decode"}
    shoot(page, "dashboard-batch")
    clean(v)


def test_job_table_filters_by_status_and_text(stack, visit, shoot) -> None:
    batch_id = stack.batches["a"]
    jobs = done_jobs(stack, batch_id)
    v = visit()
    page = load(v, f"{stack.api}/dashboard/batches/{batch_id}")
    assert page.locator("#matching").inner_text() == str(QUESTIONS)
    word = "kenya"
    page.fill('#filters input[name="text"]', word.upper())
    page.click("#filters button")
    page.wait_for_load_state("networkidle")
    matching = [job for job in jobs if any(word in (job[k] or "").lower() for k in ("question", "answer", "error"))]
    assert int(page.locator("#matching").inner_text()) == len(matching) > 0
    rows = page.locator("#jobs tbody tr[data-status]")
    assert rows.count() == min(len(matching), 50)
    assert all(word in rows.nth(i).inner_text().lower() for i in range(rows.count()))
    shoot(page, "dashboard-batch-filtered")
    page.select_option('#filters select[name="status"]', "queued")
    page.click("#filters button")
    page.wait_for_load_state("networkidle")
    assert page.locator("#matching").inner_text() == "0"
    assert "No job matches" in page.locator("#jobs").inner_text()
    clean(v)


def test_a_job_opens_its_full_record(stack, visit, shoot) -> None:
    batch_id = stack.batches["a"]
    job = done_jobs(stack, batch_id)[0]
    v = visit()
    page = load(v, f"{stack.api}/dashboard/batches/{batch_id}")
    page.locator(f'#jobs a[href="/dashboard/jobs/{job["id"]}"]').first.click()
    page.wait_for_load_state("networkidle")
    fields = page.locator("#job-fields").inner_text()
    assert job["question"] in fields and job["answer"] in fields and stack.versions["a"] in fields
    page.click("details summary")
    assert f'"id": "{job["id"]}"' in page.locator("#job-json").inner_text()
    shoot(page, "dashboard-job")
    clean(v)


def test_compare_shows_two_versions_with_intervals(stack, visit, shoot) -> None:
    v = visit()
    page = load(v, f"{stack.api}/dashboard/compare")
    page.select_option('#compare-form select[name="a"]', f"v:{stack.versions['a']}")
    page.select_option('#compare-form select[name="b"]', f"v:{stack.versions['b']}")
    page.click("#compare-form button")
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => document.querySelector('[data-chart=\"diff\"]')?.dataset.points !== undefined")
    questions = {item.question for item in reference_items(QUESTIONS)}
    assert page.locator("#shared").inner_text() == str(len(questions))
    rows = page.locator("#diffs tbody tr")
    names = [rows.nth(i).locator("td").nth(0).inner_text() for i in range(rows.count())]
    assert {"answer score", "answer vs reference (e2e_cos)", "the cube's gain"} <= set(names)
    for i in range(rows.count()):
        low, high = (float(x) for x in rows.nth(i).locator("td").nth(5).inner_text().strip("[]").split(","))
        diff = float(rows.nth(i).locator("td").nth(4).inner_text())
        assert low <= diff <= high, names[i]
    drawn = chart(page, "diff")
    assert drawn["drawn"] == rows.count() == len(drawn["ys"][0])
    # Same cube, another decoder: the cube's cosines are the same, the answers' are not.
    by_name = {names[i]: float(rows.nth(i).locator("td").nth(4).inner_text()) for i in range(rows.count())}
    assert by_name["the cube's gain"] == 0 and by_name["answer vs reference (e2e_cos)"] != 0
    shoot(page, "dashboard-compare")
    clean(v)


def test_live_progress_advances_without_a_reload(stack, visit, shoot) -> None:
    items = reference_items(160, offset=QUESTIONS)
    stack.start_workers("live")
    try:
        batch_id = stack.submit(items, 4, "browser-test:live")
        v = visit()
        page = v.page
        page.goto(f"{stack.api}/dashboard/batches/{batch_id}")
        page.evaluate("window.__sameDocument = true")
        seen = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            final = int(page.locator('#progress [data-field="final"]').inner_text())
            if not seen or final != seen[-1]:
                seen.append(final)
            if final == len(items):
                break
            time.sleep(0.5)
        assert seen[-1] == len(items), seen
        assert len(seen) >= 3 and seen == sorted(seen), f"progress seen: {seen}"
        assert page.evaluate("window.__sameDocument") is True  # no navigation: the numbers came by polling
        page.wait_for_function("() => document.querySelector('#progress').dataset.live === undefined")
        page.wait_for_function(  # a function, not a string: the page's CSP forbids eval, which polling a string uses
            f"() => document.querySelector('[data-chart=\"score\"]').data?.[0].y.reduce((a, b) => a + b, 0) === {len(done_jobs(stack, batch_id))}"
        )
        assert page.locator(".bar.big").get_attribute("aria-valuenow") == str(len(items))
        shoot(page, "dashboard-batch-live")
        clean(v)
    finally:
        stack.stop_workers()


def test_token_login_refuses_missing_and_wrong_tokens(stack, visit, shoot) -> None:
    v = visit()
    page = v.page
    response = page.goto(stack.api_token + f"/dashboard/batches/{stack.batches['a']}")
    assert "/dashboard/login" in page.url and response.status == 200
    status = page.evaluate(f"() => fetch('/dashboard/batches/{stack.batches['a']}/progress.json').then(r => r.status)")
    assert status == 401
    page.fill('input[name="token"]', "not-the-token")
    with page.expect_response(lambda r: r.url.endswith("/dashboard/login")) as answer:
        page.click("#login-form button")
    assert answer.value.status == 401
    assert page.locator("#login-error").inner_text() == "Wrong token."
    assert page.context.cookies() == []
    shoot(page, "dashboard-login-refused")
    page.fill('input[name="token"]', TOKEN)
    page.click("#login-form button")
    page.wait_for_load_state("networkidle")
    assert page.url.endswith(f"/dashboard/batches/{stack.batches['a']}")
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    assert TOKEN not in page.content()
    status = page.evaluate(f"() => fetch('/dashboard/batches/{stack.batches['a']}/progress.json').then(r => r.status)")
    assert status == 200
    # A bearer token works too; the open API's dashboard needs none.
    v.errors.clear()  # the 401 of the refused login and fetch above are expected console errors
    other = visit()
    other.page.goto(stack.api + "/dashboard")
    assert other.page.url == stack.api + "/dashboard"
    clean(other)


def test_batch_page_shows_the_quality_the_cli_and_api_report_to_the_job(stack, visit, shoot) -> None:
    """50 questions with references at the bundle's default threshold: the first screen's answered, refused and
    right counts equal `cubeqa status`, GET /v1/batches/{id} and a count over the stored jobs themselves."""
    import json
    import re
    import subprocess
    import sys
    import urllib.request

    from jobsystem import wait_for_batch

    from browser.browser_stack import ROOT
    from storage.quality import same_sentence
    from storage.repository import NewJob, Pin
    from tasks.producer import submit

    stack.stop_workers()  # only default workers answer this batch
    stack.start_workers("quality")
    try:
        # Training questions: their reference sentences are in the bundle's own bank (the validation ones are not).
        lines = (ROOT / "data" / "squad_sent_train.jsonl").read_text().splitlines()[:50]
        items = [NewJob(row["question"], reference=row["answer"]) for row in map(json.loads, lines)]
        batch_id = submit(stack.sessions, items, micro_batch=8, source="browser-test:quality", pin=Pin()).batch_id
        wait_for_batch(stack.sessions, batch_id, timeout=600)
    finally:
        stack.stop_workers()
    rows = done_jobs(stack, batch_id)
    answered = [row for row in rows if row["decoder_path"] != "none"]
    expected = {
        "answered": len(answered), "refused": len(rows) - len(answered),
        "right": sum(same_sentence(row["answer"], row["reference"]) for row in answered),
    }
    assert expected["answered"] > 0 and expected["right"] > 0, expected
    with urllib.request.urlopen(f"{stack.api}/v1/batches/{batch_id}", timeout=30) as response:
        api = json.load(response)["quality"]
    assert {key: api[key] for key in expected} == expected
    env = {**stack.env, "COLUMNS": "200"}
    status = subprocess.run([sys.executable, "-m", "cubeqa", "status", batch_id], capture_output=True, text=True,
                            env=env, timeout=300)
    assert status.returncode == 0, status.stdout + status.stderr
    for key, count in expected.items():
        assert re.search(rf"│ {key}\s*│\s*{count} │", status.stdout), (key, count, status.stdout)
    v = visit()
    page = load(v, f"{stack.api}/dashboard/batches/{batch_id}")
    for key, count in expected.items():
        tile = page.locator(f'#quality [data-text="q-{key}"]')
        assert tile.inner_text() == str(count), key
        assert tile.is_visible() and tile.bounding_box()["y"] < 900, key  # on the first screen (900 px high)
    assert page.locator('#quality [data-text="q-precision"]').inner_text() == f"{100 * api['precision']:.1f} %"
    shoot(page, "dashboard-batch-quality")
    clean(v)
