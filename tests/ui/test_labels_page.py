"""The Labels page through AppTest: launching pairs and label jobs, reviewing pairs with the AI
label hidden until the verdict, agreement numbers, and the preference export.

The label job is real (a tiny random model in a subprocess). The page's numbers are checked
against the engine's own functions on the same rows, and the stored verdicts against what
was clicked, mapped through the display order the page drew.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cai_engine import export, jobs, review
from cai_engine.bundled import install_bundled
from cai_engine.judge_verdict import badge
from cai_engine.labels import submit_labels
from cai_engine.pairs import cut_off_sides, submit_pairs
from cai_engine.store import Store
from tests.runners import finish
from tests.ui.row_counter import RowCounter
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


def test_the_page_names_the_judge_and_its_verdict_before_its_numbers(page, labelled_home):
    home, _, label_id = labelled_home
    check = Store(home).judge_check_for_job(label_id)
    (warning,) = [w.value for w in page.warning if "NOT qualified" in w.value]
    assert badge(check).split(":")[1].strip() in warning.replace("\\", "")
    assert "Every AI label, agreement and export on this page comes from this judge" in warning
    (how,) = [e for e in page.expander if e.label == "How the judge was checked"]
    said = " ".join(t.value for t in how.text)
    assert f"{check.correct}/{check.n} gold pairs" in said and f"checked by job {label_id}" in said


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
    assert page_caption(page) == f"Labels 1–{len(labels)} of {len(labels)}"
    assert [
        b.disabled for b in (page.button(key="labels_prev"), page.button(key="labels_next"))
    ] == [
        True,
        True,
    ]  # one page holds them all
    page.checkbox(key="labels_inconsistent").check().run()
    table = next(d for d in page.dataframe if "soft label" in d.value.columns)
    inconsistent = sum(r["consistent"] is False for r in labels)
    assert len(table.value) == inconsistent
    scope = "" if inconsistent == len(labels) else f" (filtered from {len(labels)})"
    shown = f"1–{inconsistent}" if inconsistent else "0"
    assert page_caption(page) == f"Labels {shown} of {inconsistent}{scope}"


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


# -- at real sizes: the page reads pages, never the job -------------------------------------


PAGE_CAPTION = re.compile(r"Labels (?:\d+–\d+|0) of ([\d,]+)(?: \(filtered from ([\d,]+)\))?")


def page_caption(at) -> str:
    (found,) = [c.value for c in at.caption if PAGE_CAPTION.fullmatch(c.value)]
    return found


def labels_table(at):
    (frame,) = [d for d in at.dataframe if "soft label" in d.value.columns]
    return frame.value


def test_no_query_of_the_page_returns_more_than_a_page_of_a_big_job(cai_home, monkeypatch):
    """240 labels with 80 verdicts, 25 a page: the first page, the next one, a filter, a search,
    the next pair to review, a verdict and an opened label never read more rows than a page;
    the whole-job reads (`Store.labels`, `Store.reviews`) are not used by the page."""
    from bench import synthetic

    store = Store(cai_home)
    made = synthetic.label_job(store, 240, 80, shards=3)
    job_id = made["job"]
    everything = store.labels(job_id)  # the test's own reference, before counting
    counter = RowCounter(monkeypatch, PAGE)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert page_caption(at) == "Labels 1–50 of 240"
    assert counter.most()[1] <= 50  # the default page size
    counter.calls.clear()

    at.selectbox(key="labels_page_size").set_value(25).run()
    assert len(labels_table(at)) == 25
    at.button(key="labels_next").click().run()
    assert page_caption(at) == "Labels 26–50 of 240"
    keys = sorted((r["prompt_id"], r["pair"]) for r in everything)
    assert labels_table(at)["prompt"].tolist() == [
        next(r for r in everything if (r["prompt_id"], r["pair"]) == k)["prompt_messages"][-1][
            "content"
        ]
        for k in keys[25:50]
    ]
    principle = everything[0]["principle_id"]
    at.selectbox(key="labels_principle").set_value(principle).run()  # back to page 1
    n = sum(r["principle_id"] == principle for r in everything)
    assert page_caption(at) == f"Labels 1–{min(n, 25)} of {n} (filtered from 240)"
    word = everything[3]["response_a"].split()[2]
    at.selectbox(key="labels_principle").set_value("all")
    at.text_input(key="labels_search").input(word.upper()).run()
    n = sum(word in r["response_a"] + " " + r["response_b"] for r in everything)
    assert page_caption(at).endswith(f" of {n} (filtered from 240)")

    # review: the next pair of the session, then a verdict on it
    at.text_input(key="reviewer").input("dora").run()
    assert metric(at, "Reviewed") == "0 of 20"
    todo, _ = review.session(everything, store.reviews(job_id), "dora", "random", 20)
    row = todo[0]
    order = review.display_order(row, "dora")
    shown_first = row["response_a"] if order == "AB" else row["response_b"]
    assert shown_first in [t.value for t in at.text]
    at.button(key="verdict_B").click().run()
    assert not at.exception
    assert metric(at, "Reviewed") == "1 of 20"
    agreement = review.agreement(everything, store.reviews(job_id))
    assert metric(at, "Decisive verdicts") == str(agreement.decisive)

    # an opened label: its answers, read alone
    at.session_state["labels_table"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    page, _ = store.label_page(job_id, review.LabelFilter(search=word), limit=25)
    opened = next(r for r in everything if (r["prompt_id"], r["pair"]) == (
        page[1]["prompt_id"], page[1]["pair"]
    ))  # fmt: skip
    texts = [t.value for t in at.text]
    assert opened["response_a"] in texts and opened["response_b"] in texts

    name, rows = counter.most()
    assert rows <= 25, (name, rows)
    assert not {"labels", "reviews"} & counter.names(), counter.names()


# -- contrastive pairs ------------------------------------------------------------------------


def test_contrastive_pairs_are_labelled_by_construction_and_a_judge_measured_against_it(
    seeded_store,
):
    from tests.test_contrastive import hand_built_jobs

    pairs_id, judge_id = hand_built_jobs(seeded_store)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    # the judge's label job is picked: one line says how often it agrees with the construction
    assert at.selectbox(key="label_job").value == judge_id
    (info,) = [md_unescape(i.value) for i in at.info if "construction" in i.value]
    assert info == (
        "The judge agrees with the construction on 75% [30%, 95%] of 4 contrastive pairs "
        "(Wilson 95% interval); 1 judge ties left out."
    )
    # the launch form offers labels by construction for the contrastive pairs job
    assert at.selectbox(key="label_pairs_job").value == pairs_id
    assert at.selectbox(key="label_constitution").value == "harmless"  # a judge's, at first
    at.radio(key="label_source").set_value("By construction (no model)").run()
    assert not [s for s in at.selectbox if s.key == "label_constitution"]  # no judge to brief
    at.number_input(key="label_score").set_value(0.8)
    next(b for b in at.button if b.label == "Start label job").click().run()
    assert not at.exception, at.exception
    made = [j for j in jobs.list_jobs(seeded_store, kind="label") if j.id != judge_id]
    (job,) = made
    assert (job.config["source"], job.config["score"]) == ("construction", 0.8)
    job = finish(seeded_store, job.id)
    assert job.status == "succeeded", job.error
    rows = seeded_store.labels(job.id)
    assert [r["winner"] for r in rows] == ["A", "A", "B", "B", "A"]  # the pairs' preferred sides
    assert {r["label_source"] for r in rows} == {"contrastive"}
    # picked, it says how it was labelled
    at.selectbox(key="label_job").set_value(job.id).run()
    assert any("Labelled by construction" in md_unescape(c.value) for c in at.caption)
    assert at.selectbox(key="label_job").options[0].endswith("by construction")


def test_contrastive_pairs_are_launched_from_the_page_with_their_constitution_pinned(
    seeded_store, tiny_spec
):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    at.radio(key="pairs_source").set_value("Contrastive (RLCD)").run()
    assert at.number_input(key="pairs_samples").disabled  # a positive and a negative answer
    assert at.selectbox(key="pairs_constitution").value == "harmless"
    at.number_input(key="pairs_limit").set_value(1)
    at.text_input(key="pairs_model").input(tiny_spec)
    next(b for b in at.button if b.label == "Start pairs job").click().run()
    assert not at.exception, at.exception
    (job,) = jobs.list_jobs(seeded_store, kind="pairs")
    assert (job.config["contrastive"], job.config["samples"], job.config["limit"]) == (True, 2, 1)
    assert job.config["constitution"] == seeded_store.get_version("harmless").pinned
    assert any("label its pairs by construction" in md_unescape(s.value) for s in at.success)
