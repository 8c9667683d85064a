"""Revision progress (`eval.revisions`) on a constructed critique job."""

from __future__ import annotations

import pytest

from cai_engine.bundled import BUNDLED_CONSTITUTIONS
from cai_engine.constitution import load_constitution
from cai_engine.eval.revisions import revision_progress
from cai_engine.labels import LabelConfig
from tests.test_labels import Judge


def trace_rows(prompt_id: str, texts: list[str], sample: int = 0) -> list[dict]:
    """Rows of one trace: the initial answer, then a critique and a revision per round."""
    rows = [
        {"prompt_id": prompt_id, "sample": sample, "round": 0, "step": "initial", "text": texts[0]}
    ]
    for k, text in enumerate(texts[1:], start=1):
        rows.append(
            {
                "prompt_id": prompt_id,
                "sample": sample,
                "round": k,
                "step": "critique",
                "text": "critique",
            }
        )
        rows.append(
            {"prompt_id": prompt_id, "sample": sample, "round": k, "step": "revision", "text": text}
        )
    for r in rows:
        r["prompt_messages"] = [{"role": "user", "content": f"question {prompt_id}"}]
    return rows  # fmt: skip


def test_revision_progress_counts_how_often_each_round_beats_the_one_before():
    # The judge prefers the answer with more "safe" in it, whichever slot it is shown in:
    # P(A) = 0.9 if A is safer, 0.1 if B is, else 0.5.
    def prefer(first, second):
        a, b = first.count("safe"), second.count("safe")
        return 0.9 if a > b else 0.1 if b > a else 0.5

    rows = (
        trace_rows("p1", ["x", "safe", "safe safe"])  # both rounds improve
        + trace_rows("p2", ["safe", "safe safe", "safe"])  # round 1 improves, round 2 regresses
        + trace_rows("p3", ["x", "x", "safe"])  # round 1 is unchanged (identical: a tie)
        + trace_rows("p4", ["x", "safe"])  # one round only
    )
    constitution = load_constitution(BUNDLED_CONSTITUTIONS / "harmless.yaml")
    config = LabelConfig(pairs="eval", constitution="harmless", model="hf:/judge", few_shots=0)
    progress = revision_progress(rows, constitution, "h" * 64, Judge(prefer), config)

    assert [p.round for p in progress] == [1, 2]
    r1, r2 = progress
    # round 1: p1 0.9, p2 0.9, p3 tie 0.5, p4 0.9 -> soft 3.2 / 4; hard wins 3 / 4
    assert (r1.pairs, r1.preferred.k, r1.wins.k) == (4, pytest.approx(3.2), 3)
    assert r1.preferred.value == pytest.approx(0.8)
    # round 2: p1 0.9, p2 0.1, p3 0.9 -> soft 1.9 / 3; hard wins 2 / 3
    assert (r2.pairs, r2.preferred.k, r2.wins.k) == (3, pytest.approx(1.9), 2)
    assert r2.wins.low < r2.wins.value < r2.wins.high


def test_an_eval_reads_a_critique_jobs_answers_a_page_at_a_time_as_revision_pairs_need(
    seeded_store,
):
    from cai_engine.eval.job import ANSWER_COLUMNS, critique_answers
    from cai_engine.eval.revisions import revision_pairs
    from tests.test_pairs import finished_critique_job, trace

    rows = [r for n in range(4) for s in range(2) for r in trace(f"q{n}", s, rounds=1 + n % 3)]
    job_id = finished_critique_job(seeded_store, rows, "critique-00000000-000000-eval")
    # pages of 3 traces: 8 traces in 3 pages
    got = critique_answers(seeded_store, job_id, page=3)
    whole = [r for r in seeded_store.traces(job_id) if r["step"] != "critique"]
    assert len(got) == len(whole) == sum(r["step"] != "critique" for r in rows)
    assert got == [{**{c: r[c] for c in ANSWER_COLUMNS}, "prompt_messages": []} for r in whole]
    assert revision_pairs(got) == revision_pairs(whole)
    assert len(revision_pairs(got)) == 2 * (1 + 2 + 3 + 1)  # a pair per round per trace
