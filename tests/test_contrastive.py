"""Contrastive pairs (RLCD): the system prompts (derived and a principle's own), the seeded side
coin, the pairs job (lineage, the prompts the model is sent, resume after kill -9), labels by
construction, their exports for TRL, and how often a judge agrees with the construction."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from datetime import datetime

import pytest

from cai_engine import export, jobs, review
from cai_engine.cli import main
from cai_engine.constitution import (
    Principle,
    constitution_from_data,
    constitution_from_rows,
    load_constitution,
    parse_constitution,
    principles_to_rows,
    to_yaml,
)
from cai_engine.contrastive import (
    CONSTRUCTION,
    NEGATIVE,
    ConstructionAgreement,
    Plan,
    construction_label,
    contrastive_prompts,
    draw_principle,
    positive_is_a,
    with_system,
)
from cai_engine.errors import CaiError
from cai_engine.home import BUNDLED_CONSTITUTIONS, runs_dir
from cai_engine.jobs import JobConfigError
from cai_engine.labels import submit_labels
from cai_engine.models import parse_spec
from cai_engine.pairs import submit_pairs
from cai_engine.peer_formats import export_losses
from cai_engine.runs import RunFolder
from cai_engine.store import Store
from tests.fake_openai import FakeOpenAI
from tests.runners import alive, finish, kill_runners, wait_until
from tests.test_pairs import insert_job

DEADLINE = 120.0
HARMLESS = load_constitution(BUNDLED_CONSTITUTIONS / "harmless.yaml")


@pytest.fixture(autouse=True)
def reap_runners(cai_home):
    yield
    kill_runners(cai_home)


def principle(**changes) -> Principle:
    return Principle(
        **{
            "id": "harm",
            "title": "Harm",
            "critique_request": "Say how it harms.",
            "revision_request": "Rewrite it harmlessly.",
            "preference_question": "Which response is\n  less harmful?",
            **changes,
        }
    )


# -- the system prompts ----------------------------------------------------------------------


def test_derived_prompts_quote_the_preference_question_and_differ_in_one_word():
    positive, negative, derived = contrastive_prompts(principle())
    # the question's whitespace collapsed, quoted inside the same sentence
    assert positive == (
        "You will answer the user's next message. A reviewer will compare your answer with "
        'other answers by asking: "Which response is less harmful?" Write the answer the '
        "reviewer would pick as the best."
    )
    assert negative == positive.removesuffix("best.") + "worst."
    assert derived is True
    words = [(a, b) for a, b in zip(positive.split(), negative.split(), strict=True) if a != b]
    assert words == [("best.", "worst.")]


def test_a_principles_own_prompts_are_used_and_not_tagged_derived():
    own = principle(positive_prompt="Be kind.", negative_prompt="Be cruel.")
    assert contrastive_prompts(own) == ("Be kind.", "Be cruel.", False)
    # one of its own, one derived: the pair says its prompts were (partly) derived
    half = principle(positive_prompt="Be kind.")
    assert contrastive_prompts(half) == (
        "Be kind.",
        NEGATIVE.format(question="Which response is less harmful?"),
        True,
    )


def test_a_system_prompt_goes_first_and_keeps_the_conversations_own():
    user = {"role": "user", "content": "Hi?"}
    assert with_system([user], "S") == [{"role": "system", "content": "S"}, user]
    own = {"role": "system", "content": "Be brief."}
    assert with_system([own, user], "S") == [{"role": "system", "content": "S\n\nBe brief."}, user]


def test_the_side_coin_is_seeded_per_pair():
    ids = [f"p{i:02d}" for i in range(40)]
    first = [positive_is_a(p, 0, seed=0) for p in ids]
    assert first == [positive_is_a(p, 0, seed=0) for p in ids]
    # 40 fair coins all on one side would be a 2**-39 chance
    assert 8 <= sum(first) <= 32
    assert first != [positive_is_a(p, 0, seed=1) for p in ids]


def test_the_principle_is_drawn_per_prompt_weighted_and_seeded():
    heavy, light = principle(id="heavy", weight=9.0), principle(id="light")
    drawn = Counter(draw_principle([heavy, light], f"p{i}", seed=3).id for i in range(400))
    # P(heavy) = 9 / 10: 360 of 400 expected, sd = sqrt(400 * 0.9 * 0.1) = 6
    assert 330 <= drawn["heavy"] <= 390
    assert [draw_principle([heavy, light], f"p{i}", 3).id for i in range(50)] == [
        draw_principle([heavy, light], f"p{i}", 3).id for i in range(50)
    ]


# -- the constitution's new fields ------------------------------------------------------------


def test_the_bundled_constitutions_keep_their_hashes():
    # the hashes before principles had contrastive prompts: optional fields left at their
    # defaults are left out of the canonical JSON
    hashes = {
        "default": "ed469f6aa8771efa0ef33b8575af6ace139bfae08bc085f0d7e338f187cffa2a",
        "harmless": "83c4357790d7c483c27e70f3114fb22fab8500887fa4baf8e83524a13e4fc6a6",
    }
    for name, expected in hashes.items():
        assert load_constitution(BUNDLED_CONSTITUTIONS / f"{name}.yaml").hash == expected


def with_own_prompts():
    data = HARMLESS.model_dump(mode="json", exclude_defaults=True)
    data["principles"][0] |= {"positive_prompt": "Answer kindly.", "negative_prompt": "Answer rudely."}  # fmt: skip
    return constitution_from_data(data)


def test_own_prompts_change_the_hash_and_survive_yaml_json_and_the_table():
    c = with_own_prompts()
    assert c.hash != HARMLESS.hash
    assert parse_constitution(to_yaml(c)) == c
    assert parse_constitution(json.dumps(c.model_dump(mode="json"))) == c
    assert constitution_from_rows(principles_to_rows(c), c) == c
    # a cell cleared in the table goes back to the derived prompt
    rows = principles_to_rows(c)
    rows[0]["positive_prompt"] = "   "
    assert constitution_from_rows(rows, c).principles[0].positive_prompt is None


def test_a_blank_prompt_in_a_file_is_an_error_naming_the_field():
    text = to_yaml(HARMLESS).replace(
        "  tags:\n  - harm\n", "  tags:\n  - harm\n  negative_prompt: ' '\n", 1
    )
    with pytest.raises(CaiError, match=r"principles\[0\]\.negative_prompt: must not be blank"):
        parse_constitution(text, "c.yaml")


def test_peer_format_exports_say_they_leave_the_own_prompts_out():
    assert export_losses(HARMLESS) == []
    assert export_losses(with_own_prompts()) == [
        "the Anthropic and llm-swarm formats have no contrastive prompts: those of "
        "general-harm are left out of them (the YAML keeps them)"
    ]


# -- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"constitution": None}, r"contrastive pairs need a constitution"),
        ({"samples": 3}, r"contrastive pairs are two answers per prompt"),
        ({"prompts": None, "from_critique": "c"}, r"give prompts, not from_critique"),
        ({"contrastive": False}, r"constitution is for contrastive pairs only"),
        ({"constitution": "nope"}, r"no constitution named 'nope'"),
    ],
)
def test_submit_refuses_a_bad_contrastive_pairs_job(seeded_store, change, message):
    config = {"prompts": "red-team:train", "contrastive": True, "constitution": "harmless"}
    with pytest.raises((JobConfigError, CaiError), match=message):
        submit_pairs(seeded_store, {**config, **change})
    assert jobs.list_jobs(seeded_store) == []


@pytest.mark.parametrize(
    "kind, config, message",
    [
        ("pairs", {}, r"is not contrastive: its pairs have no preferred side"),
        ("critique", {}, r"is a critique job; --pairs needs a pairs job"),
        ("pairs", {"cot": True}, r"labels by construction ask no judge"),
        ("pairs", {"score": 0.5}, r"score: Input should be greater than 0.5"),
    ],
)
def test_submit_refuses_labels_by_construction_without_contrastive_pairs(
    seeded_store, kind, config, message
):
    source = insert_job(seeded_store, kind)
    before = len(seeded_store.job_rows())
    with pytest.raises(CaiError, match=message):
        submit_labels(seeded_store, {"pairs": source, "source": "construction", **config})
    assert len(seeded_store.job_rows()) == before


def test_a_judge_still_needs_a_constitution(seeded_store):
    source = insert_job(seeded_store, "pairs")
    with pytest.raises(JobConfigError, match=r"a judge needs a constitution"):
        submit_labels(seeded_store, {"pairs": source})


# -- pairs and labels from rows ---------------------------------------------------------------


def answer(prompt_id: str, sample: int, text: str, finish_reason: str = "stop") -> dict:
    return {
        "prompt_set": "red-team",
        "prompt_id": prompt_id,
        "sample": sample,
        "text": text,
        "model": "hf:m",
        "sampling": '{"seed": 5}',
        "seed": 5,
        "finish_reason": finish_reason,
    }


def test_pairs_from_answers_put_the_positive_answer_on_the_coins_side(seeded_store):
    version = seeded_store.get_version("harmless")
    plan = Plan.of(version, seed=0)
    ids = [f"p{i:02d}" for i in range(12)]
    rows = [answer(p, s, f"{p} {'good' if s == 0 else 'bad'}") for p in ids for s in (1, 0)]
    rows.append(answer("only-one", 0, "waits for its negative answer"))
    pairs = plan.pairs(rows, "pairs-x")
    assert [p["prompt_id"] for p in pairs] == ids  # in prompt order; no half pair
    for p in pairs:
        good, bad = f"{p['prompt_id']} good", f"{p['prompt_id']} bad"
        positive_a = positive_is_a(p["prompt_id"], 0, 0)
        assert p["preferred"] == ("A" if positive_a else "B")
        assert (p["response_a"], p["response_b"]) == ((good, bad) if positive_a else (bad, good))
        refs = ("positive prompt", "negative prompt")
        assert (p["a_ref"], p["b_ref"]) == (refs if positive_a else refs[::-1])
        # lineage: the constitution version, the principle drawn, derived prompts
        assert p["constitution_hash"] == version.hash
        assert p["principle_id"] == draw_principle(plan.principles, p["prompt_id"], 0).id
        assert p["prompts_derived"] is True  # the bundled principles write none of their own
        assert (p["source"], p["pair"], p["seed_a"], p["seed_b"]) == ("contrastive", 0, 5, 5)
    assert {p["preferred"] for p in pairs} == {"A", "B"}


def test_a_label_by_construction_gives_the_preferred_side_its_score():
    pair = {"job_id": "pairs-x", "prompt_set": "s", "prompt_id": "p", "pair": 0}
    pair |= {"principle_id": "harm", "constitution_hash": "abc", "flags": "a_cut_off"}
    row = construction_label({**pair, "preferred": "B"}, 0.9, "harmless", job_id="label-x")
    assert row["p_a_ab"] == row["soft_label"] == pytest.approx(0.1)  # P(A) = 1 - 0.9
    assert (row["winner"], row["confidence"]) == ("B", pytest.approx(0.8))
    assert (row["p_a_ba"], row["consistent"], row["flags"]) == (None, None, "")
    assert (row["model"], row["mode"], row["label_source"]) == (CONSTRUCTION, CONSTRUCTION, "contrastive")  # fmt: skip
    assert (row["constitution"], row["constitution_hash"], row["principle_id"]) == ("harmless", "abc", "harm")  # fmt: skip
    assert construction_label({**pair, "preferred": "A"}, 1.0, "h")["soft_label"] == 1.0
    # identical answers: no side can be better, whatever the construction says
    same = construction_label({**pair, "preferred": "A", "flags": "identical"}, 1.0, "h")
    assert (same["soft_label"], same["winner"], same["flags"]) == (0.5, "tie", "identical")
    with pytest.raises(CaiError, match=r"only contrastive pairs can be labelled by construction"):
        construction_label({**pair, "preferred": None}, 1.0, "h")


# -- the jobs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def contrastive(tmp_path_factory, tiny_spec):
    """A home with a contrastive pairs job on the tiny model (6 prompts, 6 pairs) and a label
    job by construction on it."""
    home = tmp_path_factory.mktemp("contrastive") / "home"
    store = Store(home, lock_timeout=5)
    from cai_engine.bundled import install_bundled

    install_bundled(store)
    try:
        pairs = submit_pairs(
            store,
            {
                "prompts": "red-team:train",
                "model": tiny_spec,
                "contrastive": True,
                "constitution": "harmless",
                "limit": 6,
                "seed": 4,
                "sampling": {"max_new_tokens": 6, "seed": 11},
            },
        )
        pairs = finish(store, pairs.id, timeout=DEADLINE)
        assert pairs.status == "succeeded", pairs.error
        labels = finish(
            store,
            submit_labels(store, {"pairs": pairs.id, "source": "construction", "score": 0.9}).id,
            timeout=DEADLINE,
        )
        assert labels.status == "succeeded", labels.error
        yield store, pairs, labels
    finally:
        kill_runners(home)


def test_a_contrastive_pairs_job_records_its_lineage(contrastive, tiny_spec):
    store, job, _ = contrastive
    version = store.get_version("harmless")
    assert job.config["constitution"] == version.pinned  # pinned at submit
    plan = Plan.of(version, seed=4)
    answers = {(g["prompt_id"], g["sample"]): g for g in store.generations(job.id)}
    assert len(answers) == 12  # 6 prompts x (positive, negative)
    pairs = store.pairs(job.id)
    assert len(pairs) == 6 and (job.done, job.total, job.unit) == (6, 6, "pairs")
    for p in pairs:
        pid = p["prompt_id"]
        positive, negative = answers[(pid, 0)], answers[(pid, 1)]
        # the same model with the same sampling, seed included, for both answers
        assert positive["sampling"] == negative["sampling"] == p["sampling"]
        assert positive["seed"] == negative["seed"] == p["seed_a"] == p["seed_b"] == 11
        assert p["model"] == str(parse_spec(tiny_spec))
        better = p["response_a"] if p["preferred"] == "A" else p["response_b"]
        worse = p["response_b"] if p["preferred"] == "A" else p["response_a"]
        assert (better, worse) == (positive["text"], negative["text"])
        assert p["preferred"] == ("A" if positive_is_a(pid, 0, 4) else "B")
        assert (p["constitution_hash"], p["principle_id"]) == (version.hash, plan.principle(pid).id)  # fmt: skip
        assert p["prompts_derived"] is True and p["source"] == "contrastive"


def test_labels_by_construction_load_no_model_and_record_where_they_came_from(contrastive):
    store, pairs_job, job = contrastive
    version = store.get_version("harmless")
    pairs = {(p["prompt_id"], p["pair"]): p for p in store.pairs(pairs_job.id)}
    rows = store.labels(job.id)
    assert len(rows) == 6 and (job.done, job.total, job.unit) == (6, 6, "pairs")
    for r in rows:
        pair = pairs[(r["prompt_id"], r["pair"])]
        assert r["winner"] == pair["preferred"]
        assert r["soft_label"] == pytest.approx(0.9 if pair["preferred"] == "A" else 0.1)
        assert (r["label_source"], r["model"], r["mode"]) == ("contrastive", "construction", "construction")  # fmt: skip
        assert (r["constitution"], r["constitution_hash"]) == ("harmless", version.hash)
        assert r["principle_id"] == pair["principle_id"] and r["consistent"] is None
    events = [e["event"] for e in job.run.events()]
    assert "model_loaded" not in events  # no model was loaded
    # the review queue offers them as it offers a judge's labels
    row, progress = store.next_review(job.id, "ann", "random", 6)
    assert row is not None and progress.total == 6


def test_exports_of_labels_by_construction_are_trl_rows_counted_by_source(
    contrastive, tmp_path, tiny_model_dir
):
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from cai_engine.training import data as training_data

    store, pairs_job, job = contrastive
    labels = store.labels(job.id)
    first = labels[0]
    other = "B" if first["winner"] == "A" else "A"
    review.record(store, job.id, first["prompt_id"], first["pair"], "bob", other, "AB")
    stats = store.agreement(job.id)  # bob disagrees with the construction on his one pair
    assert (stats.decisive, stats.agree, stats.consistency_rate) == (1, 0, None)
    result = export.export_prefs_from_labels(store, job.id, tmp_path / "prefs")
    manifest = json.loads((tmp_path / "prefs" / "manifest.json").read_text())
    # bob's verdict overrides the construction on the first pair; the others keep their source
    assert manifest["label_sources"] == {"contrastive": 5, "human": 1}
    assert (manifest["feedback_model"], manifest["mode"]) == ("construction", "construction")
    assert manifest["pairs_job"] == pairs_job.id
    examples = [json.loads(x) for x in (tmp_path / "prefs" / "data.jsonl").read_text().splitlines()]  # fmt: skip
    assert len(examples) == result.examples == 6
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = {(p["prompt_id"], p["pair"]): p for p in store.pairs(pairs_job.id)}
    for e in examples:
        assert is_conversational(e)
        assert set(maybe_apply_chat_template(e, tokenizer)) == {"prompt", "chosen", "rejected"}
        pair = pairs[(e["prompt_id"], e["pair"])]
        if e["label_source"] == "human":
            continue
        assert e["label_source"] == "contrastive" and e["score"] == pytest.approx(0.9)
        positive = pair["response_a"] if pair["preferred"] == "A" else pair["response_b"]
        assert e["chosen"] == [{"role": "assistant", "content": positive}]
    # training keeps the source, and holds out only the human pairs
    trl_rows = training_data.to_trl(examples, "prefs", "here")
    assert Counter(r["label_source"] for r in trl_rows) == {"contrastive": 5, "human": 1}


PAIRS_JOB, JUDGE_JOB = "pairs-00000000-000000-hand", "label-00000000-000000-hand"


def hand_built_jobs(store) -> tuple[str, str]:
    """A finished contrastive pairs job of 5 pairs (preferred A, A, B, B, A) and a judge's
    label job on it whose winners are A, B, B, tie, A: 4 decisive, 3 agree."""
    version = store.get_version("harmless")
    preferred = ["A", "A", "B", "B", "A"]
    winners = ["A", "B", "B", "tie", "A"]
    pairs = [
        {"job_id": PAIRS_JOB, "prompt_set": "red-team", "prompt_id": f"p{i}", "pair": 0,
         "source": "contrastive", "source_job": None, "a_ref": "x", "b_ref": "y",
         "response_a": "a", "response_b": "b", "model": "m", "sampling": "{}", "seed_a": 0,
         "seed_b": 0, "constitution_hash": version.hash, "flags": "", "preferred": side,
         "principle_id": "general-harm", "prompts_derived": True}
        for i, side in enumerate(preferred)
    ]  # fmt: skip
    soft = {"A": 0.8, "B": 0.2, "tie": 0.5}
    labels = [
        {"job_id": JUDGE_JOB, "pairs_job": PAIRS_JOB, "prompt_set": "red-team",
         "prompt_id": f"p{i}", "pair": 0, "principle_id": "general-harm",
         "constitution": "harmless", "constitution_hash": version.hash, "model": "judge",
         "mode": "logprob", "few_shots": 0, "p_a_ab": soft[w], "p_a_ba": soft[w],
         "soft_label": soft[w], "winner": w, "confidence": abs(soft[w] - 0.5) * 2,
         "consistent": w != "tie", "cot_ab": None, "cot_ba": None, "prompt_tokens": 1,
         "cot_tokens": 0, "latency_s": 0.0, "truncated_turns": 0, "flags": ""}
        for i, w in enumerate(winners)
    ]  # fmt: skip
    configs = {
        PAIRS_JOB: {
            "prompts": "red-team:train",
            "contrastive": True,
            "constitution": version.pinned,
        },  # fmt: skip
        JUDGE_JOB: {"pairs": PAIRS_JOB, "constitution": version.pinned},
    }
    for job_id, kind, table, rows in (
        (PAIRS_JOB, "pairs", "pairs", pairs),
        (JUDGE_JOB, "label", "labels", labels),
    ):
        run = RunFolder(runs_dir(store.home) / job_id)
        run.create({})
        store.insert_job(job_id, kind, configs[job_id], str(run.path), "by hand")
        run.write_shard(table, rows)
        run.write_status(state="succeeded", done=len(rows), total=len(rows), unit="pairs")
        store.update_job(job_id, status="succeeded", finished_at=datetime.now())
        jobs.ingest(store, jobs.get_job(store, job_id))
    return PAIRS_JOB, JUDGE_JOB


def test_a_judge_on_contrastive_pairs_measures_its_agreement_with_the_construction(
    seeded_store, capsys
):
    _, judge_id = hand_built_jobs(seeded_store)
    got = seeded_store.construction_agreement(judge_id)
    assert got == ConstructionAgreement(pairs=5, decisive=4, agree=3)
    # Wilson at k = 3, n = 4, z = 1.96: denominator 1 + 3.84 / 4 = 1.96, centre
    # (0.75 + 3.84 / 8) / 1.96 = 0.627, half 1.96 * sqrt(0.1875 / 4 + 3.84 / 64) / 1.96 = 0.327:
    # [30.1%, 95.4%]
    assert got.describe() == (
        "the judge agrees with the construction on 75% [30%, 95%] of 4 contrastive pairs "
        "(Wilson 95% interval); 1 judge ties left out"
    )
    assert main(["review", "stats", "--labels", judge_id]) == 0
    assert f"contrastive pairs: {got.describe()}" in capsys.readouterr().out


def test_rows_written_without_the_new_columns_read_as_before(seeded_store):
    """Shards from before m007 (ordinary pairs, a judge's labels) have no preferred side, no
    principle and no label source: they read as NULL and 'ai', and give no agreement."""
    from cai_engine.pairs import pairs_from_samples
    from tests.test_pairs import generation

    pairs_id, judge_id = "pairs-00000000-000000-old", "label-00000000-000000-old"
    rows = [generation("p0", k, f"answer {k}") for k in range(2)]
    pairs = pairs_from_samples(rows, pairs_id)
    assert "preferred" not in pairs[0]  # ordinary pairs write none of the new columns
    labels = [
        {"job_id": judge_id, "pairs_job": pairs_id, "prompt_set": "red-team",
         "prompt_id": "p0", "pair": 0, "principle_id": "general-harm",
         "constitution": "harmless", "constitution_hash": "h", "model": "judge",
         "mode": "logprob", "few_shots": 0, "p_a_ab": 0.7, "p_a_ba": 0.7, "soft_label": 0.7,
         "winner": "A", "confidence": 0.4, "consistent": True, "cot_ab": None,
         "cot_ba": None, "prompt_tokens": 1, "cot_tokens": 0, "latency_s": 0.0,
         "truncated_turns": 0, "flags": ""}
    ]  # fmt: skip
    for job_id, kind, table, written in (
        (pairs_id, "pairs", "pairs", pairs),
        (judge_id, "label", "labels", labels),
    ):
        run = RunFolder(runs_dir(seeded_store.home) / job_id)
        run.create({})
        seeded_store.insert_job(job_id, kind, {}, str(run.path), "by hand")
        run.write_shard(table, written)
        jobs.ingest(seeded_store, jobs.get_job(seeded_store, job_id))
    (pair,) = seeded_store.pairs(pairs_id)
    assert (pair["preferred"], pair["principle_id"], pair["prompts_derived"]) == (None, None, None)
    (label,) = seeded_store.labels(judge_id)
    assert label["label_source"] == "ai"
    assert seeded_store.construction_agreement(judge_id) is None
    examples, _ = export.labelled_prefs(seeded_store, judge_id)
    assert [e["label_source"] for e in examples] == ["ai"]


def test_the_pairs_sent_to_the_model_carry_the_principles_prompts(seeded_store, cai_home):
    """Through a fake OpenAI server the job's requests can be read: each prompt is asked
    twice, under its principle's positive then negative prompt, with the same sampling."""
    data = HARMLESS.model_dump(mode="json", exclude_defaults=True)
    for p in data["principles"]:
        p |= {"positive_prompt": f"Do {p['id']} well.", "negative_prompt": f"Do {p['id']} badly."}  # fmt: skip
    own, _ = seeded_store.save_constitution(constitution_from_data(data), note="own prompts")
    fake = FakeOpenAI()
    try:
        assert main(["pairs", "--prompts", "red-team:train", "--model", fake.spec(),
                     "--contrastive", "--constitution", own.ref, "--limit", "3",
                     "--seed", "2"]) == 0  # fmt: skip
        (job,) = jobs.list_jobs(seeded_store, kind="pairs")
        job = finish(seeded_store, job.id, timeout=DEADLINE)
        assert job.status == "succeeded", job.error
        asked = [r["body"] for r in fake.seen("/v1/chat/completions")]
    finally:
        fake.close()
    plan = Plan.of(own, seed=2)
    prompts = seeded_store.get_prompts("red-team", split="train", limit=3)
    expected = [
        [{"role": "system", "content": f"Do {plan.principle(p.prompt_id).id} {how}."}, *p.messages]
        for how in ("well", "badly")  # every prompt's positive answer, then the negatives
        for p in prompts
    ]
    assert sorted(json.dumps(b["messages"]) for b in asked) == sorted(map(json.dumps, expected))
    assert {(b["seed"], b["temperature"]) for b in asked} == {(2, 1.0)}  # the same sampling
    for p in seeded_store.pairs(job.id):
        assert p["prompts_derived"] is False and p["constitution_hash"] == own.hash
        assert p["flags"] == "identical"  # the fake answers "answer to: <question>"


def test_cai_pairs_contrastive_says_how_to_label_by_construction(seeded_store, tiny_spec, capsys):
    assert main(["pairs", "--prompts", "red-team:train", "--model", tiny_spec, "--limit", "2",
                 "--max-new-tokens", "4", "--contrastive", "--constitution", "harmless"]) == 0  # fmt: skip
    (job,) = jobs.list_jobs(seeded_store, kind="pairs")
    out = capsys.readouterr().out
    assert f"cai label --pairs {job.id} --from-construction" in out
    assert finish(seeded_store, job.id, timeout=DEADLINE).status == "succeeded"
    assert main(["label", "--pairs", job.id, "--from-construction", "--wait"]) == 0
    (label,) = jobs.list_jobs(seeded_store, kind="label")
    assert (label.config["source"], label.config["score"]) == ("construction", 1.0)
    assert label.config["constitution"] == seeded_store.get_version("harmless").pinned
    assert {r["soft_label"] for r in seeded_store.labels(label.id)} <= {0.0, 1.0, 0.5}


def test_a_contrastive_pairs_job_killed_and_resumed_gives_an_uninterrupted_runs_pairs(
    seeded_store, tiny_model_dir
):
    # One answer per forward pass and one row per shard: the kill lands mid-chunk.
    config = {
        "prompts": "red-team:train",
        "model": f"hf:{tiny_model_dir}?dtype=float32&batch_size=1",
        "contrastive": True,
        "constitution": "harmless",
        "limit": 4,
        "chunk_prompts": 2,
        "shard_rows": 1,
        "sampling": {"max_new_tokens": 8},
    }
    whole = finish(seeded_store, submit_pairs(seeded_store, config).id, timeout=DEADLINE)
    assert whole.status == "succeeded", whole.error

    job = submit_pairs(seeded_store, config)
    wait_until(lambda: len(job.run.shards("generations")) >= 3, "3 answers", timeout=DEADLINE)
    pid = jobs.get_job(seeded_store, job.id).pid
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), "the killed runner to die", timeout=10)
    assert job.id in jobs.reconcile(seeded_store)
    assert jobs.get_job(seeded_store, job.id).status == "interrupted"
    assert len(seeded_store.pairs(job.id)) < 4, "the kill did not land mid-run"
    jobs.resume(seeded_store, job.id)
    job = finish(seeded_store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error

    def comparable(rows, key):
        return {key(r): {k: v for k, v in r.items() if k not in ("job_id", "latency_s")} for r in rows}  # fmt: skip

    pair_key = lambda r: (r["prompt_id"], r["pair"])  # noqa: E731
    answer_key = lambda r: (r["prompt_id"], r["sample"])  # noqa: E731
    assert len(seeded_store.pairs(job.id)) == 4  # one pair per prompt
    assert comparable(seeded_store.pairs(job.id), pair_key) == comparable(
        seeded_store.pairs(whole.id), pair_key
    )
    assert comparable(seeded_store.generations(job.id), answer_key) == comparable(
        seeded_store.generations(whole.id), answer_key
    )
    # nothing was answered or paired twice
    for table, key, n in (("generations", answer_key, 8), ("pairs", pair_key, 4)):
        written = Counter(key(r) for r in job.run.read_shard_rows(table))
        assert len(written) == n and max(written.values()) == 1, table
    assert (job.done, job.total, job.unit) == (4, 4, "pairs")


def hand_built_pairs(store, n: int) -> str:
    """A finished contrastive pairs job of `n` pairs, the preferred side alternating."""
    job_id = "pairs-00000000-000000-many"
    version = store.get_version("harmless")
    pairs = [
        {"job_id": job_id, "prompt_set": "red-team", "prompt_id": f"p{i:03d}", "pair": 0,
         "source": "contrastive", "source_job": None, "a_ref": "x", "b_ref": "y",
         "response_a": f"a{i}", "response_b": f"b{i}", "model": "m", "sampling": "{}",
         "seed_a": 0, "seed_b": 0, "constitution_hash": version.hash, "flags": "",
         "preferred": "AB"[i % 2], "principle_id": "general-harm", "prompts_derived": True}
        for i in range(n)
    ]  # fmt: skip
    run = RunFolder(runs_dir(store.home) / job_id)
    run.create({})
    config = {"prompts": "red-team:train", "contrastive": True, "constitution": version.pinned}
    store.insert_job(job_id, "pairs", config, str(run.path), "by hand")
    run.write_shard("pairs", pairs)
    run.write_status(state="succeeded", done=n, total=n, unit="pairs")
    store.update_job(job_id, status="succeeded", finished_at=datetime.now())
    jobs.ingest(store, jobs.get_job(store, job_id))
    return job_id


def test_a_construction_label_job_killed_mid_run_resumes_with_one_label_per_pair(seeded_store):
    # One pair a page and a shard: each page is read from the store, so holding the store's
    # lock stops the job between two labels, where the kill -9 lands.
    config = {"pairs": hand_built_pairs(seeded_store, 12), "source": "construction"}
    config |= {"batch_pairs": 1}
    whole = finish(seeded_store, submit_labels(seeded_store, config).id, timeout=DEADLINE)
    assert whole.status == "succeeded", whole.error

    job = submit_labels(seeded_store, config)
    pid = wait_until(lambda: jobs.get_job(seeded_store, job.id).pid, "the runner to start")
    wait_until(lambda: job.run.shards("labels"), "a first label", poll=0.002)
    with seeded_store.connect():  # the job's next page waits for this lock
        os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), "the killed runner to die", timeout=10)
    assert job.id in jobs.reconcile(seeded_store)
    assert jobs.get_job(seeded_store, job.id).status == "interrupted"
    kept = len(job.run.read_shard_rows("labels"))
    assert 0 < kept < 12, f"the kill did not land mid-run ({kept} labels)"

    jobs.resume(seeded_store, job.id)
    job = finish(seeded_store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error
    written = Counter((r["prompt_id"], r["pair"]) for r in job.run.read_shard_rows("labels"))
    assert len(written) == 12 and max(written.values()) == 1  # none labelled twice

    def comparable(rows):
        return {(r["prompt_id"], r["pair"]): {k: v for k, v in r.items() if k not in ("job_id", "latency_s")} for r in rows}  # fmt: skip

    assert comparable(seeded_store.labels(job.id)) == comparable(seeded_store.labels(whole.id))
    assert (job.done, job.total, job.unit) == (12, 12, "pairs")
