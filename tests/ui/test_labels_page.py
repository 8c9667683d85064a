"""The Labels page through AppTest: launching pairs and label jobs, reviewing pairs with the AI
label hidden until the verdict, agreement numbers, and the preference export.

The label job is real (a tiny random model in a subprocess). The page's numbers are checked
against the engine's own functions on the same rows, and the stored verdicts against what
was clicked, mapped through the display order the page drew.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cai_engine import export, jobs, review
from cai_engine.bundled import install_bundled
from cai_engine.labels import submit_labels
from cai_engine.pairs import cut_off_sides, submit_pairs
from cai_engine.store import Store
from tests.runners import finish
from tests.ui.test_pages import md_unescape

PAGE = str(Path(__file__).resolve().parents[2] / "ui" / "app_pages" / "labels.py")
N_PROMPTS = 4  # x 2 samples -> 4 pairs


@pytest.fixture(scope="module")
def labelled_home(tmp_path_factory, tiny_spec):
    """A home with a finished tiny pairs job (4 pairs) and a finished label job on it."""
    home = tmp_path_factory.mktemp("labels") / "home"
    store = Store(home, lock_timeout=5)
    install_bundled(store)
    pairs = submit_pairs(
        store,
        {
            "prompts": "red-team:train",
            "model": tiny_spec,
            "limit": N_PROMPTS,
            "sampling": {"max_new_tokens": 8},
        },
    )
    pairs = finish(store, pairs.id)
    assert pairs.status == "succeeded", pairs.error
    label = submit_labels(
        store,
        {"pairs": pairs.id, "constitution": "harmless", "model": tiny_spec, "few_shots": 1},
    )
    label = finish(store, label.id)
    assert label.status == "succeeded", label.error
    return home, pairs.id, label.id


@pytest.fixture
def page(labelled_home, monkeypatch):
    home, _, _ = labelled_home
    monkeypatch.setenv("CAI_HOME", str(home))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at, label: str) -> str:
    """A metric's value by its label; a rate's label carries its n (`Agreement · n=3`)."""
    return next(m.value for m in at.metric if m.label.split(" · n=")[0] == label)


def metric_n(at, label: str) -> int:
    (shown,) = [m.label for m in at.metric if m.label.split(" · n=")[0] == label]
    return int(shown.split(" · n=")[1])


def test_without_label_jobs_the_page_says_how_to_make_one(seeded_store):
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.run()
    assert not at.exception
    assert any("No label jobs yet" in i.body for i in at.info)
    assert [b.label for b in at.button] == ["Start pairs job"]


def test_the_review_waits_for_a_reviewer_name(page):
    assert any("Type your name" in i.body for i in page.info)
    assert not [b for b in page.button if b.label == "A is better"]
    assert metric(page, "Reviewed") == "0 of 4"


def test_a_verdict_is_stored_about_the_responses_as_stored_and_then_the_ai_label_shows(
    page, labelled_home
):
    home, _, label_id = labelled_home
    store = Store(home)
    labels = store.labels(label_id)
    page.text_input(key="reviewer").input("ada").run()
    assert metric(page, "Reviewed") == "0 of 4"
    # What the page shows first is the first pair of the session's queue, in its display order.
    todo, _ = review.session(labels, store.reviews(label_id), "ada", "random", 4)
    row = todo[0]
    order = review.display_order(row, "ada")
    shown_first = row["response_a"] if order == "AB" else row["response_b"]
    assert shown_first in [t.value for t in page.text]
    # The AI's label is not on the page before the verdict.
    assert not [i for i in page.info if "The AI gave" in i.body]

    page.text_input(key=f"note_{label_id}_{row['prompt_id']}_{row['pair']}").input("<b>hm</b>")
    page.button(key="verdict_A").click().run()
    assert not page.exception
    (stored,) = [r for r in store.reviews(label_id) if r["reviewer"] == "ada"]
    assert (stored["prompt_id"], stored["pair"]) == (row["prompt_id"], row["pair"])
    assert stored["verdict"] == ("A" if order == "AB" else "B")
    assert stored["display_order"] == order
    assert stored["note"] == "<b>hm</b>"
    reveal = next(i.body for i in page.info if "The AI gave" in i.body)
    p_first = row["soft_label"] if order == "AB" else 1 - row["soft_label"]
    assert f"{p_first:.1%}" in reveal
    assert metric(page, "Reviewed") == "1 of 4"


def test_agreement_numbers_follow_the_verdicts(page, labelled_home):
    home, _, label_id = labelled_home
    store = Store(home)
    page.text_input(key="reviewer").input("bo").run()
    for key in ("verdict_A", "verdict_B", "verdict_tie"):
        page.button(key=key).click().run()
        assert not page.exception
    assert metric(page, "Reviewed") == "3 of 4"
    expected = review.agreement(store.labels(label_id), store.reviews(label_id))
    shown = metric(page, "Agreement with AI")
    assert shown == ("–" if expected.rate is None else f"{expected.rate:.0%}")
    assert metric(page, "Decisive verdicts") == str(expected.decisive)
    assert metric(page, "Position consistency") == f"{expected.consistency_rate:.1%}"
    # every rate says how many it rests on
    assert metric_n(page, "Agreement with AI") == metric_n(page, "Agreement") == expected.decisive
    assert metric_n(page, "Position consistency") == expected.position.pairs == N_PROMPTS
    assert metric_n(page, "First-shown wins") == 2 * N_PROMPTS
    # the position-bias evidence is stated, whatever it shows
    shown = [md_unescape(x.value) for x in [*page.caption, *page.warning]]
    (said,) = [x for x in shown if x.startswith("Position bias: ")]
    assert said.startswith(f"Position bias: {expected.position.describe()}")
    # calibration: the table says "–" for a bin without verdicts, never None
    table = next(d.value for d in page.dataframe if "confidence" in d.value.columns)
    assert "None" not in table.to_string() and table["agreement"].notna().all()
    page.button(key="verdict_skip").click().run()
    assert any("Done: you reviewed all 4 pairs" in s.body for s in page.success)


def test_re_reviewing_appends_and_keeps_the_first_verdict(labelled_home, monkeypatch):
    home, _, label_id = labelled_home
    monkeypatch.setenv("CAI_HOME", str(home))
    store = Store(home)
    for _ in range(2):  # two sessions of the same reviewer, the second with a larger queue
        at = AppTest.from_file(PAGE, default_timeout=60)
        at.run()
        at.text_input(key="reviewer").input("cy").run()
        at.selectbox(key="review_strategy").set_value("least_confident").run()
        at.number_input(key="review_size").set_value(1).run()
        if [b for b in at.button if b.label == "A is better"]:
            at.button(key="verdict_A").click().run()
    mine = [r for r in store.reviews(label_id) if r["reviewer"] == "cy"]
    assert len(mine) == 1  # the one pair of the session was done; nothing was overwritten
    store.add_review(label_id, mine[0]["prompt_id"], mine[0]["pair"], "cy", "B", "AB")
    again = [r for r in store.reviews(label_id) if r["reviewer"] == "cy"]
    assert [r["id"] for r in again][:1] == [mine[0]["id"]] and len(again) == 2


def test_the_strategies_are_offered_by_name(page):
    options = page.selectbox(key="review_strategy").options
    assert options == list(review.STRATEGIES.values())


def test_the_all_labels_table_lists_every_label_and_filters_inconsistent_ones(page, labelled_home):
    home, _, label_id = labelled_home
    labels = Store(home).labels(label_id)
    table = next(d for d in page.dataframe if "soft label" in d.value.columns)
    assert len(table.value) == len(labels)
    page.checkbox(key="labels_inconsistent").check().run()
    table = next(d for d in page.dataframe if "soft label" in d.value.columns)
    assert len(table.value) == sum(r["consistent"] is False for r in labels)


def test_the_export_download_has_trl_rows_and_a_manifest(page, labelled_home):
    home, pairs_id, label_id = labelled_home
    page.checkbox(key="export_drop_ties").check().run()
    assert not page.exception
    caption = next(c.value for c in page.caption if "from human verdicts" in c.value)
    examples, manifest = export.labelled_prefs(
        Store(home), label_id, export.PrefFilters(drop_ties=True)
    )
    assert caption.startswith(f"{len(examples)} examples")
    assert manifest["pairs_job"] == pairs_id and manifest["filters"]["drop_ties"] is True
    data = zipfile.ZipFile(io.BytesIO(export.zip_examples(examples, manifest)))
    rows = [json.loads(line) for line in data.read("data.jsonl").decode().splitlines()]
    assert {"prompt", "chosen", "rejected", "score"} <= set(rows[0])
    assert json.loads(data.read("manifest.json"))["job"] == label_id


def test_launching_pairs_then_labels_from_the_page(seeded_store, cai_home, tiny_spec):
    older = submit_pairs(
        seeded_store,
        {"prompts": "helpful", "model": tiny_spec, "limit": 1, "sampling": {"max_new_tokens": 4}},
    )
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert at.selectbox(key="label_pairs_job").value == older.id  # the only one
    at.number_input(key="pairs_limit").set_value(2)
    at.text_input(key="pairs_model").input(tiny_spec)
    at.number_input(key="pairs_max_new").set_value(8)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception
    pairs_job, _ = jobs.list_jobs(seeded_store, kind="pairs")  # newest first
    assert pairs_job.id != older.id
    assert pairs_job.config["limit"] == 2 and pairs_job.config["samples"] == 2
    # The bug: the label form kept the older pairs job picked, and its hint invited
    # labelling the wrong job. The job just started is picked.
    assert at.selectbox(key="label_pairs_job").value == pairs_job.id
    # two jobs at once on two busy cores: more time than one job's default
    pairs_job = finish(seeded_store, pairs_job.id, timeout=180)
    assert pairs_job.status == "succeeded", pairs_job.error
    assert finish(seeded_store, older.id, timeout=180).status == "succeeded"

    at.run()  # the pick is kept across runs (and the status it shows follows the job)
    box = at.selectbox(key="label_pairs_job")
    assert box.value == pairs_job.id
    assert box.options[0].startswith(f"{pairs_job.id} · succeeded · ")
    at.text_input(key="label_model").input(tiny_spec)
    at.checkbox(key="label_cot").check()
    submit = next(b for b in at.button if b.label == "Start label job")
    submit.click().run()
    assert not at.exception
    (label_job,) = jobs.list_jobs(seeded_store, kind="label")
    assert label_job.config["pairs"] == pairs_job.id and label_job.config["cot"] is True
    assert label_job.config["constitution"].startswith("harmless@")
    label_job = finish(seeded_store, label_job.id, timeout=180)
    assert label_job.status == "succeeded", label_job.error


def test_a_bad_model_spec_is_refused_with_the_form_kept(seeded_store):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    at.text_input(key="pairs_model").input("nonsense:://")
    at.button[0].click().run()
    assert any("Not started" in e.value for e in at.error)
    assert at.text_input(key="pairs_model").value == "nonsense:://"
    assert not jobs.list_jobs(seeded_store, kind="pairs")


def test_answers_cut_off_at_the_token_limit_are_marked_filtered_and_droppable(page, labelled_home):
    home, _, label_id = labelled_home
    labels = Store(home).labels(label_id)
    # 8 new tokens: the tiny model never stops on its own, so every answer is cut off
    assert all(set(cut_off_sides(r["pair_flags"])) == {"A", "B"} for r in labels)
    table = next(d.value for d in page.dataframe if "soft label" in d.value.columns)
    assert set(table["cut off"]) == {"✂A ✂B"}
    page.selectbox(key="labels_cut").set_value("not cut off").run()
    assert not [d for d in page.dataframe if "soft label" in d.value.columns and len(d.value)]
    page.selectbox(key="labels_cut").set_value("only cut off").run()
    table = next(d.value for d in page.dataframe if "soft label" in d.value.columns)
    assert len(table) == len(labels)

    # the review screen marks both answers
    page.text_input(key="reviewer").input("dee").run()
    marks = [m.value for m in page.markdown if "✂ cut off at the token limit" in m.value]
    assert len(marks) == 2

    # and the export can leave them out, saying so
    page.checkbox(key="export_drop_truncated").check().run()
    assert any(
        "Not started" in e.value or "leaves no preference pairs" in e.value for e in page.error
    )
    assert any("4 cut off at the token limit" in e.value for e in page.error)
