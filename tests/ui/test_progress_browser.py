"""Progress as a user sees it, in a real Chromium against a real `streamlit run`: the Jobs page
(its log as a terminal would show it, its link to the job's results) and a stage page while a
real critique job runs (it says what it is doing, then how long is left).

Screenshots go to $CAI_SHOTS when it is set (else to the test's tmp folder).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from cai_engine import critique, jobs
from cai_engine.bundled import install_bundled
from cai_engine.store import Store
from tests.test_jobs import kill_runners
from tests.test_pairs import critique_job_with_traces
from tests.ui.studio import browser_page, require_chromium, running_studio, wait_for_app

pytestmark = pytest.mark.browser

# 6 prompts x (1 initial + 2 rounds x (critique + revision)) = 30 steps of up to 320 new tokens
# of the tiny random model: several polls of the page find it running past its first batch.
LIMIT, ROUNDS, MAX_NEW = 6, 2, 320
STEPS = LIMIT * (1 + 2 * ROUNDS)
DEADLINE_S = 120  # for the whole job, from submit


@pytest.fixture
def studio(cai_home, monkeypatch):
    require_chromium()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the studio and its job share a busy CPU
    install_bundled(Store(cai_home))
    try:
        with running_studio(cai_home) as url:
            yield url
    finally:
        kill_runners(cai_home)


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("CAI_SHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def progress_text(page) -> str:
    bars = page.locator("[data-testid=stProgress]")
    return bars.first.inner_text().strip() if bars.count() else ""


def test_the_jobs_page_shows_a_clean_wrapped_log_and_links_to_the_jobs_traces(
    studio, cai_home, shots
):
    store = Store(cai_home)
    job_id = critique_job_with_traces(store, prompts=2)  # the one looked at
    newer = critique_job_with_traces(store, 3, "critique-00000000-000001-newer")  # picked first
    long_line = "a long line of the log " * 20
    with open(jobs.get_job(store, job_id).run.log_path, "w") as f:
        f.write(f"[12:00:00] {job_id}: started (attempt 1)\n")
        f.write("Loading weights:   0%|          | 0/4\r")
        f.write("Loading weights:  50%|#####     | 2/4\r")
        f.write("Loading weights: 100%|##########| 4/4\r\n")
        f.write(long_line + "\n" + f"[12:00:09] {job_id}: succeeded\n")

    with browser_page() as page:
        page.goto(f"{studio}/jobs")
        wait_for_app(page)
        assert page.get_by_role("combobox", name="Job").input_value() == newer
        page.get_by_role("combobox", name="Job").click()
        page.get_by_role("option", name=job_id).click()
        wait_for_app(page)
        log = page.locator("[data-testid=stCode]").filter(has_text="Loading weights").first
        log.wait_for()
        text = log.inner_text()
        assert "Loading weights: 100%|##########| 4/4" in text
        assert "0/4" not in text and "2/4" not in text  # the rewritten states are gone
        # wrapped: the long line takes several rows of the box, and nothing scrolls sideways
        box = log.bounding_box()
        assert box["width"] < 1400
        scrolls = log.evaluate(
            "e => [...e.querySelectorAll('*')].some(n => n.scrollWidth > n.clientWidth + 1)"
        )
        assert not scrolls
        page.screenshot(path=str(shots / "jobs-page.png"), full_page=True)

        page.get_by_role("link", name="See its results on the Traces page").click()
        page.wait_for_url(re.compile(r"/traces$"))
        wait_for_app(page)
        page.get_by_text("Traces 1–2 of 2", exact=True).wait_for()  # its 2, not the newer one's 3
        picked = page.get_by_role("combobox", name="Critique job").input_value()
        assert picked.startswith(f"{job_id} · succeeded")
        page.screenshot(path=str(shots / "traces-after-link.png"), full_page=True)


def test_a_running_critique_job_says_what_it_does_then_how_long_is_left(
    studio, cai_home, tiny_spec, shots
):
    store = Store(cai_home)
    seen: list[tuple[float, str]] = []
    with browser_page() as page:
        page.goto(f"{studio}/traces")
        wait_for_app(page)
        job = critique.submit(
            store,
            {
                "constitution": "harmless",
                "prompts": "red-team:train",
                "model": tiny_spec,
                "limit": LIMIT,
                "rounds": ROUNDS,
                "sampling": {"max_new_tokens": MAX_NEW},
            },
        )
        start = time.monotonic()
        page.reload()  # the page picks the newest job
        wait_for_app(page)
        shot = said = False
        while time.monotonic() - start < DEADLINE_S:
            text = progress_text(page)
            if text and (not seen or seen[-1][1] != text):
                seen.append((round(time.monotonic() - start, 1), text))
            if not said and re.match(r"running: [a-z ]+ · 0/", text):
                page.screenshot(path=str(shots / "traces-first-batch.png"), full_page=True)
                said = True
            if not shot and "left" in text:
                page.screenshot(path=str(shots / "traces-running.png"), full_page=True)
                shot = True
                jobs_tab = page.context.browser.new_page(viewport=page.viewport_size)  # Jobs page
                jobs_tab.goto(f"{studio}/jobs")
                wait_for_app(jobs_tab)
                jobs_tab.locator("[data-testid=stProgress]").first.wait_for()
                jobs_tab.get_by_text("Time left").wait_for()
                jobs_tab.screenshot(path=str(shots / "jobs-running.png"), full_page=True)
                jobs_tab.close()
            if text.startswith(("succeeded", "failed")):
                break
            page.wait_for_timeout(250)
        timeline = "\n".join(map(str, seen))

    final = jobs.get_job(store, job.id)
    assert final.status == "succeeded", (final.error, timeline)
    # never 0 of N without a word: before its first steps the job says what it is doing
    for _, text in seen:
        if text.startswith("running") and f" 0/{STEPS} steps" in text:
            assert re.match(
                r"running: (starting|loading the model|answering the first batch of prompts) · ",
                text,
            ), timeline
    # past its first batch: the counts and the time left
    assert any(
        re.match(rf"running: \d+/{STEPS} steps · about \d+ (s|min \d\d s) left", t) for _, t in seen
    ), timeline
    assert shot, timeline
    assert re.fullmatch(rf"succeeded: {STEPS}/{STEPS} steps · \d+ tokens/s", seen[-1][1]), timeline
