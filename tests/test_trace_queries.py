"""The Traces page's queries: a page of trace summaries, its count, the filter choices and the
per-principle statistics, asked of DuckDB instead of computed over a loaded job. Each answer
is checked against the plain-Python reading of the same rows (`group_traces`,
`filter_traces`, `principle_stats`), on a job written and ingested as a real one is."""

from __future__ import annotations

import itertools

import duckdb
import pytest

from bench import synthetic
from cai_engine import traces
from cai_engine.errors import CaiError
from cai_engine.runs import RunFolder
from cai_engine.store import Store
from cai_engine.store.migrations import m005_trace_summaries
from cai_engine.traces import TraceFilter, filter_traces, group_traces, principle_stats

TRACES = 90


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("traces") / "home")
    made = synthetic.critique_job(store, TRACES, rounds=2, shards=7)
    assert made["rows"] == TRACES * 5
    everything = group_traces(store.traces(made["job"]))
    return store, made["job"], everything


def page_keys(rows) -> list[tuple[str, int]]:
    return [(r["prompt_id"], r["sample"]) for r in rows]


def trace_keys(ts) -> list[tuple[str, int]]:
    return sorted((t.prompt_id, t.sample) for t in ts)


def filters(everything) -> list[TraceFilter]:
    principles = sorted({p for t in everything for p in t.principles})[:3]
    word = everything[3].steps[2]["text"].split()[5]  # a word of some critique
    out = [TraceFilter()]
    out += [TraceFilter(principle=p) for p in principles]
    out += [TraceFilter(principle=p, round=r) for p, r in itertools.product(principles, (1, 2))]
    out += [TraceFilter(round=2), TraceFilter(category="crime"), TraceFilter(cut_off=True)]
    out += [TraceFilter(cut_off=False, category="benign"), TraceFilter(search=word)]
    out += [TraceFilter(search=word.upper(), principle=principles[0])]
    return out


def test_every_filter_pages_the_traces_the_python_filter_keeps_in_order(job):
    store, job_id, everything = job
    for where in filters(everything):
        expected = trace_keys(t for t in everything if where.matches(t))
        got, after = [], None
        while True:
            page, total = store.trace_page(job_id, where, after=after, limit=7)
            assert total == len(expected), where
            assert len(page) <= 7
            got += page_keys(page)
            if len(page) < 7:
                break
            after = got[-1]
        assert got == expected, where


def test_a_page_row_says_what_the_trace_shows(job):
    store, job_id, everything = job
    by_key = {(t.prompt_id, t.sample): t for t in everything}
    page, _ = store.trace_page(job_id, limit=TRACES)
    for row in page:
        t = by_key[(row["prompt_id"], row["sample"])]
        assert row["prompt_text"] == t.prompt_text and row["category"] == t.category
        assert (row["rounds_done"], row["principles"]) == (t.rounds_done, t.principles)
        assert (row["changed"], row["cut_off"]) == (t.changed, t.cut_off)
        assert row["final_text"] == t.answers[-1]["text"]
        assert set(row["flags"]) | ({"cut_off"} if row["cut_off"] else set()) == t.flags


def test_one_trace_is_read_alone_with_its_prompt(job):
    store, job_id, everything = job
    t = everything[17]
    (alone,) = group_traces(store.trace_steps(job_id, t.prompt_id, t.sample))
    assert alone.steps == t.steps and alone.prompt == t.prompt and alone.category == t.category


def test_statistics_and_facets_are_the_python_ones(job):
    store, job_id, everything = job
    sql = store.trace_principle_stats(job_id)
    python = principle_stats(everything)
    assert [r["principle"] for r in sql] == [r["principle"] for r in python]
    for a, b in zip(sql, python, strict=True):
        assert {k: a[k] for k in ("drawn", "revisions", "changed")} == {
            k: b[k] for k in ("drawn", "revisions", "changed")
        }
        # the stored edit size is the synthetic share of words replaced; the Python one is
        # difflib's: both measure the same edits, differently
        assert a["mean_edit_size"] == pytest.approx(b["mean_edit_size"], abs=0.12)
    facets = store.trace_facets(job_id)
    assert facets == {
        "traces": TRACES,
        "max_round": 2,
        "categories": sorted({t.category for t in everything}),
    }


@pytest.mark.parametrize("needle", ["%", "_", "w1%w2", ".*", "[w]", "\\", "'; DROP TABLE traces"])
def test_search_is_plain_text_whatever_characters_it_holds(job, needle):
    store, job_id, everything = job
    where = TraceFilter(search=needle)
    _, total = store.trace_page(job_id, where)
    assert total == len(filter_traces(everything, search=needle)) == 0
    assert store.trace_facets(job_id)["traces"] == TRACES  # and nothing was harmed


def test_a_search_of_pages_of_text_is_refused_before_it_runs():
    with pytest.raises(CaiError, match=r"search: 10,000 characters; search for at most 200"):
        TraceFilter(search="x" * 10_000)


