"""The Training page in a real Chromium against a real `streamlit run`: an SFT job launched from
the form is watched, with no reload, through the page's polling fragment: the step count grows
and the Loss chart is drawn while it runs, then the trained model is listed (AppTest does not
run a fragment's timer, so only a browser can show this)."""

from __future__ import annotations

import json
import re
import time

import pytest

from cai_engine import jobs
from cai_engine.bundled import install_bundled
from cai_engine.models import parse_spec
from cai_engine.store import Store
from tests.test_jobs import kill_runners
from tests.test_training import sft_export
from tests.ui.studio import browser_page, require_chromium, running_studio, wait_for_app

pytestmark = pytest.mark.browser

# 40 steps of 2 examples on one CPU thread take ~0.3-0.8 s each after a ~10 s start-up, so
# several 2-second polls of the fragment find the job running with some steps done.
STEPS = 40
DEADLINE_S = 90  # for the whole job, from submit


@pytest.fixture
def studio(cai_home, monkeypatch):
    require_chromium()
    # One torch thread for the studio and the job it starts (see test_traces_browser.py).
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


def test_an_sft_job_launched_from_the_form_is_watched_live_to_a_trained_model(
    studio, cai_home, tmp_path, tiny_spec
):
    folder = sft_export(tmp_path / "sft")
    seen: list[tuple[float, str, bool, int]] = []  # (seconds, progress, Loss shown, charts)
    with browser_page() as page:
        page.goto(f"{studio}/training")
        wait_for_app(page)
        page.get_by_text("No training jobs yet").wait_for()

        # role locators skip the hidden tabs: these are the SFT tab's fields
        page.get_by_role("textbox", name="…or an export folder").fill(str(folder))
        page.get_by_role("textbox", name="Base model").fill(tiny_spec)
        for label, value in [
            ("Max steps (-1: epochs)", STEPS),
            ("Batch size", 2),
            ("Grad accumulation", 1),
        ]:
            field = page.get_by_role("spinbutton", name=label, exact=True)
            field.fill(str(value))
            field.press("Tab")  # commit the number
        page.get_by_role("button", name="Start SFT job").click()
        start = time.monotonic()
        page.get_by_text(re.compile(r"^Started sft-")).wait_for()

        # From here on the test only watches: no reload, no click.
        while time.monotonic() - start < DEADLINE_S:
            progress = progress_text(page)
            loss = page.get_by_text("Loss", exact=True).count() > 0
            charts = page.locator("[data-testid=stVegaLiteChart]").count()
            if not seen or seen[-1][1:] != (progress, loss, charts):
                seen.append((round(time.monotonic() - start, 1), progress, loss, charts))
            if progress.startswith(("succeeded", "failed")):
                break
            page.wait_for_timeout(250)
        timeline = "\n".join(map(str, seen))

        # (1) While it ran, the step count grew under a drawn Loss chart.
        # The browser paints a rerun's elements one by one, so a snapshot can show the new step
        # count a moment before the Loss heading under it: count the steps seen with the curve.
        counts, with_loss, drawn = [], set(), []
        for _, progress, loss, charts in seen:
            done = re.match(r"running: step (\d+)/(\d+)", progress)
            if done and int(done[1]) >= 1:
                assert int(done[2]) == STEPS, timeline
                if loss:  # a logged step has a Loss curve...
                    with_loss.add(int(done[1]))
                    drawn.append(charts)  # ...whose chart vega draws a moment later
                if int(done[1]) not in counts:
                    counts.append(int(done[1]))
        assert len(counts) >= 3 and counts[0] < STEPS, timeline
        assert counts == sorted(counts), timeline
        assert len(with_loss) >= 2 and max(drawn) >= 1, timeline

        # (2) It finished; the page, now rerun in full, lists the trained model.
        assert seen[-1][1] == f"succeeded: step {STEPS}/{STEPS}", timeline
        wait_for_app(page)
        page.get_by_text("Lineage of").wait_for()
        store = Store(cai_home)
        (job,) = jobs.list_jobs(store, kind="sft")
        # the lineage table names the job that trained it, as a link to that job
        page.locator("[data-testid=stTable] a").filter(has_text=job.id).first.wait_for()
        page.get_by_text("Everything stored with it (JSON)").click()
        page.locator("[data-testid=stCode]").filter(has_text=job.id).first.wait_for()
        code = page.locator("[data-testid=stCode]").first.inner_text()
        assert json.loads(code)["job"] == job.id

    assert job.status == "succeeded", job.error
    assert job.config["data"] == str(folder.resolve())
    assert job.config["model"] == str(parse_spec(tiny_spec))
    assert (job.config["max_steps"], job.config["batch_size"], job.config["grad_accum"]) == (
        STEPS,
        2,
        1,
    )
    (model,) = store.trained_models()
    assert (model["name"], model["kind"], model["job_id"]) == (job.id, "sft", job.id)
    assert [m["step"] for m in job.run.metrics() if "loss" in m] == list(range(1, STEPS + 1))
