"""The Labels page in a real Chromium with imported pairs: the judge's agreement with the
dataset and where the pairs came from are on screen, and the dataset's own label job says it
in words. Set CAI_SHOTS to a folder to keep the screenshots there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cai_engine.bundled import install_bundled
from cai_engine.external_pairs import import_pairs
from cai_engine.store import Store
from tests.test_external_pairs import FIXTURES, judge_labels, label_job_of
from tests.ui.studio import browser_page, require_chromium, running_studio, wait_for_app

pytestmark = pytest.mark.browser


def test_imported_pairs_show_their_lineage_and_the_judges_agreement(cai_home, tmp_path):
    require_chromium()
    store = Store(cai_home)
    install_bundled(store)
    result = import_pairs(store, FIXTURES / "hh.jsonl", "hh", "hh-browser")
    judge_labels(store, result.pairs_job, prefer_longer=False)  # disagrees on every pair
    shots = Path(os.environ.get("CAI_SHOTS") or tmp_path)
    with running_studio(cai_home) as url, browser_page() as page:
        page.goto(f"{url}/labels")
        wait_for_app(page)
        page.get_by_text("the judge agrees with the dataset's label on 0%", exact=False).wait_for()
        page.screenshot(path=str(shots / "labels-imported-judge.png"), full_page=True)
        lineage = page.get_by_text("were imported from", exact=False)
        assert f"sha256 {result.sha256[:12]}" in lineage.inner_text()
        # the dataset's own labels, picked from the job list
        page.get_by_role("combobox", name="Label job").click()
        page.get_by_role("option", name=label_job_of(result), exact=False).click()
        wait_for_app(page)
        own = page.get_by_text("The labels of the dataset", exact=False)
        own.wait_for()
        assert "No model was asked." in own.inner_text()
        page.screenshot(path=str(shots / "labels-imported-dataset.png"), full_page=True)
    for name in ("labels-imported-judge.png", "labels-imported-dataset.png"):
        assert (shots / name).stat().st_size > 10_000  # a rendered page, not a blank one
