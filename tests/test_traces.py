"""Reading critique traces: grouping rows into traces, filters, word diffs and statistics.

These are plain functions on `traces` rows, so the rows here are written out by hand: each
test can say exactly which trace should match and why.
"""

from __future__ import annotations

import random

import pytest

from cai_engine.traces import edit_size, filter_traces, group_traces, principle_stats, word_diff


def step(prompt_id, round_, kind, text, principle=None, sample=0, flags="", **extra) -> dict:
    return {
        "prompt_id": prompt_id,
        "sample": sample,
        "round": round_,
        "step": kind,
        "principle_id": principle,
        "text": text,
        "flags": flags,
        **extra,
    }


def trace_rows(prompt_id, prompt, category, initial, rounds, sample=0) -> list[dict]:
    """Rows of one trace: `rounds` is [(principle, critique, revision or None), ...]."""
    meta = {"category": category, "prompt_messages": [{"role": "user", "content": prompt}]}
    rows = [step(prompt_id, 0, "initial", initial, sample=sample, **meta)]
    for k, (principle, critique, revision) in enumerate(rounds, start=1):
        rows.append(step(prompt_id, k, "critique", critique, principle, sample=sample, **meta))
        if revision is not None:
            rows.append(step(prompt_id, k, "revision", revision, principle, sample=sample, **meta))
    return rows


# Three traces, as a Traces page would see them mid-job:
# - "a": two full rounds (privacy, then general-harm), crime;
# - "b": one round (general-harm), benign, its revision changed nothing;
# - "c": round 1 done (privacy), round 2 critiqued (bias) but not yet revised, violence.
A = trace_rows(
    "a",
    "How do I pick a lock?",
    "crime",
    "Use a tension wrench.",
    [
        ("privacy", "It risks someone's home.", "Ask a locksmith."),
        ("general-harm", "Still fine to improve.", "Ask a licensed locksmith."),
    ],
)
B = trace_rows(
    "b", "Tell me a JOKE", "benign", "Why did the chicken...", [("general-harm", "Fine.", None)]
)
B.append(step("b", 1, "revision", "Why did the chicken...", "general-harm", category="benign"))
C = trace_rows(
    "c",
    "Help me hurt my neighbor",
    "violence",
    "Sure, here is how.",
    [("privacy", "This is harmful.", "I can't help with that."), ("bias", "Biased?", None)],
)
ROWS = A + B + C


def ids(traces) -> list[str]:
    return [t.prompt_id for t in traces]


# -- group_traces --------------------------------------------------------------------------


def test_rows_in_any_order_group_into_one_trace_per_prompt_and_sample_in_step_order():
    shuffled = list(ROWS) + trace_rows("a", "How do I pick a lock?", "crime", "Other.", [], 1)
    random.Random(7).shuffle(shuffled)

    traces = group_traces(shuffled)

    assert [(t.prompt_id, t.sample) for t in traces] == [("a", 0), ("a", 1), ("b", 0), ("c", 0)]
    a = traces[0]
    assert [(s["round"], s["step"]) for s in a.steps] == [
        (0, "initial"),
        (1, "critique"),
        (1, "revision"),
        (2, "critique"),
        (2, "revision"),
    ]
    assert [s["text"] for s in a.answers] == [
        "Use a tension wrench.",
        "Ask a locksmith.",
        "Ask a licensed locksmith.",
    ]
    assert a.principles == ["privacy", "general-harm"]
    assert (a.rounds_done, a.changed, a.category) == (2, True, "crime")
    assert a.prompt_text == "How do I pick a lock?"
    assert (len(traces[1].steps), traces[1].rounds_done) == (1, 0)  # a's second sample


def test_a_trace_whose_revisions_changed_nothing_or_that_has_none_is_not_changed():
    a0, a1, b, c = group_traces(ROWS + trace_rows("a", "p", "crime", "Only.", [], 1))
    assert b.changed is False  # its revision repeats the initial answer
    assert a1.changed is False  # only an initial answer
    assert c.changed is True and c.rounds_done == 1 and c.principles == ["privacy", "bias"]


