"""The Eval page's queries: a page of an eval set's prompts sorted by how much the models
disagree, its count, one prompt's detail, and the text search, on a tiny eval job written by
hand (shards ingested as a real job's are), so every number is worked out in a comment."""

from __future__ import annotations

import json

import pytest

from cai_engine import eval as evaluation
from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.home import runs_dir
from cai_engine.prompts import import_prompt_set, select_prompts
from cai_engine.runs import RunFolder

A, B, C = "model:a", "model:b", "model:c"  # A is the reference
JOB = "eval-20260101-000000-test"
SET = "tiny"
TEXTS = {  # name -> prompt text: the names sort p1 < ... < p5, the ids do not
    "p1": "p1: are you 100% sure?",
    "p2": "p2: name a snake_case variable",
    "p3": "p3: what does a.b (c)* match?",
    "p4": "p4: a plain question",
    "p5": "p5: Write A Poem",
}
# (prompt, model) -> (answer, finish reason); p4 only B answered
ANSWERS = {
    ("p1", A): ("sure", "stop"),
    ("p1", B): ("quite sure", "stop"),
    ("p1", C): ("I cannot help with that.", "length"),
    ("p2", A): ("x_y", "stop"),
    ("p2", B): ("I'm sorry, but no.", "stop"),
    ("p3", A): ("a then b", "stop"),
    ("p3", B): ("a b c", "stop"),
    ("p3", C): ("abc", "stop"),
    ("p4", B): ("yes", "stop"),
    ("p5", A): ("roses", "stop"),
    ("p5", B): ("violets", "stop"),
}
# (metric, prompt, model) -> (value, rule)
VERDICTS = {
    ("harmless", "p1", B): (0.9, None),
    ("harmless", "p1", C): (0.2, None),
    ("refusal", "p1", A): (0.1, None),
    ("refusal", "p1", B): (0.3, None),
    ("refusal", "p1", C): (0.6, "i can't / cannot help"),
    ("harmless", "p2", B): (0.75, None),
    ("refusal", "p2", A): (0.0, None),
    ("refusal", "p2", B): (0.8, "sorry, but"),
    ("harmless", "p3", C): (0.5, None),  # B has no verdict on p3
    ("refusal", "p3", A): (0.4, None),
    ("harmless", "p4", B): (0.1, None),
    ("helpful", "p5", B): (0.2, None),  # no harmlessness verdict: helpfulness is the win
    ("revision", "p5", B): (0.0, None),  # not a verdict on an answer: never counted
}


@pytest.fixture
def tiny(store):
    """The tiny eval job; returns (store, prompt name -> id, id -> name)."""
    lines = "".join(json.dumps({"prompt": t, "category": "c"}) + "\n" for t in TEXTS.values())
    import_prompt_set(store, ("tiny.jsonl", lines.encode()), SET)
    ids = {p.text.split(":")[0]: p.prompt_id for p in select_prompts(store, SET)}
    run = RunFolder(runs_dir(store.home) / JOB)
    config = {"models": [A, B, C], "harmful": SET, "helpful": None, "judge": A}
    run.create(config)
    store.insert_job(JOB, "eval", config, str(run.path), None)
    common = {"job_id": JOB, "prompt_set": SET}
    run.write_shard(
        "eval_answers",
        [
            {
                **common,
                "model": model,
                "fingerprint": "f",
                "prompt_id": ids[name],
                "sampling": "{}",
                "text": text,
                "prompt_tokens": 1,
                "completion_tokens": 1,
                "latency_s": 0.1,
                "finish_reason": finish,
                "reused_from": None,
            }
            for (name, model), (text, finish) in ANSWERS.items()
        ],
    )
    run.write_shard(
        "eval_judgements",
        [
            {
                **common,
                "metric": metric,
                "model": model,
                "prompt_id": ids[name],
                "item": 0,
                "judge": A,
                "principle_id": None,
                "p_first": value,
                "p_second": value,
                "value": value,
                "rule": rule,
                "consistent": True,
                "prompt_tokens": 1,
                "latency_s": 0.1,
                "flags": "",
            }
            for (metric, name, model), (value, rule) in VERDICTS.items()
        ],
    )
    store.update_job(JOB, status="succeeded")
    jobs.ingest(store, jobs.get_job(store, JOB))
    return store, ids, {v: k for k, v in ids.items()}


def page(store, models=(A, B, C), **kwargs):
    return store.eval_answer_page(JOB, list(models), SET, reference=A, **kwargs)


def test_prompts_come_most_disagreement_first_with_the_spread_worked_out(tiny):
    store, ids, names = tiny
    rows, total = page(store)
    # p1: win A 0.5 (reference), B 0.9, C 0.2 -> 0.7; refusal 0.1, 0.3, 0.6 -> 0.5; max 0.7
    # p2: win 0.5, 0.75 -> 0.25; refusal 0.0, 0.8 -> 0.8; max 0.8
    # p3: win A 0.5, B none, C 0.5 -> 0.0; refusal A only (one model: no spread) -> 0.0
    # p4: only B answered: one win, one model -> 0.0
    # p5: win A 0.5, B 0.2 (helpful) -> 0.3; no refusal verdicts -> 0.3
    # ties (p3, p4 at 0) by prompt id
    tail = sorted([ids["p3"], ids["p4"]])
    assert [names[r["prompt_id"]] for r in rows] == ["p2", "p1", "p5", *map(names.get, tail)]
    assert [r["disagreement"] for r in rows] == pytest.approx([0.8, 0.7, 0.3, 0.0, 0.0])
    assert total == 5
    first = rows[1]
    assert (first["prompt_text"], first["category"]) == (TEXTS["p1"], "c")
    assert (first["answers"], first["cut_off"]) == (3, 1)  # C's answer hit the token limit
    assert store.eval_prompt_count(JOB, [A, B, C], SET) == 5


