"""The Traces page in a real Chromium against a real `streamlit run`: a critique job fills the
page while it runs, with no reload, through the page's polling fragment (AppTest does not run
a fragment's timer, so only a browser can show this)."""

from __future__ import annotations

import re
import time

import pytest

from cai_engine import critique, jobs
from cai_engine.bundled import install_bundled
from cai_engine.models import parse_spec
from cai_engine.store import Store
from tests.fake_openai import FakeOpenAI
from tests.test_jobs import kill_runners
from tests.ui.studio import browser_page, require_chromium, running_studio, wait_for_app
from tests.ui.test_traces_page import PAGE_CAPTION

pytestmark = pytest.mark.browser

# 8 prompts x (1 initial + 3 rounds x (critique + revision)) = 56 steps. The tiny random
# model rarely stops early, so each step is 8 x 256 new tokens: ~2.5 s on one CPU thread.
# After a ~5 s model load the first traces land ~8 s in, and the job runs ~12 s more, so
# several polls of the page's 2-second fragment find it running with traces shown.
LIMIT, ROUNDS, MAX_NEW = 8, 3, 256
STEPS = LIMIT * (1 + 2 * ROUNDS)
DEADLINE_S = 90  # for the whole job, from submit; it takes ~20 s


@pytest.fixture
def studio(cai_home, monkeypatch):
    require_chromium()
    # One torch thread for the studio and the job it starts: with the default two threads a
    # busy 2-core machine made the same job take from 8 s to 68 s (threads spin waiting for
    # each other); with one it took 8-10 s either way, so the timing above holds.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    install_bundled(Store(cai_home))
    try:
        with running_studio(cai_home) as url:
            yield url
    finally:
        kill_runners(cai_home)  # the job has its own session: stopping the studio spares it


def progress_text(page) -> str:
    bars = page.locator("[data-testid=stProgress]")
    return bars.first.inner_text().strip() if bars.count() else ""


def picker_text(page) -> str:
    """What the "Critique job" picker shows: the job picked, with its status."""
    boxes = page.get_by_role("combobox", name="Critique job")
    return boxes.first.input_value() if boxes.count() else ""


def traces_caption(page) -> str:
    """The table's caption ("Traces 1–8 of 8", "(filtered from …)" when filtered) as "8 of 8
    traces": how many traces match, of how many."""
    captions = page.locator("[data-testid=stCaptionContainer]").all_inner_texts()
    for c in captions:
        if m := PAGE_CAPTION.fullmatch(c.strip()):
            return f"{m[1]} of {m[2] or m[1]} traces"
    return ""