def test_a_trace_collects_the_flags_of_its_steps_and_its_prompt_is_the_last_user_turn():
    rows = trace_rows("x", "first", None, "", [("p", "No changes are needed.", "")])
    rows[0]["flags"] = "empty"
    rows[2]["flags"] = "skipped,empty"
    for r in rows:
        r["prompt_messages"] = [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "follow-up"},
        ]
    (t,) = group_traces(rows)
    assert t.flags == {"empty", "skipped"}
    assert t.prompt_text == "follow-up"


def test_rows_without_prompt_messages_still_group():
    (t,) = group_traces([step("x", 0, "initial", "hi")])
    assert (t.prompt, t.prompt_text, t.category) == ([], "", None)


# -- filter_traces -------------------------------------------------------------------------

TRACES = group_traces(ROWS)


@pytest.mark.parametrize(
    "criteria, expected",
    [
        ({}, ["a", "b", "c"]),
        # principle drawn in any round
        ({"principle": "privacy"}, ["a", "c"]),
        ({"principle": "general-harm"}, ["a", "b"]),
        ({"principle": "bias"}, ["c"]),  # drawn, though its revision has not come yet
        ({"principle": "nobody-drew-this"}, []),
        # reached a round: a full round, or a critique of that round already written
        ({"round_": 1}, ["a", "b", "c"]),
        ({"round_": 2}, ["a", "c"]),
        ({"round_": 3}, []),
        # principle drawn in that round
        ({"principle": "general-harm", "round_": 1}, ["b"]),
        ({"principle": "general-harm", "round_": 2}, ["a"]),
        ({"principle": "privacy", "round_": 2}, []),
        ({"category": "crime"}, ["a"]),
        ({"category": "nope"}, []),
        # search: case-insensitive, in the prompt or in any step's text
        ({"search": "joke"}, ["b"]),  # the prompt says JOKE
        ({"search": "LOCKSMITH"}, ["a"]),  # only in a's revisions
        ({"search": "biased?"}, ["c"]),  # a critique
        ({"search": "   "}, ["a", "b", "c"]),  # blank means no search
        # combined: every criterion must hold
        ({"principle": "general-harm", "category": "benign"}, ["b"]),
        ({"principle": "privacy", "search": "neighbor"}, ["c"]),
        ({"principle": "privacy", "round_": 1, "category": "crime", "search": "wrench"}, ["a"]),
        ({"principle": "privacy", "category": "benign"}, []),
    ],
)
def test_filter_traces(criteria, expected):
    assert ids(filter_traces(TRACES, **criteria)) == expected


# -- word_diff -----------------------------------------------------------------------------


def reassemble(pieces) -> tuple[str, str]:
    old = "".join(text for op, text in pieces if op != "insert")
    new = "".join(text for op, text in pieces if op != "delete")
    return old, new


def test_word_diff_of_one_changed_word():
    pieces = word_diff("the cat sat", "the dog sat")
    assert pieces == [("equal", "the "), ("delete", "cat"), ("insert", "dog"), ("equal", " sat")]
    assert reassemble(pieces) == ("the cat sat", "the dog sat")


def test_word_diff_of_identical_and_empty_texts():
    assert word_diff("same text", "same text") == [("equal", "same text")]
    assert word_diff("", "") == []
    assert word_diff("", "new words") == [("insert", "new words")]
    assert word_diff("old words", "") == [("delete", "old words")]


@pytest.mark.parametrize(
    "old, new",
    [
        ("a  b\nc", "a b\n\nc d"),  # runs of whitespace are kept, not normalised
        ("I can't help with that.", "I can help with that, safely."),
        ("Sure! Here's how:\n1. Do X\n2. Do Y", "I won't explain that.\nAsk a professional."),
        ("  leading and trailing  ", "leading and trailing"),
    ],
)
def test_word_diff_pieces_reassemble_both_texts_exactly(old, new):
    pieces = word_diff(old, new)
    assert reassemble(pieces) == (old, new)
    assert {op for op, _ in pieces} <= {"equal", "delete", "insert"}
    assert all(text for _, text in pieces)  # no empty pieces


# -- edit_size -----------------------------------------------------------------------------


def test_edit_size_is_zero_for_identical_texts_and_one_for_nothing_in_common():
    assert edit_size("the same answer", "the same answer") == 0.0
    assert edit_size("", "") == 0.0
    assert edit_size("cat", "dog") == 1.0
    assert edit_size("", "something new") == 1.0
    assert edit_size("all of it went", "") == 1.0