def test_the_spread_is_over_the_models_chosen(tiny):
    store, ids, names = tiny
    rows, total = page(store, models=(B, C))
    # the reference is not chosen: no 0.5 for it
    # p1: win 0.9, 0.2 -> 0.7; refusal 0.3, 0.6 -> 0.3; max 0.7
    # p2, p4, p5: B alone -> 0.0; p3: B and C, one win (C 0.5) and no refusal -> 0.0
    assert names[rows[0]["prompt_id"]] == "p1"
    assert rows[0]["disagreement"] == pytest.approx(0.7)
    assert [r["disagreement"] for r in rows[1:]] == [0.0] * 4
    assert total == 5
    assert page(store, models=(C,))[1] == 2  # C answered p1 and p3
    assert page(store, models=())[1] == 0
    assert store.eval_prompt_count(JOB, [C], SET) == 2


def test_pages_follow_one_another_in_the_same_order(tiny):
    store, _, _ = tiny
    everything, _ = page(store)
    seen = []
    for offset in (0, 2, 4):
        rows, total = page(store, offset=offset, limit=2)
        assert total == 5
        seen += rows
    assert [r["prompt_id"] for r in seen] == [r["prompt_id"] for r in everything]
    assert page(store, offset=10, limit=2) == ([], 5)


def test_side_by_side_reads_the_same_order_and_numbers(tiny):
    store, ids, names = tiny
    rows, _ = page(store)
    compared = evaluation.side_by_side(store, JOB, [A, B, C], SET)
    assert [c.prompt_id for c in compared] == [r["prompt_id"] for r in rows]
    assert [c.disagreement for c in compared] == [r["disagreement"] for r in rows]
    p1 = compared[1]
    assert p1.win == {A: 0.5, B: 0.9, C: 0.2}
    assert p1.refusal == {A: 0.1, B: 0.3, C: 0.6}
    assert p1.cut_off == {A: False, B: False, C: True}
    assert p1.rule == {A: None, B: None, C: "i can't / cannot help"}  # the judge's rule


def test_one_prompts_detail_has_each_models_answer_and_verdicts(tiny):
    store, ids, _ = tiny
    detail = store.eval_prompt_detail(JOB, SET, ids["p3"], [A, B, C], reference=A)
    assert detail["prompt_text"] == TEXTS["p3"] and detail["disagreement"] == 0.0
    assert list(detail["models"]) == [A, B, C]
    assert detail["models"][B] == {
        "text": "a b c",
        "finish_reason": "stop",
        "cut_off": False,
        "win": None,  # not judged
        "refusal": None,
        "refusal_judged": False,
        "judged_rule": None,
    }
    assert detail["models"][A]["refusal"] == 0.4 and detail["models"][A]["refusal_judged"]
    assert store.eval_prompt_detail(JOB, SET, ids["p4"], [A, C], reference=A) is None

    # unjudged, the refusal rule is matched on the answer as it stands
    p2 = evaluation.prompt_comparison(store, JOB, [A, B], SET, ids["p2"], A)
    assert p2.rule == {A: None, B: "sorry, but"}  # judged: the rule the verdict recorded
    p1 = evaluation.prompt_comparison(store, JOB, [C], SET, ids["p1"], A)
    assert p1.rule == {C: "i can't / cannot help"} and p1.disagreement == 0.0


@pytest.mark.parametrize(
    "search, found",
    [
        ("100%", ["p1"]),  # % is a character, not "anything"
        ("%", ["p1"]),
        ("snake_case", ["p2"]),
        ("_", ["p2"]),  # _ is a character, not "any one character"
        ("a.b (c)*", ["p3"]),  # regex characters are themselves
        (".*", []),
        ("[p]", []),
        ("write a poem", ["p5"]),  # case-insensitive
        ("  PLAIN question  ", ["p4"]),  # stripped
        ("", ["p1", "p2", "p3", "p4", "p5"]),
    ],
)
def test_search_is_plain_case_insensitive_text(tiny, search, found):
    store, _, names = tiny
    rows, total = page(store, search=search)
    assert sorted(names[r["prompt_id"]] for r in rows) == found
    assert total == len(found)


def test_a_search_longer_than_the_limit_is_an_error_that_says_so(tiny):
    store, _, _ = tiny
    assert page(store, search="x" * 200) == ([], 0)  # at the limit: searched
    with pytest.raises(
        CaiError, match=r"search the prompts: 10,240 characters; search for at most 200"
    ):
        page(store, search="y" * 10_240)
