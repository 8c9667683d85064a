"""The demo from the Home page in a real Chromium against a real `streamlit run`: pick the tiny
profile and contrastive pairs (the judge-labelled demo is `test_demo`'s, through the CLI),
press "Run the demo", watch the stage table fill in live (no reload), then open Eval from the
finished demo and read the metrics and the answers side by side."""

from __future__ import annotations

import re
import time

import pytest

from cai_engine import demo, jobs
from cai_engine.bundled import install_bundled
from cai_engine.store import Store
from tests.test_jobs import kill_runners
from tests.ui.studio import browser_page, require_chromium, running_studio, wait_for_app

pytestmark = pytest.mark.browser

DEADLINE_S = 600  # the whole chain, from the click (two shared cores)


@pytest.fixture
def studio(cai_home, monkeypatch):
    require_chromium()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the studio and its jobs share two cores
    install_bundled(Store(cai_home))
    try:
        with running_studio(cai_home) as url:
            yield url
    finally:
        kill_runners(cai_home)


def stages_seen(page) -> str:
    table = page.locator("[data-testid=stProgress]")
    return table.first.inner_text().strip() if table.count() else ""


def test_the_tiny_demo_runs_from_home_live_and_opens_in_eval(studio, cai_home):
    with browser_page() as page:
        page.goto(studio)
        wait_for_app(page)
        page.get_by_text("Tiny random model", exact=False).click()
        wait_for_app(page)
        page.get_by_text("Contrastive pairs: a positive and a negative prompt").click()
        wait_for_app(page)
        page.get_by_role("button", name="Run the demo").click()
        start = time.monotonic()
        page.get_by_text(re.compile(r"^demo demo-.*: (queued|running)")).wait_for()

        # From here the page updates itself: the stage count only grows, to 6 of 6.
        seen: list[tuple[float, str]] = []
        while time.monotonic() - start < DEADLINE_S:
            text = stages_seen(page)
            if not seen or seen[-1][1] != text:
                seen.append((round(time.monotonic() - start, 1), text))
            if re.search(r": (succeeded|failed|cancelled|interrupted) ·", text):
                break
            page.wait_for_timeout(500)
        timeline = "\n".join(map(str, seen))
        counts = [int(m[1]) for _, t in seen if (m := re.search(r"· (\d)/6 stages", t))]
        assert counts == sorted(counts) and len(set(counts)) >= 3, timeline  # watched, live
        assert re.search(r": succeeded · 6/6 stages", seen[-1][1]), timeline

        store = Store(cai_home)
        (demo_job,) = jobs.list_jobs(store, kind="demo")
        assert (demo_job.config["profile"], demo_job.config["pairs"]) == ("tiny", "contrastive")
        stages = demo.read_stages(demo_job.run)
        assert jobs.get_job(store, stages["label"]).config["source"] == "construction"
        wait_for_app(page)
        page.get_by_text("The demo finished").wait_for()
        page.get_by_role("button", name="Open Eval").click()

        # Eval opens on the demo's eval: three models, the base as the reference.
        page.get_by_role("heading", name="Eval: compare models").wait_for()
        wait_for_app(page)
        page.get_by_text("Reference for win rates").wait_for()
        picked = page.get_by_role("combobox", name="Eval job").input_value()
        assert picked.startswith(f"{stages['eval']} · succeeded · 3 models"), picked
        grid = page.locator("[data-testid=stDataFrame]").first
        grid.wait_for()
        for name in ("tiny-demo-model", f"model:{stages['sft']}", f"model:{stages['dpo']}"):
            assert page.get_by_text(name).count() >= 1, name
        page.get_by_role("tab", name="Answers side by side").click()
        page.get_by_text("where the models disagree most first").wait_for()
        assert page.get_by_text("P(better than reference)").count() == 2  # SFT and DPO
        page.get_by_role("tab", name="Lineage").click()
        # in words, with the data jobs as links: the SFT model's data is the critique job
        page.locator("[data-testid=stTable]").filter(has_text=stages["critique"]).first.wait_for()
        link = page.get_by_role("link", name=stages["critique"]).first
        assert link.get_attribute("href").endswith(f"traces?job={stages['critique']}")