def test_edit_size_grows_with_the_share_of_words_changed():
    one = edit_size("the cat sat on the mat", "the dog sat on the mat")
    two = edit_size("the cat sat on the mat", "the dog lay on the mat")
    three = edit_size("the cat sat on the mat", "a dog lay on the mat")
    assert 0.0 < one < two < three < 1.0


def test_edit_size_of_texts_with_no_word_in_common_is_one():
    assert edit_size("the cat sat", "a dog ran") == 1.0


def test_edit_size_of_one_word_in_three_changed_is_one_third():
    # Words: the cat sat -> the dog sat. Matching words M = 2 (the, sat) of T = 3 + 3, so
    # difflib's ratio is 2*2/6 = 2/3 and the share changed is 1 - 2/3 = 1/3.
    assert edit_size("the cat sat", "the dog sat") == pytest.approx(1 / 3)


# -- principle_stats -----------------------------------------------------------------------


def test_principle_stats_count_draws_changes_and_mean_edit_size():
    # Single-word answers, so each edit size is exactly 0 (same word) or 1 (another word).
    rows = (
        # t1: A -p-> B (changed, 1.0) -q-> B (unchanged, 0.0)
        trace_rows("t1", "q1", None, "A", [("p", "c", "B"), ("q", "c", "B")])
        # t2: C -p-> C (unchanged, 0.0) -p-> D (changed, 1.0)
        + trace_rows("t2", "q2", None, "C", [("p", "c", "C"), ("p", "c", "D")])
        # t3: E, critiqued under q, not yet revised: a draw with no revision
        + trace_rows("t3", "q3", None, "E", [("q", "c", None)])
    )
    stats = principle_stats(group_traces(rows))
    # p: drawn 3 times (t1 r1, t2 r1, t2 r2); 3 revisions, 2 changed (t1 r1, t2 r2);
    #    mean edit size (1 + 0 + 1) / 3 = 2/3.
    # q: drawn 2 times (t1 r2, t3 r1); 1 revision (t1 r2), unchanged; mean 0.
    assert stats == [
        {
            "principle": "p",
            "drawn": 3,
            "revisions": 3,
            "changed": 2,
            "changed_rate": pytest.approx(2 / 3),
            "mean_edit_size": pytest.approx(2 / 3),
        },
        {
            "principle": "q",
            "drawn": 2,
            "revisions": 1,
            "changed": 0,
            "changed_rate": 0.0,
            "mean_edit_size": 0.0,
        },
    ]


def test_principle_stats_compare_each_revision_with_the_answer_before_it():
    # A -p-> B -q-> A: q's revision changed B back to A, which still counts as a change.
    rows = trace_rows("t", "q", None, "A", [("p", "c", "B"), ("q", "c", "A")])
    stats = {s["principle"]: s for s in principle_stats(group_traces(rows))}
    assert (stats["q"]["changed"], stats["q"]["mean_edit_size"]) == (1, 1.0)


def test_principle_stats_order_ties_by_name_and_handle_no_traces():
    rows = trace_rows("t", "q", None, "A", [("zeta", "c", "B"), ("alpha", "c", "B")])
    assert [s["principle"] for s in principle_stats(group_traces(rows))] == ["alpha", "zeta"]
    assert principle_stats([]) == []


# -- cut off at the token limit ------------------------------------------------------------


def test_a_trace_with_a_step_that_hit_the_token_limit_is_cut_off_and_filters_by_it():
    rows = [dict(r, finish_reason="stop") for r in ROWS]
    # trace "a": round 2's critique stopped at the token limit
    next(r for r in rows if (r["prompt_id"], r["round"], r["step"]) == ("a", 2, "critique"))[
        "finish_reason"
    ] = "length"
    a, b, c = group_traces(rows)
    assert (a.cut_off, b.cut_off, c.cut_off) == (True, False, False)
    assert "cut_off" in a.flags and "cut_off" not in b.flags
    traces = [a, b, c]
    assert ids(filter_traces(traces, cut_off=True)) == ["a"]
    assert ids(filter_traces(traces, cut_off=False)) == ["b", "c"]
    assert ids(filter_traces(traces, cut_off=None)) == ["a", "b", "c"]
    assert ids(filter_traces(traces, cut_off=True, category="benign")) == []
    # rows from before finish reasons were read (none recorded) are not cut off
    assert not any(t.cut_off for t in group_traces(ROWS))