def test_a_job_started_from_the_form_fills_the_page_while_it_runs(studio, cai_home, tiny_spec):
    seen: list[
        tuple[float, str, str, str]
    ] = []  # (seconds since submit, progress, caption, picker)
    with browser_page() as page:
        page.goto(f"{studio}/traces")
        wait_for_app(page)
        page.get_by_text("No critique jobs yet").wait_for()

        page.get_by_role("textbox", name="Model").fill(tiny_spec)
        for label, value in [("Limit (0 = all)", LIMIT), ("Rounds", ROUNDS)]:
            page.get_by_label(label, exact=True).fill(str(value))
        page.get_by_label("Max new tokens", exact=True).fill(str(MAX_NEW))
        page.get_by_label("Max new tokens", exact=True).press("Tab")  # commit the number
        page.get_by_role("button", name="Start critique job").click()
        start = time.monotonic()
        page.get_by_text(re.compile(r"^Started critique-")).wait_for()

        # From here on the test only watches: no reload, no click.
        while time.monotonic() - start < DEADLINE_S:
            progress, caption, picker = progress_text(page), traces_caption(page), picker_text(page)
            if not seen or seen[-1][1:] != (progress, caption, picker):
                seen.append((round(time.monotonic() - start, 1), progress, caption, picker))
            if progress.startswith(("succeeded", "failed")):
                break
            page.wait_for_timeout(250)
        timeline = "\n".join(map(str, seen))

        # (1) Traces showed up while the job was still running, and, still with no reload,
        # the step count went on growing under them.
        counts = []  # steps done, as shown while the job ran and every trace was listed
        for _, progress, caption, _ in seen:
            done = re.match(r"running: (\d+)/(\d+) steps", progress)
            if done and caption == f"{LIMIT} of {LIMIT} traces" and int(done[1]) not in counts:
                assert int(done[2]) == STEPS, timeline
                counts.append(int(done[1]))
        assert len(counts) >= 2 and counts[0] < STEPS, timeline
        assert counts == sorted(counts), timeline

        # (2) It finished, and the page, now rerun in full, shows every trace and the exports.
        assert re.fullmatch(rf"succeeded: {STEPS}/{STEPS} steps( · \d+ tokens/s)?", seen[-1][1]), (
            timeline
        )
        wait_for_app(page)
        # (3) The job picker followed the job with no reload: it said "running" while the job
        # ran and says "succeeded" now (it used to say "queued" until a reload).
        assert any(" · running · " in picker for *_, picker in seen), timeline
        for _ in range(60):  # the page's full rerun follows the fragment's within a moment
            if " · succeeded · " in picker_text(page):
                break
            page.wait_for_timeout(250)
        assert " · succeeded · " in picker_text(page), f"{timeline}\nnow: {picker_text(page)}"
        page.get_by_text(f"Round {ROUNDS} · revision", exact=True).wait_for()
        assert traces_caption(page) == f"{LIMIT} of {LIMIT} traces"
        # .first: while a fragment rerun replaces its elements, the old button can linger a moment
        page.get_by_role("button", name="SFT (final revisions)").first.wait_for()

    store = Store(cai_home)
    (row,) = store.job_rows()
    job = jobs.wait(store, row[0], timeout=10)
    assert job.status == "succeeded", job.error
    assert (job.config["limit"], job.config["rounds"]) == (LIMIT, ROUNDS)
    assert job.config["sampling"]["max_new_tokens"] == MAX_NEW
    assert job.config["model"] == str(parse_spec(tiny_spec))
    assert len(store.traces(job.id)) == STEPS


@pytest.fixture
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


def test_exports_follow_the_traces_while_the_job_runs(studio, cai_home, fake):
    # The fake server holds its answers until the page has shown the job with no traces, then
    # answers each request after 2 s: the initial answer, round 1's critique and revision;
    # round 2's critique then waits 90 s, so the job stays running with one complete round to
    # export.
    fake.gate.clear()
    fake.delay_s = 2
    fake.plan = ["ok", "ok", "ok"]
    fake.then, fake.slow_s = "slow", 90
    critique.submit(
        Store(cai_home),
        {
            "constitution": "default",
            "prompts": "helpful:train",
            "model": fake.spec(retries=0, timeout=150),
            "limit": 1,
            "rounds": 2,
            "few_shots": 0,
        },
    )
    with browser_page() as page:
        page.goto(f"{studio}/traces")
        wait_for_app(page)
        # The page's full run saw the job before its first answer (playwright waits raise
        # TimeoutError, not AssertionError, so these do not count as the known bug).
        page.get_by_text("no traces yet (running)").wait_for(timeout=30_000)
        fake.gate.set()
        page.get_by_text("Round 1 · revision", exact=True).wait_for(timeout=90_000)
        page.wait_for_timeout(5_000)  # two more polls of the fragment
        # 1 prompt, 2 rounds: 5 steps, of which round 1 is 3; the 4th is held by the server.
        page.get_by_text(re.compile(r"^running: 3/5 steps")).wait_for(timeout=1_000)
        # Wait out a rerun that is replacing the section (old and new copies side by side).
        for _ in range(50):
            downloads = page.get_by_role("button", name="SFT (final revisions)").count()
            if downloads <= 1:
                break
            page.wait_for_timeout(100)
        stale = page.get_by_text("no traces yet (running)").count()
        assert (downloads, stale) == (1, 0)