def test_a_live_job_refreshes_only_the_traces_its_new_shards_touch(tmp_path):
    """Shards of a running job arrive a step at a time across traces; each ingest brings the
    summaries of the traces it touched up to date, and leaves the others as they were."""
    store = Store(tmp_path / "home")
    made = synthetic.critique_job(store, 6, rounds=1, shards=1, job_id="critique-1-1-live")
    job_id = made["job"]
    before, _ = store.trace_page(job_id)
    rows = store.traces(job_id)
    # round 2 for the first two traces only, as a later shard of the same job
    run = RunFolder(store.home / "runs" / job_id)
    extra = []
    for r in (
        r for r in rows if r["step"] == "revision" and r["prompt_id"] in page_keys_ids(before, 2)
    ):
        base = {k: v for k, v in r.items() if k not in ("prompt_messages", "category")}
        extra.append(
            {
                **base,
                "round": 2,
                "step": "critique",
                "principle_id": "late",
                "edit_size": None,
                "changed": None,
            }
        )
        extra.append(
            {
                **base,
                "round": 2,
                "step": "revision",
                "principle_id": "late",
                "text": "new words",
                "edit_size": 1.0,
                "changed": True,
            }
        )
    run.write_shard("traces", extra)
    from cai_engine import jobs

    jobs.ingest(store, jobs.get_job(store, job_id))
    after, _ = store.trace_page(job_id)
    for old, new in zip(before, after, strict=True):
        if old["prompt_id"] in page_keys_ids(before, 2):
            assert (new["rounds_done"], new["principles"][-1]) == (2, "late")
            assert (new["final_text"], new["changed"]) == ("new words", True)
        else:
            assert new == old


def test_a_shard_that_repeats_stored_steps_adds_only_its_new_ones_and_keeps_the_first(tmp_path):
    """Ingest inserts a batch of new steps with a plain INSERT; a shard that repeats steps the
    store has (a copy, or a key written twice) makes it fall back to INSERT OR IGNORE for the
    whole batch: the new steps go in, the stored ones keep their first text."""
    from cai_engine import jobs

    store = Store(tmp_path / "home")
    made = synthetic.critique_job(store, 4, rounds=1, shards=1, job_id="critique-1-1-again")
    job_id = made["job"]
    before, _ = store.trace_page(job_id)
    rows = store.traces(job_id)
    # a shard with two of the stored steps (other text) and one new step of the first trace
    first = before[0]["prompt_id"]
    repeated = [
        {k: v for k, v in r.items() if k not in ("prompt_messages", "category")} | {"text": "no"}
        for r in rows[:2]
    ]
    new = {**repeated[0], "prompt_id": first, "round": 2, "step": "critique", "text": "late"}
    new |= {"principle_id": "late", "edit_size": None, "changed": None}
    run = RunFolder(store.home / "runs" / job_id)
    run.write_shard("traces", [*repeated, new])
    assert jobs.ingest(store, jobs.get_job(store, job_id)) == 1  # only the new step
    texts = {(r["prompt_id"], r["round"], r["step"]): r["text"] for r in store.traces(job_id)}
    assert len(texts) == 4 * 3 + 1
    for r in rows[:2]:
        assert texts[(r["prompt_id"], r["round"], r["step"])] == r["text"]  # the first kept
    after, _ = store.trace_page(job_id)
    grown = {r["prompt_id"]: r for r in after}[first]
    assert (grown["steps"], grown["principles"]) == (4, [before[0]["principles"][0], "late"])
    assert [r for r in after if r["prompt_id"] != first] == before[1:]


def page_keys_ids(rows, n: int) -> set[str]:
    return {r["prompt_id"] for r in rows[:n]}


def test_a_store_from_before_summaries_gets_them_and_its_edit_sizes_on_opening(tmp_path):
    """A store whose traces were written before m005: opening it adds the summaries and each
    revision's edit size, as the critique stage now records them."""
    home = tmp_path / "home"
    store = Store(home)
    made = synthetic.critique_job(store, 5, rounds=2, shards=1, job_id="critique-1-1-old")
    expected, _ = store.trace_page(made["job"])
    rows = store.traces(made["job"])
    # roll the store back to m004: no summaries, no edit sizes
    con = duckdb.connect(str(store.path))
    con.execute("DROP TABLE trace_summaries")
    con.execute("ALTER TABLE traces DROP COLUMN edit_size")
    con.execute("ALTER TABLE traces DROP COLUMN changed")
    con.execute("DELETE FROM schema_migrations WHERE name = ?", [m005_trace_summaries.__name__])
    con.close()
    reopened = Store(home)
    got, _ = reopened.trace_page(made["job"])
    assert got == expected
    for t in group_traces(reopened.traces(made["job"])):
        previous = t.answers[0]["text"]
        for s in t.steps:
            if s["step"] == "revision":
                assert s["edit_size"] == pytest.approx(traces.edit_size(previous, s["text"]))
                assert s["changed"] == (s["text"] != previous)
                previous = s["text"]
    assert len(rows) == 25
