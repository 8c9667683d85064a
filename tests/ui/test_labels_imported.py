"""The Labels page with imported pairs (`cai import`): the dataset's labels are listed, say
where they came from in words, can be reviewed; a judge on the same pairs shows its agreement
with the dataset."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from cai_engine.external_pairs import import_pairs
from tests.test_external_pairs import FIXTURES, judge_labels, label_job_of
from tests.ui.test_pages import md_unescape

PAGE = str(Path(__file__).resolve().parents[2] / "ui" / "app_pages" / "labels.py")


def infos(at) -> list[str]:
    return [md_unescape(i.value) for i in at.info]


def test_imported_pairs_and_their_labels_show_with_their_lineage(seeded_store):
    result = import_pairs(seeded_store, FIXTURES / "hh.jsonl", "hh", "hh-page")
    dataset_job = label_job_of(result)
    judge_job = judge_labels(seeded_store, result.pairs_job, prefer_longer=True)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    # the newest label job, the judge's, is picked: its pairs' origin and its agreement
    assert at.selectbox(key="label_job").value == judge_job
    shown = infos(at)
    assert any(
        f"Its pairs (pairs job {result.pairs_job}, prompt set 'hh-page') were imported from "
        f"{FIXTURES / 'hh.jsonl'} (HH-RLHF transcripts, 4 rows, sha256 {result.sha256[:12]}) on "
        in s
        for s in shown
    ), shown
    assert (
        "The judge agrees with the dataset's label on 100% [51%, 100%] of 4 imported pairs "
        "(Wilson 95% interval)." in shown
    )
    # the dataset's own label job: listed as imported labels, its lineage in words, no judge
    options = at.selectbox(key="label_job").options
    assert any(
        o.startswith(dataset_job) and o.endswith("imported labels (hh-page)") for o in options
    )
    at.selectbox(key="label_job").set_value(dataset_job).run()
    assert not at.exception, [e.value for e in at.exception]
    (lineage,) = [s for s in infos(at) if s.startswith("The labels of the dataset")]
    assert f"imported from {FIXTURES / 'hh.jsonl'} (HH-RLHF transcripts, 4 rows" in lineage
    assert lineage.endswith("No model was asked.")
    assert not [w for w in at.warning if "qualified" in w.value]  # no judge to qualify
    assert [m.label for m in at.metric][1] == "Agreement with the dataset · n=0"
    # its pairs can be reviewed: no principle, and the dataset's label shows after the verdict
    at.text_input(key="reviewer").input("ada").run()
    assert any("no principle was drawn" in md_unescape(m.value) for m in at.markdown)
    at.button(key="verdict_A").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(i.startswith("You said") and "The dataset gave" in i for i in infos(at))
    (review,) = seeded_store.reviews(dataset_job)
    assert review["reviewer"] == "ada"
