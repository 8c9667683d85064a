"""The Labels page's Export tab through AppTest, on a synthetic label job of 600 labels: the
counts come from SQL on every run, and the file is written only when the download is clicked
(a deferred download), never while the page runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cai_engine import export
from cai_engine.store import Store
from tests.export_jobs import LABEL_JOB, label_job

PAGE = str(Path(__file__).resolve().parents[2] / "ui" / "app_pages" / "labels.py")


@pytest.fixture
def exports_made(cai_home, monkeypatch) -> list[str]:
    """A label job in the test's home; the names of the export calls that wrote or read
    examples (a class attribute patched, so the page's cached store is covered too)."""
    store = Store(cai_home)
    label_job(store, 300)
    store.add_review(LABEL_JOB, store.labels(LABEL_JOB)[0]["prompt_id"], 0, "ann", "tie", "AB")
    made: list[str] = []
    for name in ("copy_export", "export_examples"):
        method = getattr(Store, name)

        def recorded(self, *args, _name=name, _method=method, **kwargs):
            made.append(_name)
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(Store, name, recorded)
    return made


def caption(at) -> str:
    return next(c.value for c in at.caption if "from human verdicts" in c.value)


def test_the_export_tab_counts_by_sql_and_writes_nothing_until_clicked(cai_home, exports_made):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    store = Store(cai_home)
    counts = export.labelled_prefs_counts(store, LABEL_JOB)
    assert caption(at) == (f"{counts['examples']} examples (1 from human verdicts) of 600 labels")
    (button,) = [b for b in at.download_button if b.key == "dl_label_prefs"]
    assert button.label == "Download preferences"

    at.checkbox(key="export_drop_ties").check().run()
    at.checkbox(key="export_drop_truncated").check().run()
    assert not at.exception
    strict = export.PrefFilters(drop_ties=True, drop_truncated=True)
    counts = export.labelled_prefs_counts(store, LABEL_JOB, strict)
    assert counts["skipped ties"] > 0 and counts[f"skipped {export.CUT_OFF_SKIP}"] > 0
    assert caption(at).startswith(f"{counts['examples']} examples (")
    assert exports_made == []  # three page runs, and no export was written or read
