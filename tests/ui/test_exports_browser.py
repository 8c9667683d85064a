"""Downloads in a real Chromium against a real `streamlit run`: the Labels page's preference
export and the Traces page's SFT export are written (by DuckDB's COPY) when the button is
clicked, and the zip the browser saves holds the export's rows and its manifest. The jobs are
synthetic (`bench.synthetic`, `tests/export_jobs.py`), ingested as real ones are."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from cai_engine import export
from cai_engine.store import Store
from tests.export_jobs import LABEL_JOB, label_job
from tests.ui.studio import browser_page, require_chromium, running_studio, wait_for_app

pytestmark = pytest.mark.browser

CRITIQUE_JOB = "critique-20260101-000000-synt"


@pytest.fixture
def studio(cai_home):
    from bench import synthetic

    require_chromium()
    store = Store(cai_home)
    synthetic.critique_job(store, 30, rounds=2, shards=2, job_id=CRITIQUE_JOB)
    label_job(store, 40)
    with running_studio(cai_home) as url:
        yield url, store


def download(page, button: str) -> tuple[list[dict], dict]:
    """Click a download button once the page's run has finished; the saved zip's data.jsonl
    rows and manifest. A click that lands on the button of a run that was then replaced asks
    for a file id Streamlit has already dropped, so no download starts: click once more."""
    wait_for_app(page)
    for attempt in range(2):
        try:
            with page.expect_download(timeout=30_000 * (attempt + 1)) as info:
                page.get_by_role("button", name=button).click()
            break
        except PlaywrightTimeout:
            if attempt:
                raise
            wait_for_app(page)
    data = Path(info.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        lines = zf.read("data.jsonl").decode("utf-8").split("\n")
        return [json.loads(line) for line in lines if line], json.loads(zf.read("manifest.json"))


def test_the_labels_and_traces_downloads_hold_the_exports_rows(studio):
    url, store = studio
    with browser_page() as page:
        page.goto(f"{url}/labels")
        wait_for_app(page)
        page.get_by_role("tab", name="Export").click()
        page.get_by_text("Drop ties").click()
        wait_for_app(page)
        filters = export.PrefFilters(drop_ties=True)
        counts = export.labelled_prefs_counts(store, LABEL_JOB, filters)
        shown = f"{counts['examples']} examples (0 from human verdicts) of 80 labels"
        page.get_by_text(shown).wait_for(timeout=10_000)
        rows, manifest = download(page, "Download preferences")
        assert rows == store.export_examples(filters.query(), LABEL_JOB)
        assert manifest["counts"] == counts and counts["skipped ties"] > 0
        assert (manifest["job"], manifest["command"]) == (LABEL_JOB, "studio download")

        page.goto(f"{url}/traces")
        wait_for_app(page)
        rows, manifest = download(page, "SFT (every round)")
        assert rows == store.export_examples(export.sft_query(all_rounds=True), CRITIQUE_JOB)
        assert len(rows) == 60  # 30 traces x 2 rounds, none empty
        assert (manifest["job"], manifest["all_rounds"]) == (CRITIQUE_JOB, True)
