"""The Traces page through AppTest: launching critique jobs, then reading, filtering and
exporting their traces.

Jobs run for real as subprocesses. Most run the session's tiny random model, whose text is
gibberish, so those checks compare the page with the engine's own views of the same rows
(`traces.group_traces`, `filter_traces`, `principle_stats`). Where the exact text matters,
the model is the fake OpenAI server (tests/fake_openai.py): it answers "answer to: <the last
user message>", so every step's text can be written out by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cai_engine import critique, jobs, traces
from cai_engine.bundled import install_bundled
from cai_engine.constitution import Constitution
from cai_engine.models import parse_spec
from cai_engine.prompts import import_prompt_set
from cai_engine.store import Store
from tests.fake_openai import BAD_REQUEST_MESSAGE, FakeOpenAI
from tests.test_jobs import finish, kill_runners
from tests.ui.pickers import version_box, version_seqs
from tests.ui.row_counter import RowCounter
from tests.ui.test_pages import PAYLOAD, UNESCAPED, markdown_strings, md_unescape

PAGE = Path(__file__).resolve().parents[2] / "ui" / "app_pages" / "traces.py"
NO_JOBS = "No critique jobs yet. Start one above, or with `cai critique`."
DOWNLOADS = ["SFT (final revisions)", "SFT (every round)", "Preferences (revision vs initial)"]


@pytest.fixture(scope="module")
def finished_home(tmp_path_factory, tiny_spec):
    """A home with one finished tiny-model critique job: 4 red-team train prompts, 2 rounds.

    Shared by the tests that only read it, so the model loads once for all of them.
    """
    home = tmp_path_factory.mktemp("traces") / "home"
    store = Store(home, lock_timeout=5)
    install_bundled(store)
    job = critique.submit(
        store,
        {
            "constitution": "harmless",
            "prompts": "red-team:train",
            "model": tiny_spec,
            "rounds": 2,
            "limit": 4,
            "sampling": {"max_new_tokens": 8, "seed": 0},
        },
    )
    try:
        job = finish(store, job.id)
        assert job.status == "succeeded", job.error
        yield home, job.id
    finally:
        kill_runners(home)


@pytest.fixture
def finished(finished_home, cai_home, monkeypatch):
    """Point this test (and the page) at the shared home; returns (store, job id, traces)."""
    home, job_id = finished_home
    monkeypatch.setenv("CAI_HOME", str(home))
    store = Store(home, lock_timeout=5)
    return store, job_id, traces.group_traces(store.traces(job_id))


@pytest.fixture
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


def run_page() -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def fill_form(at: AppTest, **values) -> None:
    """Set the launch form's widgets by key suffix: `fill_form(at, limit=2)` sets `crit_limit`."""
    if "constitution" in values:  # the versions offered follow the constitution picked
        at.selectbox(key="crit_constitution").set_value(values.pop("constitution"))
        rerun(at)
    if "version" in values:
        version_box(at, "crit").set_value(values.pop("version"))
    kinds = {  # read after any rerun: each run makes a new element tree
        "prompts": at.selectbox,
        "split": at.selectbox,
        "model": at.text_input,
    }
    for name, value in values.items():
        widgets = kinds.get(name, at.number_input)
        widgets(key=f"crit_{name}").set_value(value)


def submit_form(at: AppTest) -> AppTest:
    (button,) = [b for b in at.button if b.label == "Start critique job"]
    button.click()
    return rerun(at)


def launch_expander(at: AppTest):
    (expander,) = [e for e in at.expander if e.label == "New critique job"]
    return expander


PAGE_CAPTION = re.compile(r"Traces (?:\d+–\d+|0) of (\d+)(?: \(filtered from (\d+)\))?")


def count_caption(at: AppTest) -> str:
    """The table's caption, "Traces 1–50 of 120 (filtered from 400)", as "120 of 400 traces"."""
    (found,) = [m for c in at.caption if (m := PAGE_CAPTION.fullmatch(c.value))]
    matching, total = found[1], found[2] or found[1]
    return f"{matching} of {total} traces"


def table(at: AppTest) -> pd.DataFrame:
    (frame,) = [d for d in at.dataframe if d.key == "trace_table"]
    return frame.value


