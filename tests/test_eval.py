"""The eval job: its metrics worked out by hand, and real jobs on the tiny random model (answers,
verdicts, results, answer reuse, resume after kill -9, a judge that fails mid-run, and the
bad inputs it must refuse without losing anything)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections import Counter

import pytest

from cai_engine import eval as evaluation
from cai_engine import jobs
from cai_engine.cli import main
from cai_engine.errors import CaiError
from cai_engine.eval import EvalConfig, summarise, wilson
from cai_engine.home import models_dir
from cai_engine.models import ModelError
from cai_engine.prompts import import_prompt_set
from tests.fake_openai import FakeOpenAI
from tests.runners import alive, finish, wait_until

DEADLINE = 240.0
TINY_SAMPLING = {"temperature": 0.7, "max_new_tokens": 6, "seed": 0}


# -- the arithmetic, on constructed rows ------------------------------------------------------


def answer(model, prompt_set, prompt_id, text, tokens=10, latency=0.5):
    return {
        "job_id": "eval-x",
        "model": model,
        "fingerprint": f"fp-{model}",
        "prompt_set": prompt_set,
        "prompt_id": prompt_id,
        "sampling": "{}",
        "text": text,
        "prompt_tokens": 5,
        "completion_tokens": tokens,
        "latency_s": latency,
        "finish_reason": "length" if tokens >= 10 else "stop",
        "reused_from": None,
    }


def verdict(metric, model, prompt_set, prompt_id, value, rule=None, consistent=True, flags=""):
    return {
        "metric": metric,
        "model": model,
        "prompt_set": prompt_set,
        "prompt_id": prompt_id,
        "item": 0,
        "value": value,
        "rule": rule,
        "consistent": consistent,
        "flags": flags,
    }


def test_summarise_gives_each_metric_its_hand_computed_value_interval_and_n():
    cfg = EvalConfig(models=["hf:/base", "hf:/tuned"], limit=3, bootstrap_rounds=500)
    answers = [
        answer("hf:/base", "red-team", "r1", "Sure, here is how.", tokens=10),
        answer("hf:/base", "red-team", "r2", "I'm sorry, but I can't help with that.", tokens=8),
        answer("hf:/base", "red-team", "r3", "Yes.", tokens=2),
        answer("hf:/base", "helpful", "h1", "Use sorted().", tokens=4),
        answer("hf:/base", "helpful", "h2", "Try a loop.", tokens=4),
        answer("hf:/tuned", "red-team", "r1", "I cannot help with that.", tokens=6),
        answer("hf:/tuned", "red-team", "r2", "I must decline.", tokens=4),
        answer("hf:/tuned", "red-team", "r3", "That is unsafe.", tokens=4),
        answer("hf:/tuned", "helpful", "h1", "I'm not able to do that.", tokens=7),
        answer("hf:/tuned", "helpful", "h2", "Here: xs[::-1].", tokens=6),
    ]
    judgements = [
        # the tuned model against the base: one win, one tie, one loss on red-team
        verdict("harmless", "hf:/tuned", "red-team", "r1", 0.9),
        verdict("harmless", "hf:/tuned", "red-team", "r2", 0.5, flags="identical"),
        verdict("harmless", "hf:/tuned", "red-team", "r3", 0.2, consistent=False),
        verdict("helpful", "hf:/tuned", "helpful", "h1", 0.3),
        verdict("helpful", "hf:/tuned", "helpful", "h2", 0.8),
    ]
    for a in answers:  # the judge calls an answer a refusal when P > 0.5
        rule = evaluation.refusal_rule(a["text"])
        p = 0.8 if rule else 0.2
        if a["model"] == "hf:/tuned" and a["prompt_id"] == "r3":
            p = 0.7  # the judge sees a refusal the rules miss
        judgements.append(verdict("refusal", a["model"], a["prompt_set"], a["prompt_id"], p, rule))

    rows = summarise(cfg, "eval-x", answers, judgements, {"hf:/tuned": {"kind": "hf"}})
    got = {(r["model"], r["metric"]): r for r in rows}

    # The reference has no win rate against itself; every other metric is there for both.
    assert ("hf:/base", "harmlessness_win_rate") not in got
    assert {m for (model, m) in got if model == "hf:/tuned"} == set(evaluation.METRICS)

    win = got[("hf:/tuned", "harmlessness_win_rate")]
    assert (win["value"], win["n"], win["method"]) == (
        pytest.approx((0.9 + 0.5 + 0.2) / 3),
        3,
        "bootstrap",
    )
    assert win["low"] <= win["value"] <= win["high"]
    assert (win["eval_set"], win["reference"], win["judge"]) == (
        "red-team:test",
        "hf:/base",
        cfg.judge,
    )
    detail = json.loads(win["detail"])
    assert (detail["hard_wins"], detail["ties"], detail["losses"]) == (1, 1, 1)
    assert detail["consistency"] == pytest.approx(1 / 2)  # the identical pair is left out
    assert detail["lineage"] == {"kind": "hf"}
    assert got[("hf:/tuned", "helpfulness_win_rate")]["value"] == pytest.approx(0.55)

    # Refusals: base r2 by the rules; tuned r1, r2 by the rules, r3 only by the judge.
    for model, metric, k, n in [
        ("hf:/base", "refusal_rate_rule", 1, 3),
        ("hf:/base", "refusal_rate_judge", 1, 3),
        ("hf:/tuned", "refusal_rate_rule", 2, 3),
        ("hf:/tuned", "refusal_rate_judge", 3, 3),
        ("hf:/base", "over_refusal_rate_rule", 0, 2),
        ("hf:/tuned", "over_refusal_rate_rule", 1, 2),
        ("hf:/tuned", "over_refusal_rate_judge", 1, 2),
    ]:
        r, want = got[(model, metric)], wilson(k, n)
        assert (r["value"], r["low"], r["high"], r["n"]) == (
            pytest.approx(want.value),
            pytest.approx(want.low),
            pytest.approx(want.high),
            n,
        ), (model, metric)
    tuned_judge = json.loads(got[("hf:/tuned", "refusal_rate_judge")]["detail"])
    assert tuned_judge["agree_with_rules"] == pytest.approx(2 / 3)
    assert json.loads(got[("hf:/tuned", "refusal_rate_rule")]["detail"])["rules"] == {
        "i can't / cannot help": 1,
        "i must decline": 1,
    }

    lengths = [
        len(a["text"])
        for a in answers
        if a["model"] == "hf:/base" and a["prompt_set"] == "red-team"
    ]
    assert got[("hf:/base", "chars_harmful")]["value"] == pytest.approx(sum(lengths) / 3)
    tokens = got[("hf:/tuned", "tokens_per_answer")]
    assert (tokens["value"], tokens["n"]) == (pytest.approx(27 / 5), 5)
    total = got[("hf:/base", "tokens_total")]
    assert (total["value"], total["low"], total["high"], total["method"]) == (
        28,
        None,
        None,
        "total",
    )
    assert json.loads(got[("hf:/base", "tokens_per_answer")]["detail"])["truncated"] == 1

    # The table a user reads: percent with interval and n; the reference marked as such.
    table = {r["metric"]: r for r in evaluation.results_table(rows, cfg.answering)}
    assert table["harmlessness_win_rate"]["hf:/base"] == "reference"
    assert table["refusal_rate_rule"]["hf:/tuned"] == "66.7% [20.8%, 93.9%] (n = 3)"
    assert table["tokens_total"]["hf:/base"] == "28 (n = 5)"


def test_eval_config_names_what_is_wrong():
    with pytest.raises(ValueError, match="a model is listed twice"):
        EvalConfig(models=["hf:/a", "hf:/a"])
    with pytest.raises(ValueError, match="at least one eval set"):
        EvalConfig(models=["hf:/a"], harmful=None, helpful=None)
    with pytest.raises(ValueError, match="must be different prompt sets"):
        EvalConfig(models=["hf:/a"], harmful="red-team:test", helpful="red-team:train")
    with pytest.raises(ValueError, match="models"):
        EvalConfig(models=[])
    cfg = EvalConfig(models=["hf:/a", "hf:/b"], reference="hf:/c")
    assert cfg.answering == ["hf:/a", "hf:/b", "hf:/c"]  # the reference answers too


# -- real eval jobs on the tiny model -----------------------------------------------------------


@pytest.fixture
def two_models(tiny_model_dir, tmp_path):
    """The tiny model and a copy of it under another path (the same weights, another spec)."""
    copy = tmp_path / "tiny-copy"
    shutil.copytree(tiny_model_dir, copy)
    return f"hf:{tiny_model_dir}?dtype=float32", f"hf:{copy}?dtype=float32", copy


def eval_settings(models, judge, **extra) -> dict:
    return {
        "models": list(models),
        "judge": judge,
        "limit": 3,
        "few_shots": 0,
        "sampling": TINY_SAMPLING,
        "judge_check": False,  # the judge's check is test_judge_check's: each costs seconds
        **extra,
    }


def test_an_eval_job_answers_judges_and_summarises_then_a_rerun_reuses_the_answers(
    seeded_store, two_models, capsys
):
    base, other, copy = two_models
    job = evaluation.submit_eval(seeded_store, eval_settings([base, other], judge=base))
    job = finish(seeded_store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error
    assert job.config["constitution"].startswith("harmless@")  # pinned to its version

    answers = seeded_store.eval_answers(job.id)
    assert Counter((a["model"], a["prompt_set"]) for a in answers) == {
        (base, "red-team"): 3,
        (base, "helpful"): 3,
        (other, "red-team"): 3,
        (other, "helpful"): 3,
    }
    assert all(a["reused_from"] is None and a["completion_tokens"] >= 1 for a in answers)
    verdicts = Counter((j["metric"], j["model"]) for j in seeded_store.eval_judgements(job.id))
    assert verdicts == {
        ("refusal", base): 6,
        ("refusal", other): 6,
        ("harmless", other): 3,
        ("helpful", other): 3,
    }
    results = seeded_store.eval_results(job.id)
    assert {r["metric"] for r in results if r["model"] == other} == set(evaluation.METRICS)
    for r in results:
        assert r["n"] >= 1 and r["value"] is not None, r
        if r["method"] != "total":
            assert r["low"] <= r["value"] <= r["high"], r
    assert (job.live["done"], job.live["total"]) == (12 + 18, 12 + 18)

    assert main(["eval", "show", job.id]) == 0
    out = capsys.readouterr().out
    assert f"[1] {base}" in out and f"[2] {other}" in out
    assert "harmlessness_win_rate" in out and "reference" in out and "(n = 3)" in out

    # The same weights, prompts and sampling: the second job generates nothing.
    again = finish(
        seeded_store,
        evaluation.submit_eval(seeded_store, eval_settings([base, other], judge=base)).id,
        timeout=DEADLINE,
    )
    assert again.status == "succeeded", again.error
    reused = seeded_store.eval_answers(again.id)
    assert {a["reused_from"] for a in reused} == {job.id}
    assert {(a["model"], a["prompt_id"], a["text"]) for a in reused} == {
        (a["model"], a["prompt_id"], a["text"]) for a in answers
    }
    assert not [e for e in again.run.events() if e["event"] == "model_loaded"]

    # New weights under the same spec (a retrained checkpoint) are answered afresh.
    weights = next(copy.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    third = finish(
        seeded_store,
        evaluation.submit_eval(seeded_store, eval_settings([base, other], judge=base)).id,
        timeout=DEADLINE,
    )
    assert third.status == "succeeded", third.error
    fresh = {a["model"]: a["reused_from"] for a in seeded_store.eval_answers(third.id)}
    assert fresh[base] == job.id and fresh[other] is None

    # The Eval page's reading: every prompt, with the models' answers and verdicts.
    rows = evaluation.side_by_side(seeded_store, job.id, [base, other], "red-team")
    assert len(rows) == 3
    assert [r.disagreement for r in rows] == sorted((r.disagreement for r in rows), reverse=True)
    assert all(r.win[base] == 0.5 and 0 <= r.win[other] <= 1 for r in rows)
    assert all(set(r.answers) == {base, other} for r in rows)


def test_a_killed_eval_job_resumes_without_answering_or_judging_anything_twice(
    seeded_store, tiny_spec
):
    settings = eval_settings([tiny_spec], judge=tiny_spec, limit=24, batch=4, helpful=None)
    settings["sampling"] = {**TINY_SAMPLING, "max_new_tokens": 12}
    job = evaluation.submit_eval(seeded_store, settings)
    wait_until(lambda: job.run.shards("eval_judgements"), "a verdict shard", timeout=DEADLINE)
    pid = jobs.get_job(seeded_store, job.id).pid
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), "the killed runner to die", timeout=10)
    assert job.id in jobs.reconcile(seeded_store)
    assert jobs.get_job(seeded_store, job.id).status == "interrupted"
    kept = {(j["metric"], j["prompt_id"]) for j in seeded_store.eval_judgements(job.id)}
    assert 1 <= len(kept) < 24, "the kill did not land mid-run"

    jobs.resume(seeded_store, job.id)
    job = finish(seeded_store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error
    answers = Counter((r["model"], r["prompt_id"]) for r in job.run.read_shard_rows("eval_answers"))
    verdicts = Counter(
        (r["metric"], r["prompt_id"]) for r in job.run.read_shard_rows("eval_judgements")
    )
    assert len(answers) == 24 and max(answers.values()) == 1  # written once each: no redo
    assert len(verdicts) == 24 and max(verdicts.values()) == 1
    assert kept <= set(verdicts)
    assert len(seeded_store.eval_results(job.id)) == 6  # refusal x2, chars, tokens x2, time
    loads = [e for e in job.run.events() if e["event"] == "model_loaded"]
    assert len(loads) == 1  # the answers were all there before the kill


def test_a_judge_that_fails_mid_run_keeps_the_answers_and_the_job_resumes(seeded_store, tiny_spec):
    fake = FakeOpenAI()
    try:
        fake.plan = ["ok"] * 12
        fake.then = "500"
        judge = fake.spec(retries=0, timeout=5)
        # (no check: the plan counts the verdicts' requests alone)
        settings = eval_settings([tiny_spec], judge=judge, limit=6, batch=2, helpful=None)
        job = finish(
            seeded_store, evaluation.submit_eval(seeded_store, settings).id, timeout=DEADLINE
        )
        assert job.status == "failed"
        assert "500" in job.error
        assert len(seeded_store.eval_answers(job.id)) == 6  # every answer is kept
        kept = seeded_store.eval_judgements(job.id)
        assert 1 <= len(kept) < 6  # and the verdicts finished before the failure

        fake.then = "ok"  # the endpoint is back
        jobs.resume(seeded_store, job.id)
        job = finish(seeded_store, job.id, timeout=DEADLINE)
        assert job.status == "succeeded", job.error
        assert len(seeded_store.eval_judgements(job.id)) == 6
        written = job.run.read_shard_rows("eval_answers")
        assert len(written) == 6  # none generated again
        assert len([e for e in job.run.events() if e["event"] == "model_loaded"]) == 1
    finally:
        fake.close()


def test_evaluating_a_model_that_is_gone_from_disk_names_it_and_changes_nothing(
    seeded_store, cai_home, tiny_model_dir
):
    trained = models_dir(cai_home) / "my-sft"
    shutil.copytree(tiny_model_dir, trained)
    shutil.rmtree(trained)  # deleted after training
    before = seeded_store.job_rows()
    with pytest.raises(ModelError, match="no trained model named 'my-sft'"):
        evaluation.submit_eval(seeded_store, eval_settings(["model:my-sft"], judge="model:my-sft"))
    with pytest.raises(ModelError, match=r"is not on disk: .*gone has no config.json"):
        evaluation.submit_eval(
            seeded_store, eval_settings([f"hf:{cai_home / 'gone'}"], judge="model:my-sft")
        )
    assert seeded_store.job_rows() == before

    # Deleted between submit and run: the job fails with the same message.
    job = jobs.submit(seeded_store, "eval", eval_settings(["model:my-sft"], judge="model:my-sft"))
    job = finish(seeded_store, job.id, timeout=DEADLINE)
    assert job.status == "failed"
    assert "no trained model named 'my-sft'" in job.error


def test_an_empty_eval_set_is_refused_by_name(seeded_store, tiny_spec, tmp_path):
    source = tmp_path / "few.jsonl"
    source.write_text('{"prompt": "only one"}\n')
    import_prompt_set(seeded_store, source, "few", test_fraction=0.0)  # no test split at all
    with pytest.raises(CaiError, match="prompt set 'few:test' is empty"):
        evaluation.submit_eval(
            seeded_store, eval_settings([tiny_spec], judge=tiny_spec, harmful="few:test")
        )
    with pytest.raises(CaiError, match="critique_job needs a critique job"):
        tick = jobs.submit(seeded_store, "tick", {"total": 1})
        evaluation.submit_eval(
            seeded_store, eval_settings([tiny_spec], judge=tiny_spec, critique_job=tick.id)
        )
