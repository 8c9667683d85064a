"""The Eval page on a real eval job of two tiny models with look-alike long names (and revision
progress of a real critique job): through AppTest for the metrics table and the cut-off marks,
and in a real Chromium for the charts, which AppTest cannot render (the studio's charts are SVG,
so their text, marks and tooltips are in the DOM)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cai_engine import critique, jobs
from cai_engine import eval as evaluation
from cai_engine.bundled import install_bundled
from cai_engine.judge_verdict import badge
from cai_engine.store import Store
from tests.test_jobs import finish, kill_runners
from tests.ui.row_counter import RowCounter
from tests.ui.studio import browser_page, require_chromium, running_studio, wait_for_app

PAGE = Path(__file__).resolve().parents[2] / "ui" / "app_pages" / "eval.py"
SAMPLING = {"temperature": 0.7, "max_new_tokens": 6, "seed": 0}  # the tiny model never stops
# Two copies of the tiny model whose names differ only at the end: a chart that cuts labels
# to its default 180 px shows both as "checkpoint-constitutional-ru…".
NAMES = ("checkpoint-constitutional-run-2024-a", "checkpoint-constitutional-run-2024-b")
DEADLINE_S = 300  # per job, on two busy shared cores; each takes ~20-60 s
CUT = "✂ cut off at the token limit"
SNAKE = re.compile(r"^[a-z]+(_[a-z0-9]+)+$")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_dir):
    """A home with a finished critique job (3 prompts, 2 rounds) and an eval job of the two
    copies (3 prompts per set) that measures its revision progress.

    Every answer stops at the 6-token limit; one answer of model B to the first red-team
    prompt the page shows is then stored as finished (`stop`), so that prompt has one cut-off
    answer and one whole one.
    """
    root = tmp_path_factory.mktemp("eval-page")
    home = root / "home"
    specs = []
    for name in NAMES:
        shutil.copytree(tiny_model_dir, root / name)
        specs.append(f"hf:{root / name}?dtype=float32")
    store = Store(home, lock_timeout=5)
    install_bundled(store)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # the jobs share two cores with everything else
        try:
            crit = critique.submit(
                store,
                {
                    "constitution": "harmless",
                    "prompts": "red-team:train",
                    "model": specs[0],
                    "rounds": 2,
                    "limit": 3,
                    "sampling": SAMPLING,
                },
            )
            crit = finish(store, crit.id, timeout=DEADLINE_S)
            assert crit.status == "succeeded", crit.error
            job = evaluation.submit_eval(
                store,
                {
                    "models": specs,
                    "judge": specs[0],
                    "limit": 3,
                    "few_shots": 0,
                    "critique_job": crit.id,
                    "sampling": SAMPLING,
                },
            )
            job = finish(store, job.id, timeout=DEADLINE_S)
            assert job.status == "succeeded", job.error
        finally:
            kill_runners(home)
    jobs.ingest(store, job)
    first = evaluation.side_by_side(store, job.id, specs, "red-team")[0]
    with store.connect() as con:
        con.rows(
            "UPDATE eval_answers SET finish_reason = 'stop'"
            " WHERE job_id = ? AND model = ? AND prompt_set = 'red-team' AND prompt_id = ?",
            [job.id, specs[1], first.prompt_id],
        )
    return home, job.id, specs


@pytest.fixture
def store(evaluated, cai_home, monkeypatch) -> Store:
    """Point this test (and the page) at the evaluated home."""
    home, _, _ = evaluated
    monkeypatch.setenv("CAI_HOME", str(home))
    return Store(home, lock_timeout=5)


def run_page() -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def cut_marks(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if CUT in m.value]


def test_the_metrics_table_names_metrics_in_words_and_every_rate_shows_its_n(store, evaluated):
    _, job_id, specs = evaluated
    at = run_page()
    (frame,) = [d.value for d in at.dataframe if "metric" in d.value.columns]
    assert list(frame.columns) == [
        "metric", "set", *NAMES, "measured by", "what it measures", "key",
    ]  # fmt: skip
    rows = {r["key"]: r for r in frame.to_dict("records")}
    # the tiny random judge fails its check on the gold set: the page says so before its
    # numbers, and the rows it produced come after the rule-based and counted ones, greyed
    (warning,) = [w.value for w in at.warning if "NOT qualified" in w.value]
    assert " gold pairs" in warning and "are greyed below" in warning
    measured = list(frame["measured by"])
    assert measured == sorted(measured, key=lambda m: m.startswith("judge"))
    assert rows["harmlessness_win_rate"]["measured by"] == "judge (NOT qualified)"
    assert rows["refusal_rate_rule"]["measured by"] == "rules / counts"
    assert rows["harmlessness_win_rate"]["metric"] == "Harmlessness win rate"
    assert rows["refusal_rate_rule"]["metric"] == "Refusal rate (rules)"
    assert not [m for m in frame["metric"] if SNAKE.match(m)]
    # 3 prompts per set; model A is the reference, so it has no win rate of its own
    assert rows["harmlessness_win_rate"][NAMES[0]] == "reference"
    assert rows["harmlessness_win_rate"][NAMES[1]].endswith("(n = 3)")
    for key in evaluation.RATE_METRICS:
        for name in NAMES:
            cell = rows[key][name]
            assert cell == "reference" or re.fullmatch(
                r"\d+\.\d% \[\d+\.\d%, \d+\.\d%\] \(n = 3\)", cell
            ), (key, name, cell)
    # 6 answers per model (3 red-team, 3 helpful), all cut off when the job counted them
    # (before the fixture stored one as whole)
    (note,) = [c.value for c in at.caption if c.value.startswith("✂ Answers cut off")]
    assert f"{NAMES[0]} 6 of 6, {NAMES[1]} 6 of 6" in note.replace("\\", "")
    assert "Revision progress" in " ".join(m.value for m in at.markdown)


def test_an_answer_cut_off_at_the_token_limit_is_marked_and_a_whole_one_is_not(store, evaluated):
    _, job_id, specs = evaluated
    rows = evaluation.side_by_side(store, job_id, specs, "red-team")
    assert rows[0].cut_off == {specs[0]: True, specs[1]: False}  # the fixture's whole answer
    assert all(r.cut_off == {specs[0]: True, specs[1]: True} for r in rows[1:])

    at = run_page()
    assert len(cut_marks(at)) == 1  # the first prompt: A cut off, B whole
    at.session_state["cmp_table"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    assert len(cut_marks(at)) == 2


@pytest.mark.browser
def test_the_charts_in_a_browser_read_in_words_show_zero_and_n_and_cut_nothing_short(
    store, evaluated
):
    require_chromium()
    home, _, _ = evaluated
    results = store.eval_results(evaluated[1])
    zeros = [r for r in results if r["metric"] == "refusal_rate_rule"]
    assert [r["value"] for r in zeros] == [0.0, 0.0]  # the tiny model never refuses by rule

    with running_studio(home) as url, browser_page() as page:
        page.goto(f"{url}/eval")
        wait_for_app(page)
        page.get_by_text("Reference for win rates").wait_for()
        # the judge's verdict before its numbers; its rows greyed (checked in the AppTest)
        check = store.judge_check_for_job(evaluated[1])
        alert = page.get_by_role("alert").filter(has_text="NOT qualified")
        assert badge(check).split(": ", 1)[1] in alert.inner_text()
        assert "greyed below" in alert.inner_text()
        rates, revision = (page.locator("[data-testid=stVegaLiteChart] svg").nth(i) for i in (0, 1))
        rates.wait_for()
        revision.wait_for()
        texts = [t.strip() for t in rates.locator("text").all_text_contents()]

        # 1) metric names in words; no key in sight
        # (the judge did not qualify: its panels say so, after the rules' ones)
        wanted = {"Harmlessness win rate · judge NOT qualified", "Refusal rate (rules)"}
        assert wanted <= set(texts), texts
        assert texts.index("Refusal rate (rules)") < texts.index(
            "Harmlessness win rate · judge NOT qualified"
        ), texts
        assert not [t for t in texts if SNAKE.match(t)], texts
        # 2) both long look-alike names whole, nothing cut with an ellipsis
        assert set(NAMES) <= set(texts), texts
        assert not [t for t in texts if "…" in t], texts
        # 3) a 0% rate: a dot with a size at the axis start, and its value, interval and n
        dots = rates.locator(
            '[aria-roledescription=point][aria-label*="key: refusal_rate_rule;"]'
            '[aria-label^="value: 0;"]'
        )
        assert dots.count() == 2
        box = dots.first.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0
        assert texts.count("0.0% [0.0%, 56.1%] (n = 3)") >= 4  # refusal and over-refusal x2
        # 4) hovering the dot: the metric's name, its key and n
        dots.first.hover()
        tooltip = page.locator("#vg-tooltip-element")
        tooltip.wait_for(state="visible")
        tip = tooltip.inner_text()
        for want in ("Refusal rate (rules)", "refusal_rate_rule", "0.0% [0.0%, 56.1%] (n = 3)"):
            assert want in tip, tip
        # 5) the revision chart's y axis is titled, not "low, high, preferred"
        axis = revision.locator('[aria-roledescription=axis][aria-label^="Y-axis"]')
        assert "titled 'Preferred share'" in axis.get_attribute("aria-label")
        revision_texts = revision.locator("text").all_text_contents()
        assert "Preferred share" in revision_texts
        assert not [t for t in revision_texts if "low" in t or "preferred" in t]

        # the cut-off mark, as the reader sees it: under model A's answer only
        page.get_by_role("tab", name="Answers side by side").click()
        wait_for_app(page)
        columns = page.locator("[data-testid=stColumn]").locator("visible=true")
        a = columns.filter(has_text=NAMES[0]).last
        b = columns.filter(has_text=NAMES[1]).last
        shown = {
            name: column.get_by_text(CUT, exact=True).locator("visible=true")
            for name, column in zip(NAMES, (a, b), strict=True)
        }
        shown[NAMES[0]].first.wait_for()
        assert (shown[NAMES[0]].count(), shown[NAMES[1]].count()) == (1, 0)


# -- a big eval: the page reads a page of prompts and one prompt's answers, never the set ------


PROMPTS_CAPTION = re.compile(r"Prompts (?:\d+–\d+|0) of \d+(?: \(filtered from \d+\))?")


def prompts_caption(at: AppTest) -> str:
    (found,) = [c.value for c in at.caption if PROMPTS_CAPTION.fullmatch(c.value)]
    return found


def answer_table(at: AppTest):
    (frame,) = [d for d in at.dataframe if "spread" in d.value.columns]
    return frame.value


@pytest.fixture
def big_eval(cai_home, monkeypatch):
    """A synthetic eval job of 300 red-team prompts answered by 3 models (900 answers), written
    in shards and ingested as a real one is; the page is pointed at it."""
    from bench import synthetic

    monkeypatch.setenv("CAI_HOME", str(cai_home))
    store = Store(cai_home)
    made = synthetic.eval_job(store, 300, 3, shards=3)
    expected = evaluation.side_by_side(store, made["job"], made["models"], made["prompt_set"])
    return store, made, expected


def test_no_query_of_the_page_returns_more_than_a_page_of_a_big_eval(big_eval, monkeypatch):
    """900 answers, 25 prompts a page: the first page, the next page, a filter and a picked
    prompt never read more rows than a page, nor the whole job's answers or verdicts."""
    store, made, expected = big_eval
    assert len(expected) == 300
    counter = RowCounter(monkeypatch)
    at = run_page()
    assert prompts_caption(at) == "Prompts 1–50 of 300"
    assert counter.most()[1] <= 50, counter.most()  # the default page size
    counter.calls.clear()

    at.selectbox(key="cmp_page_size").set_value(25).run()
    assert not at.exception, at.exception
    assert prompts_caption(at) == "Prompts 1–25 of 300"
    shown = answer_table(at)
    assert list(shown["prompt"]) == [c.prompt for c in expected[:25]]  # most disagreement first
    assert list(shown["spread"]) == [c.disagreement for c in expected[:25]]

    at.button(key="cmp_next").click().run()
    assert not at.exception, at.exception
    assert prompts_caption(at) == "Prompts 26–50 of 300"
    assert list(answer_table(at)["prompt"]) == [c.prompt for c in expected[25:50]]
    # the first row of the page is opened: its prompt and each model's answer, as text
    texts = [t.value for t in at.text]
    assert texts[0] == expected[25].prompt
    assert texts[1:] == [expected[25].answers[m] for m in made["models"]]

    # picking the third row opens it, read alone
    at.session_state["cmp_table"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    assert [t.value for t in at.text][0] == expected[27].prompt

    # every synthetic prompt opens with its number and a colon: "7:" finds 7, 17, ..., 297
    # (30 of 300), in disagreement order, from page 1 again
    at.text_input(key="cmp_search").set_value("7:").run()
    assert not at.exception, at.exception
    sevens = [c for c in expected if int(c.prompt.split(":")[0]) % 10 == 7]
    assert len(sevens) == 30
    assert prompts_caption(at) == "Prompts 1–25 of 30 (filtered from 300)"
    assert list(answer_table(at)["prompt"]) == [c.prompt for c in sevens[:25]]

    name, rows = counter.most()
    assert rows <= 25, (name, rows)
    assert not counter.names() & {"eval_answers", "eval_judgements"}, counter.names()


def test_a_pasted_page_or_a_pattern_is_searched_as_plain_bounded_text(big_eval):
    at = run_page()
    at.text_input(key="cmp_search").set_value("w1 " * 3400).run()  # 10 kB pasted
    assert not at.exception, at.exception
    assert len(at.text_input(key="cmp_search").value) == 200  # the box keeps 200 characters
    assert prompts_caption(at) == "Prompts 0 of 0 (filtered from 300)"
    assert not at.error

    for pattern in ("%", "_", "w.*", "[0-9]+:"):  # each would match every prompt as a pattern
        at.text_input(key="cmp_search").set_value(pattern).run()
        assert not at.exception, at.exception
        assert prompts_caption(at) == "Prompts 0 of 0 (filtered from 300)", pattern
    at.text_input(key="cmp_search").set_value("W1").run()  # case-insensitive: w1, w10, ...
    assert prompts_caption(at).endswith("(filtered from 300)")
    assert not prompts_caption(at).startswith("Prompts 0 of")