def step_headings(at: AppTest) -> list[str]:
    """The bold step titles of the trace view, in order."""
    return [
        re.match(r"\*\*(.+?)\*\*", m.value).group(1)
        for m in at.markdown
        if re.match(r"\*\*(Initial answer|Round \d+ · (critique|revision))\*\*", m.value)
    ]


def trace_texts(at: AppTest) -> list[str]:
    """What the page shows with `st.text`: the prompt's turns, then the steps shown as text."""
    return [t.value for t in at.text]


def successes(at: AppTest) -> list[str]:
    return [md_unescape(s.value) for s in at.success]


def tokens_rate(job: jobs.Job) -> str:
    """The progress text's rate suffix, as the page computes it from the same job."""
    return f" · {job.tokens / job.elapsed:.0f} tokens/s" if job.elapsed and job.tokens else ""


# -- launching ------------------------------------------------------------------------------


def test_with_no_critique_jobs_the_form_is_open_and_the_page_says_so(store):
    at = run_page()
    assert launch_expander(at).proto.expanded is True
    assert [i.value for i in at.info] == [NO_JOBS]
    assert at.selectbox(key="crit_constitution").options == ["default", "harmless"]
    assert at.selectbox(key="crit_constitution").value == "harmless"
    assert at.selectbox(key="crit_prompts").value == "red-team"  # preferred when present
    assert at.text_input(key="crit_model").value == "smollm2-135m-instruct"
    assert "trace_job" not in [s.key for s in at.selectbox]
    assert len(at.download_button) == 0


def test_submitting_the_form_starts_a_pinned_job_selects_it_and_shows_its_traces(store, tiny_spec):
    at = run_page()
    fill_form(
        at,
        constitution="harmless",
        version=1,
        prompts="red-team",
        split="train",
        rounds=1,
        limit=2,
        seed=3,
        few_shots=1,
        model=tiny_spec,
        max_new=8,
    )
    submit_form(at)

    (row,) = store.job_rows()
    job = jobs.get_job(store, row[0])
    harmless = store.get_version("harmless@1")
    assert job.kind == "critique"
    assert re.fullmatch(r"harmless@[0-9a-f]{12}", job.config["constitution"])
    assert job.config["constitution"] == f"harmless@{harmless.hash[:12]}"
    assert job.config["prompts"] == "red-team:train"
    assert job.config["model"] == str(parse_spec(tiny_spec))
    assert (job.config["rounds"], job.config["limit"]) == (1, 2)
    assert (job.config["seed"], job.config["few_shots"]) == (3, 1)
    assert job.config["sampling"]["max_new_tokens"] == 8
    assert job.config["sampling"]["seed"] == 3
    assert successes(at) == [f"Started {job.id}."]
    assert at.selectbox(key="trace_job").value == job.id
    assert launch_expander(at).proto.expanded is False  # there is a job to look at now
    at.run()  # as the page reruns itself when the job moves on from queued
    assert successes(at) == [f"Started {job.id}."]  # the confirmation stays a while

    job = finish(store, job.id)
    assert job.status == "succeeded", job.error
    rerun(at)

    # 2 prompts x 1 sample, each: initial, round 1 critique, round 1 revision = 6 steps.
    assert [p.text for p in at.progress] == [f"succeeded: 6/6 steps{tokens_rate(job)}"]
    assert count_caption(at) == "2 of 2 traces"
    first_two = store.get_prompts("red-team", split="train", limit=2)  # ordered by prompt_id
    assert list(table(at)["prompt"]) == [p.messages[-1]["content"] for p in first_two]
    assert list(table(at)["rounds"]) == [1, 1]
    # The first trace is shown: its prompt, then its three steps.
    assert trace_texts(at)[0] == first_two[0].messages[-1]["content"]
    assert step_headings(at) == ["Initial answer", "Round 1 · critique", "Round 1 · revision"]
    assert [b.label for b in at.download_button] == DOWNLOADS


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ("nope", "unknown model spec 'nope'"),
        ("hf:x?colour=red", "invalid model spec 'hf:x?colour=red': unknown option 'colour'"),
    ],
)
def test_a_bad_model_spec_shows_an_error_and_starts_nothing(store, model, problem):
    at = run_page()
    fill_form(at, limit=2, model=model)
    submit_form(at)

    (error,) = [md_unescape(e.value) for e in at.error]
    assert error.startswith(f"Not started: {problem}"), error
    assert store.job_rows() == []
    assert [i.value for i in at.info] == [NO_JOBS]
    assert at.text_input(key="crit_model").value == model  # nothing the user typed is lost
    assert at.number_input(key="crit_limit").value == 2


def test_a_prompt_split_with_nothing_in_it_starts_nothing(store):
    import_prompt_set(store, ("one.jsonl", b'{"prompt": "Hello.", "split": "train"}\n'), "one")
    at = run_page()
    fill_form(at, prompts="one", split="test", model="hf:whatever")
    submit_form(at)

    assert [md_unescape(e.value) for e in at.error] == [
        "Not started: prompt set 'one:test' is empty after filtering; nothing to do"
    ]
    assert store.job_rows() == []


# -- reading a finished job -----------------------------------------------------------------


def pick(at: AppTest, **filters) -> AppTest:
    """Set the trace filters (principle, round, category, search) and rerun."""
    for name, value in filters.items():
        if name == "search":
            at.text_input(key="trace_search").input(value)
        else:
            at.selectbox(key=f"trace_{name}").select(value)
    return rerun(at)


def test_filters_change_the_count_as_filter_traces_predicts(finished):
    store, job_id, all_traces = finished
    at = run_page()
    assert at.selectbox(key="trace_job").value == job_id
    assert count_caption(at) == "4 of 4 traces"
    assert list(table(at)["prompt"]) == [t.prompt_text for t in all_traces]
    assert list(table(at)["rounds"]) == [2, 2, 2, 2]
    assert at.selectbox(key="trace_round").options == ["all", "1", "2"]

    # The principle drawn by the fewest traces, so the filter has something to drop.
    drawn = sorted({p for t in all_traces for p in t.principles})
    assert at.selectbox(key="trace_principle").options == ["all", *drawn]
    rarest = min(drawn, key=lambda p: len(traces.filter_traces(all_traces, principle=p)))
    expected = traces.filter_traces(all_traces, principle=rarest)
    assert 1 <= len(expected) < 4
    pick(at, principle=rarest)
    assert count_caption(at) == f"{len(expected)} of 4 traces"
    assert list(table(at)["prompt"]) == [t.prompt_text for t in expected]

    # That principle in round 1 only.
    expected = traces.filter_traces(all_traces, principle=rarest, round_=1)
    pick(at, round=1)
    assert count_caption(at) == f"{len(expected)} of 4 traces"

    # The first four red-team train prompts are in four categories (theft, cybercrime,
    # privacy-doxxing, weapons), so one category leaves 1 trace.
    pick(at, principle="all", round="all", category=all_traces[1].category)
    assert traces.filter_traces(all_traces, category=all_traces[1].category) == [all_traces[1]]
    assert count_caption(at) == "1 of 4 traces"
    assert list(table(at)["prompt"]) == [all_traces[1].prompt_text]
    assert trace_texts(at)[0] == all_traces[1].prompt_text  # the only one is shown

    # Search matches the prompt or any step, case-insensitively.
    word = max(all_traces[2].prompt_text.split(), key=len).upper()
    expected = traces.filter_traces(all_traces, search=word)
    assert all_traces[2] in expected
    pick(at, category="all", search=word)
    assert count_caption(at) == f"{len(expected)} of 4 traces"

    pick(at, search="no trace says this: qzxv")
    assert count_caption(at) == "0 of 4 traces"
    assert len(table(at)) == 0
    assert step_headings(at) == [] and "Trace" not in [h.value for h in at.subheader]


def test_picking_a_row_shows_that_trace(finished):
    store, job_id, all_traces = finished
    at = run_page()
    at.session_state["trace_table"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    rerun(at)
    third = all_traces[2]
    assert trace_texts(at)[0] == third.prompt_text
    # 2 rounds: initial, then critique and revision of each round.
    assert step_headings(at) == [
        "Initial answer",
        "Round 1 · critique",
        "Round 1 · revision",
        "Round 2 · critique",
        "Round 2 · revision",
    ]
    critiques = [m.value for m in at.markdown if m.value.startswith("**Round")]
    assert critiques[0].endswith(f"principle `{third.principles[0]}`")
    assert critiques[2].endswith(f"principle `{third.principles[1]}`")


def test_per_principle_statistics_match_the_engine(finished):
    store, job_id, all_traces = finished
    at = run_page()
    # Streamlit keeps a dataframe's key only when it has a selection, so find it by columns.
    (stats,) = [d for d in at.dataframe if "drawn" in d.value.columns]
    expected = pd.DataFrame(traces.principle_stats(all_traces))
    pd.testing.assert_frame_equal(stats.value, expected, check_dtype=False)
    # 4 traces x 2 rounds = 8 draws, 8 revisions.
    assert stats.value["drawn"].sum() == 8
    assert stats.value["revisions"].sum() == 8


def test_a_finished_job_offers_three_downloads(finished):
    store, job_id, _ = finished
    at = run_page()
    assert [b.label for b in at.download_button] == DOWNLOADS
    assert not [c.value for c in at.caption if c.value.startswith("Nothing to export")]


# -- failures and model text ----------------------------------------------------------------


def test_a_failed_job_shows_its_error_and_has_nothing_to_export(store, fake):
    install_bundled(store)
    fake.then = "400"
    job = critique.submit(
        store,
        {
            "constitution": "default",
            "prompts": "helpful:train",
            "model": fake.spec(retries=0),
            "limit": 1,
            "rounds": 1,
        },
    )
    job = finish(store, job.id)
    assert job.status == "failed"
    assert BAD_REQUEST_MESSAGE in job.error

    at = run_page()
    assert [md_unescape(e.value) for e in at.error] == [job.error]
    assert [c.value for c in at.caption if "No steps finished yet" in c.value] == [
        "No steps finished yet; they appear here as the job writes them."
    ]
    assert len(at.download_button) == 0
    nothing = [md_unescape(c.value) for c in at.caption if c.value.startswith("Nothing")]
    assert nothing == [f"Nothing to export yet: critique job {job.id} has no traces yet (failed)"]


def test_model_text_is_shown_as_text_not_markup(store, fake):
    """The fake server echoes the last user turn, so markup in the prompt and in the
    constitution's requests comes back as model text in every step."""
    install_bundled(store)
    markup = Constitution(
        name="markup",
        principles=[
            {
                "id": "plain",
                "title": "Plain",
                "critique_request": f"Critique {PAYLOAD}",
                "revision_request": f"Say {PAYLOAD} again",
                "preference_question": "Which is plainer?",
            }
        ],
    )
    store.save_constitution(markup)
    prompt = json.dumps({"prompt": f"Say {PAYLOAD} please", "id": "p1"}) + "\n"
    import_prompt_set(store, ("markup.jsonl", prompt.encode()), "markup")
    job = critique.submit(
        store,
        {"constitution": "markup", "prompts": "markup", "model": fake.spec(), "rounds": 1},
    )
    assert finish(store, job.id).status == "succeeded"

    at = run_page()
    initial = f"answer to: Say {PAYLOAD} please"
    critique_text = f"answer to: Critique {PAYLOAD}"
    # The prompt turn, the initial answer and the critique are plain text, byte for byte.
    assert trace_texts(at) == [f"Say {PAYLOAD} please", initial, critique_text]
    assert list(table(at)["final answer"]) == [f"answer to: Say {PAYLOAD} again"]

    # The revision differs from the initial answer in its last word only, so it is shown as
    # a word diff in markdown. Words: answer, to:, Say, <script>alert(1)</script>, <img,
    # src=x, onerror=alert(1)>, **bold**, please|again = 9 a side, 8 equal: ratio
    # 2*8/18 = 0.889, so 1 - 0.889 = 11% of words changed.
    # Equal words are escaped; the changed ones are struck through or highlighted.
    assert PAYLOAD == "<script>alert(1)</script> <img src=x onerror=alert(1)> **bold**"
    diff = (
        r"answer to\: Say \<script\>alert\(1\)\</script\> \<img src\=x onerror\=alert\(1\)\>"
        r" \*\*bold\*\* :red-background[~~please~~] :green-background[again]"
    )
    assert diff in [m.value for m in at.markdown]
    assert "11% of words changed (red: removed, green: added)" in [c.value for c in at.caption]
    assert [s for s in markdown_strings(at) if UNESCAPED.search(s)] == []


# -- known bugs -----------------------------------------------------------------------------


def test_the_version_picked_is_the_newest_of_the_constitution_picked(seeded_store, tiny_spec):
    store = seeded_store
    harmless = store.get_version("harmless@1")
    retitled = harmless.constitution.model_copy(update={"description": "Harmless, v2."})
    v2, created = store.save_constitution(retitled, parent_hash=harmless.hash, note="v2")
    assert created and v2.seq == 2
    at = run_page()
    assert at.selectbox(key="crit_constitution").value == "harmless"  # made for red-team prompts
    assert version_seqs(at, "crit") == [2, 1]  # newest first, and picked
    assert version_box(at, "crit").value == 2
    assert version_box(at, "crit").options[0].startswith("harmless@2 · ")
    assert version_box(at, "crit").options[0].endswith(f" · v2 · {v2.short_hash}")

    at.selectbox(key="crit_constitution").select("default")
    rerun(at)  # what a browser does when a selectbox changes (a form holds it back)
    assert version_seqs(at, "crit") == [1]
    version_box(at, "crit").set_value(1)
    at.selectbox(key="crit_constitution").select("harmless")
    rerun(at)
    # The bug: the version stayed at 1 (left over from `default`), and the job ran on
    # harmless@1 instead of the version just saved.
    assert version_box(at, "crit").value == 2
    fill_form(at, limit=1, model=tiny_spec, max_new=8)
    submit_form(at)
    (row,) = store.job_rows()
    assert jobs.get_job(store, row[0]).config["constitution"] == f"harmless@{v2.hash[:12]}"


def _import_and_run(store, fake, set_name: str, lines: list[dict], **config) -> jobs.Job:
    body = "".join(json.dumps(x) + "\n" for x in lines).encode()
    import_prompt_set(store, (f"{set_name}.jsonl", body), set_name)
    job = critique.submit(
        store,
        {"constitution": "default", "prompts": set_name, "model": fake.spec(retries=0), **config},
    )
    return finish(store, job.id)


def test_a_prompt_set_with_some_uncategorised_prompts_shows_its_traces(store, fake):
    install_bundled(store)
    prompts = [
        {"prompt": "Plan a picnic.", "category": "how-to", "id": "a"},
        {"prompt": "Name a cat.", "id": "b"},
    ]
    job = _import_and_run(store, fake, "mixed", prompts, rounds=1)
    assert job.status == "succeeded", job.error

    at = run_page()
    assert count_caption(at) == "2 of 2 traces"
    assert at.selectbox(key="trace_category").options == ["all", "how-to"]
    pick(at, category="how-to")
    assert count_caption(at) == "1 of 2 traces"


def test_a_job_with_no_revision_yet_offers_nothing_to_export(store, fake):
    install_bundled(store)
    fake.plan = ["ok"]  # the initial answer; then every request (the critique) fails
    fake.then = "400"
    job = _import_and_run(store, fake, "one", [{"prompt": "Name a cat.", "id": "a"}], rounds=1)
    assert job.status == "failed"
    assert [r["step"] for r in store.traces(job.id)] == ["initial"]

    at = run_page()
    assert count_caption(at) == "1 of 1 traces"
    assert step_headings(at) == ["Initial answer"]
    assert trace_texts(at) == ["Name a cat.", "answer to: Name a cat."]
    assert len(at.download_button) == 0
    assert [c.value for c in at.caption if c.value.startswith("Nothing to export yet")]


def test_no_query_of_the_page_returns_more_than_a_page_of_a_big_job(cai_home, monkeypatch):
    """120 traces (600 steps), 25 a page: the page, a filter, the next page and an opened
    trace never read more rows than a page; the whole-job read (`Store.traces`) is not used."""
    from bench import synthetic

    store = Store(cai_home)
    made = synthetic.critique_job(store, 120, rounds=2, shards=4)
    counter = RowCounter(monkeypatch)
    at = run_page()
    assert counter.most()[1] <= 50  # the default page size
    counter.calls.clear()
    at.selectbox(key="trace_page_size").set_value(25)
    rerun(at)
    assert count_caption(at) == "120 of 120 traces"
    assert len(table(at)) == 25
    at.button(key="trace_next").click()
    rerun(at)
    assert [c.value for c in at.caption if c.value.startswith("Traces ")] == ["Traces 26–50 of 120"]
    pick(at, category="crime")
    assert count_caption(at) == "20 of 120 traces"  # every 6th prompt: page 1 again
    assert store.trace_facets(made["job"])["traces"] == 120
    name, rows = counter.most()
    assert rows <= 25, (name, rows)
    assert "traces" not in {n for n, _ in counter.calls}
