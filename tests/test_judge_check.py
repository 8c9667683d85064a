"""Judge qualification: the statistics on hand values, the verdict on fake scorers (perfect,
always-second, random, inverted) and on hand-built counts, position calibration removing a
constant bias exactly, the `judge-check` job on the tiny model (stored, reused, resumed after
kill -9), `cai judge check` against the fake OpenAI server, and a label job recording the check
it used.

Fake scorers are `tests.test_labels.Judge`: a `ChatModel` whose P(option (A)) is a rule on the
two options it reads; everything they score goes through `labels.label_pairs`, as a check does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
from collections import Counter
from dataclasses import replace
from datetime import datetime

import pytest

from cai_engine import export, jobs
from cai_engine.cli import main
from cai_engine.gold import as_pairs, gold_set
from cai_engine.judge import binomial_two_sided, debias, ece_bins, logit, position_bias, sigmoid
from cai_engine.judge_check import (
    CheckSummary,
    badge,
    cross_fit,
    describe_check,
    gold_item,
    report,
    settings_key,
    submit_check,
    summarize,
)
from cai_engine.labels import LabelConfig, label_pairs, submit_labels
from cai_engine.models import load_model, parse_spec
from tests.fake_openai import FakeOpenAI
from tests.runners import alive, finish, kill_runners, wait_until
from tests.test_labels import HARMLESS, Judge

DEADLINE = 120.0


@pytest.fixture(autouse=True)
def reap_runners(cai_home):
    yield
    kill_runners(cai_home)


# -- helpers -------------------------------------------------------------------------------


def gold_lines(n: int, start: int = 0) -> list[dict]:
    """`n` clear-cut gold pairs: "good answer i" beats "bad answer i", the good one shown as A
    in even pairs and as B in odd ones; categories alternate."""
    out = []
    for i in range(start, start + n):
        good, bad = f"good answer {i}", f"bad answer {i}"
        out.append(
            {
                "id": f"t-{i:03d}",
                "category": ("harmless", "quality")[i % 2],
                "conversation": [{"role": "user", "content": f"Question {i}?"}],
                "response_a": good if i % 2 == 0 else bad,
                "response_b": bad if i % 2 == 0 else good,
                "preferred": "A" if i % 2 == 0 else "B",
            }
        )
    return out


def write_gold(path, n: int, start: int = 0) -> str:
    path.write_text("\n".join(json.dumps(line) for line in gold_lines(n, start)) + "\n")
    return str(path)


def gold_of(tmp_path, n: int):
    return gold_set(bundled=False, files=[write_gold(tmp_path / "gold.jsonl", n)])


def good(text: str) -> bool:
    return text.startswith("good answer")


def check_with(judge, gold, **changes) -> tuple[CheckSummary, list[dict]]:
    """Score `gold` with the fake `judge` as a check does; its summary and items."""
    cfg = LabelConfig(pairs="gold", constitution="harmless", few_shots=0, **changes)
    by_id = {p.id: p for p in gold.pairs}
    rows = label_pairs(as_pairs(gold), HARMLESS, HARMLESS.hash, judge, cfg, job_id="check")
    items = [gold_item(r, by_id[r["prompt_id"]]) for r in rows]
    return summarize(items), items


def item(preferred="A", p_a_ab=0.8, p_a_ba=0.8, category="harmless", gold_id="g") -> dict:
    """A hand-built gold item: its soft label and consistency as `combine` makes them."""
    soft = (p_a_ab + p_a_ba) / 2
    return {
        "gold_id": gold_id,
        "category": category,
        "preferred": preferred,
        "p_a_ab": p_a_ab,
        "p_a_ba": p_a_ba,
        "soft_label": soft,
        "consistent": (p_a_ab - 0.5) * (p_a_ba - 0.5) > 0,
        "tokens": 10,
        "latency_s": 0.5,
    }


def items_of(right: int, wrong: int, **kw) -> list[dict]:
    """`right` pairs labelled 0.8 for their gold side A, `wrong` labelled 0.2: each pair's two
    orders split one first-shown win and one second-shown win."""
    return [item(p_a_ab=0.8, p_a_ba=0.8, gold_id=f"r{i:03d}", **kw) for i in range(right)] + [
        item(p_a_ab=0.2, p_a_ba=0.2, gold_id=f"w{i:03d}", **kw) for i in range(wrong)
    ]


# -- the statistics on hand values ---------------------------------------------------------


def test_the_binomial_test_is_exact_on_hand_values():
    assert binomial_two_sided(0, 10) == 2 / 1024  # 2 * C(10, 0) / 2^10
    assert binomial_two_sided(10, 10) == 2 / 1024
    assert binomial_two_sided(9, 10) == pytest.approx(22 / 1024)  # 2 * (1 + 10) / 2^10
    assert binomial_two_sided(3, 10) == pytest.approx(352 / 1024)  # 2 * (1 + 10 + 45 + 120)
    assert binomial_two_sided(5, 10) == 1.0  # the middle: capped at 1
    assert binomial_two_sided(0, 0) == 1.0
    # 2 * (1 + 20 + 190 + 1140 + 4845 + 15504) / 2^20 = 43400 / 1048576
    assert binomial_two_sided(15, 20) == pytest.approx(43400 / 1048576)
    assert binomial_two_sided(0, 5000) == 0.0  # exact integers: no overflow, just tiny
    with pytest.raises(ValueError, match="need 0 <= k <= n"):
        binomial_two_sided(11, 10)


def test_ece_and_its_bins_on_hand_values():
    ece, bins = ece_bins([0.55, 0.95, 0.95, 1.0], [True, True, False, True])
    # bin [0.5, 0.6): one verdict, confidence 0.55, accuracy 1: |1 - 0.55| * 1/4 = 0.1125
    # bin [0.9, 1.0]: three, confidence 0.9667, accuracy 0.6667: 0.3 * 3/4 = 0.225
    assert ece == pytest.approx(0.3375)
    assert [b["n"] for b in bins] == [1, 0, 0, 0, 3]
    assert [(b["low"], b["high"]) for b in bins][0] == (0.5, 0.6)
    assert bins[4]["confidence"] == pytest.approx(2.9 / 3)
    assert bins[4]["accuracy"] == pytest.approx(2 / 3)
    assert bins[1]["confidence"] is None and bins[1]["accuracy"] is None
    assert ece_bins([], []) == (None, ece_bins([], [])[1])
    with pytest.raises(ValueError, match=r"confidence must lie in \[0.5, 1\]"):
        ece_bins([0.3], [True])


def test_position_calibration_arithmetic_on_constructed_logits():
    # logits 3 and -1 average to a bias of 1; taking it out leaves 2 and -2
    p = [sigmoid(3.0), sigmoid(-1.0)]
    assert position_bias(p) == pytest.approx(1.0)
    assert debias(p[0], 1.0) == pytest.approx(sigmoid(2.0))
    assert debias(p[1], 1.0) == pytest.approx(sigmoid(-2.0))
    assert logit(sigmoid(0.7)) == pytest.approx(0.7)
    assert position_bias([]) is None
    assert debias(0.5, 0.0) == 0.5


# -- the verdict on hand-built counts ------------------------------------------------------


def test_the_threshold_is_on_the_lower_wilson_bound():
    # 45/50: Wilson 95% [0.7864, 0.9565]: above 0.7, and first-shown wins 50 of 100 orders
    s = summarize(items_of(45, 5))
    assert (s.n, s.correct, s.accuracy) == (50, 45, 0.9)
    assert s.accuracy_low == pytest.approx(0.7863976856) and s.accuracy_high == pytest.approx(
        0.9565242351
    )
    assert (s.orders, s.first_wins, s.second_wins, s.first_p) == (100, 50, 50, 1.0)
    assert s.qualified
    assert badge(s) == "judge qualified: 90% [79, 96] on 50 gold pairs"
    # 40/50: Wilson [0.6696, 0.8876]: the point is above 0.7, the lower bound is not
    s = summarize(items_of(40, 10))
    assert s.accuracy_low == pytest.approx(0.6696289407)
    assert not s.qualified
    assert badge(s) == "judge NOT qualified: 80% [67, 89] on 50 gold pairs: below the 70% bar"
    # the bar is strict, and a stored check can be judged under another
    assert not summarize(items_of(45, 5), threshold=0.7863976856252035).qualified
    assert summarize(items_of(40, 10)).judged(0.6, 0.05).qualified


def test_significant_position_bias_disqualifies_an_accurate_judge():
    # 20 pairs, all right (gold side A, soft 0.65) but P(first) = 0.9 as shown, 0.6 swapped:
    # every one of the 40 orders goes to the first-shown answer.
    s = summarize([item(p_a_ab=0.9, p_a_ba=0.4, gold_id=f"g{i}") for i in range(20)])
    assert (s.correct, s.first_wins, s.orders) == (20, 40, 40)
    assert s.accuracy_low > 0.8 and s.first_p == pytest.approx(2 / 2**40)
    assert not s.qualified and s.biased
    assert badge(s) == (
        "judge NOT qualified: 100% [84, 100] on 20 gold pairs, prefers the first-shown answer "
        "100% of the time"
    )
    assert s.consistency == 0.0  # the orders disagree on every pair
    # 15 first-shown wins of 20 orders: p = 0.0414 < 0.05; 14 of 20: p = 0.1153, not biased
    fifteen = [item(p_a_ab=0.9, p_a_ba=0.4, gold_id=f"a{i}") for i in range(5)]
    fifteen += [item(p_a_ab=0.9, p_a_ba=0.9, gold_id=f"b{i}") for i in range(5)]
    s = summarize(fifteen)
    assert (s.first_wins, s.second_wins) == (15, 5) and s.first_p == pytest.approx(0.0413894653)
    assert s.biased
    fourteen = fifteen[:4] + [item(p_a_ab=0.9, p_a_ba=0.9, gold_id="c")] + fifteen[5:]
    s = summarize(fourteen)
    assert (s.first_wins, s.second_wins) == (14, 6) and not s.biased


def test_a_tie_counts_as_wrong_and_an_unscored_pair_too():
    unscored = {**item(gold_id="x"), "p_a_ab": None, "p_a_ba": None, "soft_label": None}
    s = summarize([item(p_a_ab=0.7, p_a_ba=0.3, gold_id="tie"), unscored, item(gold_id="ok")])
    assert (s.n, s.correct) == (3, 1)
    assert s.orders == 4  # the unscored pair has no order
    assert s.both_orders == 2 and s.consistent == 1


def test_per_category_accuracy_cost_and_ece_of_a_check():
    items = items_of(3, 1, category="quality") + items_of(2, 0, category="harmless")
    for i, it in enumerate(items):
        it["gold_id"] = f"g{i}"
    s = summarize(items)
    assert s.per_category == {
        "harmless": {"n": 2, "correct": 2, "accuracy": 1.0},
        "quality": {"n": 4, "correct": 3, "accuracy": 0.75},
    }
    assert (s.tokens, s.seconds) == (60, 3.0)
    # every label is 0.8 or 0.2: confidence 0.8, right 5 times of 6: ECE = |5/6 - 0.8|
    assert s.ece == pytest.approx(abs(5 / 6 - 0.8))
    assert [b["n"] for b in s.bins] == [0, 0, 0, 6, 0]


# -- the verdict on fake scorers -----------------------------------------------------------


def test_a_perfect_scorer_is_qualified(tmp_path):
    s, _ = check_with(
        Judge(lambda first, second: 0.9 if good(first) else 0.1), gold_of(tmp_path, 40)
    )
    # 40/40: Wilson [0.9124, 1]; each pair's orders split first and second: share 0.5, p = 1
    assert (s.correct, s.accuracy, s.first_share, s.first_p) == (40, 1.0, 0.5, 1.0)
    assert s.consistency == 1.0 and s.qualified
    assert badge(s) == "judge qualified: 100% [91, 100] on 40 gold pairs"
    assert s.position_bias == pytest.approx(0.0, abs=1e-12)


def test_an_always_second_scorer_is_flagged_biased_and_unqualified(tmp_path):
    s, _ = check_with(Judge(lambda first, second: 0.2), gold_of(tmp_path, 40))
    assert (s.first_wins, s.second_wins, s.orders) == (0, 80, 80)
    assert s.biased and not s.qualified and s.consistency == 0.0
    assert s.position_bias == pytest.approx(math.log(0.25))  # logit(0.2)
    # every soft label is exactly 0.5 (0.2 and 0.8 averaged): a tie, wrong on every pair
    assert s.correct == 0
    assert badge(s) == (
        "judge NOT qualified: 0% [0, 9] on 40 gold pairs, prefers the second-shown answer 100% "
        "of the time: its labels are noise"
    )


def test_a_random_scorer_is_near_half_and_unqualified(tmp_path):
    def coin(first, second):  # a fixed pseudo-random P(first) per question
        digest = hashlib.sha256(f"{first}|{second}".encode()).digest()
        return 0.05 + 0.9 * int.from_bytes(digest[:4], "big") / 2**32

    s, _ = check_with(Judge(coin), gold_of(tmp_path, 200))
    assert 0.4 < s.accuracy < 0.6 and s.accuracy_low < 0.5 < s.accuracy_high
    assert not s.qualified and not s.biased
    assert badge(s).endswith(": its labels are noise")
    assert 0.35 < s.consistency < 0.65


def test_an_inverted_scorer_is_unqualified(tmp_path):
    s, _ = check_with(
        Judge(lambda first, second: 0.1 if good(first) else 0.9), gold_of(tmp_path, 40)
    )
    assert (s.correct, s.consistency, s.first_share) == (0, 1.0, 0.5)
    assert not s.qualified and not s.biased
    assert (
        badge(s) == "judge NOT qualified: 0% [0, 9] on 40 gold pairs: it prefers the worse answer"
    )


# -- position calibration ------------------------------------------------------------------


def biased_judge(bias: float, strength: float = 2.0) -> Judge:
    """logit P(first) = +-strength (the better answer first or second) + bias."""
    return Judge(lambda first, second: sigmoid((strength if good(first) else -strength) + bias))


def test_calibration_removes_a_constant_logit_bias_exactly(tmp_path):
    gold = gold_of(tmp_path, 12)
    raw, items = check_with(biased_judge(-2.5), gold)
    # Each pair's orders read logits +2 - 2.5 and -2 - 2.5: their mean is the bias, exactly.
    assert raw.position_bias == pytest.approx(-2.5, abs=1e-9)
    assert raw.consistency == 0.0 and raw.first_share == 0.0  # -0.5 and -4.5: second wins
    assert raw.calibrated_accuracy == pytest.approx(1.0) and raw.calibrated_consistency == 1.0

    pairs = as_pairs(gold)
    cfg = LabelConfig(pairs="gold", constitution="harmless", few_shots=0, calibrate="position")
    fixed = label_pairs(
        pairs, HARMLESS, HARMLESS.hash, biased_judge(-2.5), cfg, position_bias=raw.position_bias
    )
    clean = label_pairs(
        pairs,
        HARMLESS,
        HARMLESS.hash,
        biased_judge(0.0),
        cfg.model_copy(update={"calibrate": "none"}),
    )
    for got, want in zip(fixed, clean, strict=True):
        assert got["p_a_ab"] == pytest.approx(want["p_a_ab"], abs=1e-9)
        assert got["p_a_ba"] == pytest.approx(want["p_a_ba"], abs=1e-9)
        assert got["consistent"] is True and got["winner"] == want["winner"]
    # without the bias it refuses, rather than label uncalibrated
    with pytest.raises(Exception, match="needs the judge's position bias"):
        label_pairs(pairs, HARMLESS, HARMLESS.hash, biased_judge(-2.5), cfg)
    with pytest.raises(Exception, match="keep judge_check on"):
        LabelConfig(pairs="x", constitution="harmless", calibrate="position", judge_check=False)


def test_cross_fitting_estimates_the_bias_on_the_other_half():
    # Each pair's orders read logits +1 + b (A first) and -1 + b (B first), with b = 1 for the
    # even gold ids and b = 3 for the odd ones: the two halves of the split.
    def pair(i, bias):
        return item(p_a_ab=sigmoid(1 + bias), p_a_ba=1 - sigmoid(-1 + bias), gold_id=f"g{i:02d}")

    items = [pair(i, 1.0 if i % 2 == 0 else 3.0) for i in range(8)]
    accuracy, consistency = cross_fit(items)
    # The even half is corrected by the odd half's b = 3: logits -1 and -3, so P(A) is
    # sigmoid(-1) as shown and sigmoid(3) swapped: the average favours A (right) but the orders
    # disagree. The odd half, corrected by 1, reads 3 and 1: the same. Corrected in-sample,
    # every pair would have been consistent.
    assert accuracy == 1.0 and consistency == 0.0
    assert cross_fit(items[:1]) == (None, None)


# -- the words -----------------------------------------------------------------------------


def test_lineage_lines_say_who_checked_what():
    s = replace(
        summarize(items_of(45, 5)),
        job_id="judge-check-1",
        model="hf:x",
        constitution="harmless@3",
        gold_sources="the bundled gold set (50 pairs)",
        few_shots=2,
        created_at=datetime(2026, 1, 2, 3, 4),
    )
    lines = describe_check(s)
    assert lines[0] == (
        "checked by job judge-check-1 on 2026-01-02 03:04 with hf:x under harmless@3 against the "
        "bundled gold set (50 pairs); 2 few-shot comparisons, log-probability labels"
    )
    assert lines[1] == badge(s)
    used = replace(s, used_by="label-9", calibrate="position", applied_bias=-1.25)
    assert describe_check(used)[0] == "job label-9 reused this check of its judge"
    assert describe_check(used)[-1].startswith("position-calibrated: -1.25 logits")
    text = "\n".join(report(s))
    assert "accuracy: 90.0% [78.6%, 95.7%] (45/50 gold pairs; Wilson 95%)" in text
    assert "first-shown answer won 50% of 100 orders" in text
    assert settings_key(2, False, (0.4, 0.6)) == "few-shots=2 logprob"
    assert settings_key(0, True, (0.4, 0.6), 3) == "few-shots=0 cot clamp=0.4-0.6 seed=3"


# -- the job on the tiny model -------------------------------------------------------------


def test_a_check_job_stores_its_summary_and_is_reused(seeded_store, tiny_spec, tmp_path):
    gold_file = write_gold(tmp_path / "mine.jsonl", 4)
    settings = {"model": tiny_spec, "constitution": "harmless", "gold_files": [gold_file]}
    settings |= {"bundled": False, "few_shots": 2}
    job, found = submit_check(seeded_store, settings)
    assert found is None
    version = seeded_store.get_version("harmless")
    assert job.config["constitution"] == version.pinned and job.config["gold_hash"]
    job = finish(seeded_store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error

    # 4 pairs of the file + the harmless constitution's 5 comparison few-shots less the 2 shown
    s = seeded_store.judge_check_for_job(job.id)
    assert s.n == 7 and s.job_id == job.id and s.orders == 14
    assert (s.model, s.constitution, s.constitution_hash) == (
        str(parse_spec(tiny_spec)),
        version.ref,
        version.hash,
    )
    assert s.gold_hash == job.config["gold_hash"] and s.settings == "few-shots=2 logprob"
    assert "mine.jsonl (4 pairs)" in s.gold_sources and "few-shots of harmless@" in s.gold_sources
    assert len(s.fingerprint) == 16 and s.created_at is not None
    items = seeded_store.judge_check_items(job.id)
    assert sorted(i["gold_id"] for i in items) == sorted(
        ["t-000", "t-001", "t-002", "t-003", "few-shot-harmless-3", "few-shot-harmless-4", "few-shot-harmless-5"]
    )  # fmt: skip
    assert s.correct == sum(i["correct"] for i in items)
    # the stored summary reads back as it was computed from the items
    assert s.consistent == sum(i["consistent"] for i in items) and s.both_orders == 7
    want = summarize(items)
    assert (s.first_wins, s.second_wins, s.per_category, s.bins) == (
        want.first_wins, want.second_wins, want.per_category, want.bins
    )  # fmt: skip
    assert s.position_bias == pytest.approx(want.position_bias) and s.qualified == want.qualified
    assert (job.live["done"], job.live["total"], job.unit) == (7, 7, "gold pairs")
    assert job.tokens == s.tokens > 0

    # the same judge, constitution, gold and settings: reused, under the asker's threshold
    again, reused = submit_check(seeded_store, {**settings, "threshold": 0.1})
    assert again is None and reused.job_id == job.id and reused.threshold == 0.1
    # other settings, or --rerun: a new job
    other, none = submit_check(seeded_store, {**settings, "few_shots": 0}, rerun=False)
    assert none is None and other.id != job.id
    rerun, none = submit_check(seeded_store, settings, rerun=True)
    assert none is None and rerun.id not in (job.id, other.id)
    assert finish(seeded_store, other.id, timeout=DEADLINE).status == "succeeded"
    assert seeded_store.judge_check_for_job(other.id).n == 9  # no few-shot shown: all 5 are gold


def test_a_killed_check_resumes_with_one_item_per_gold_pair(seeded_store, tiny_spec, tmp_path):
    gold_file = write_gold(tmp_path / "many.jsonl", 40)
    settings = {"model": tiny_spec, "gold_files": [gold_file], "bundled": False}
    settings |= {"few_shots": 0, "batch_pairs": 2}
    job, _ = submit_check(seeded_store, settings)
    wait_until(lambda: job.run.shards("judge_check_items"), "a first item shard", timeout=60)
    pid = jobs.get_job(seeded_store, job.id).pid
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), "the killed runner to die", timeout=10)
    assert job.id in jobs.reconcile(seeded_store)
    assert jobs.get_job(seeded_store, job.id).status == "interrupted"
    kept = {r["gold_id"] for r in job.run.read_shard_rows("judge_check_items")}
    assert 2 <= len(kept) < 45, "the kill did not land mid-run"

    jobs.resume(seeded_store, job.id)
    job = finish(seeded_store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error and job.attempts == 2
    written = Counter(r["gold_id"] for r in job.run.read_shard_rows("judge_check_items"))
    assert len(written) == 45 and max(written.values()) == 1  # 40 + 5 few-shots, none twice
    s = seeded_store.judge_check_for_job(job.id)
    assert s.n == 45 and len(seeded_store.judge_check_items(job.id)) == 45


def test_a_check_refuses_a_gold_set_that_changed_since_submit(seeded_store, tiny_spec, tmp_path):
    path = tmp_path / "g.jsonl"
    write_gold(path, 3)
    job = jobs.submit(
        seeded_store,
        "judge-check",
        {"model": tiny_spec, "gold_files": [str(path)], "bundled": False, "gold_hash": "0" * 64},
    )
    job = finish(seeded_store, job.id, timeout=DEADLINE)
    assert job.status == "failed"
    assert "the gold set changed since this check was submitted" in job.error


# -- a label job records the check it used -------------------------------------------------


def test_a_label_job_runs_a_check_then_the_next_one_reuses_it(pairs_job, tiny_spec, tmp_path):
    store, pairs = pairs_job
    tiny = load_model(tiny_spec, tmp_path / "tiny-home")
    settings = {"pairs": pairs.id, "constitution": "harmless", "model": tiny_spec}
    settings |= {"few_shots": 0, "limit": 4, "calibrate": "position"}
    first = finish(store, submit_labels(store, settings).id, timeout=DEADLINE)
    assert first.status == "succeeded", first.error

    check = store.judge_check_for_job(first.id)
    assert check.job_id == first.id and check.used_by == first.id and check.reused is False
    bundled = len(gold_set(bundled=True))
    assert check.n == bundled + 5 and check.settings == "few-shots=0 logprob"
    assert check.calibrate == "position" and check.applied_bias == pytest.approx(
        check.position_bias
    )
    (event,) = [e for e in first.run.events() if e.get("event") == "judge_check"]
    assert event["check_job"] == first.id and event["badge"] == badge(check)
    assert event["position_bias"] == pytest.approx(check.position_bias)
    (metric,) = [m for m in first.run.metrics() if "judge_check" in m]
    assert metric["judge_qualified"] == check.qualified
    # the labels are the calibrated ones
    version = store.get_version(first.config["constitution"])
    want = label_pairs(
        store.pairs(pairs.id)[:4], version.constitution, version.hash, tiny,
        LabelConfig(**first.config), position_bias=check.position_bias,
    )  # fmt: skip
    got = {(r["prompt_id"], r["pair"]): r for r in store.labels(first.id)}
    for w in want:
        assert got[(w["prompt_id"], w["pair"])]["p_a_ab"] == pytest.approx(w["p_a_ab"], abs=1e-6)

    second = submit_labels(store, {**settings, "calibrate": "none"})
    second = finish(store, second.id, timeout=DEADLINE)
    used = store.judge_check_for_job(second.id)
    assert used.job_id == first.id and used.reused is True and used.used_by == second.id
    assert used.calibrate == "none" and used.applied_bias is None
    assert not second.run.shards("judge_checks")  # it ran none of its own

    off = submit_labels(store, {**settings, "calibrate": "none", "judge_check": False})
    off = finish(store, off.id, timeout=DEADLINE)
    assert store.judge_check_for_job(off.id) is None


# -- the CLI against an OpenAI-compatible server -------------------------------------------


@pytest.fixture
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


def test_cai_judge_check_against_an_openai_server(fake, seeded_store, tmp_path, capsys):
    gold_file = write_gold(tmp_path / "g.jsonl", 6)
    args = ["judge", "check", "--model", fake.spec(retries=0), "--constitution", "harmless"]
    args += ["--gold", gold_file, "--no-bundled-gold", "--few-shots", "0"]
    assert main([*args, "--wait"]) == 0
    out = capsys.readouterr().out
    job_id = out.splitlines()[0].removeprefix("submitted ")
    # 6 pairs of the file and the constitution's 5 comparison few-shots (none is shown). The
    # fake leans to the first option in every question (see test_labels): 22 of 22 orders.
    assert "judge NOT qualified: " in out
    assert "prefers the first-shown answer 100% of the time" in out
    assert "first-shown answer won 100% of 22 orders" in out
    assert "binomial p = 4.77e-07" in out  # 2 / 2^22
    assert f"checked by job {job_id}" in out
    assert len(fake.seen("/v1/completions")) == 44  # 11 pairs x 2 orders x 2 options

    assert main(args) == 0  # the same check again: reused, no request
    out = capsys.readouterr().out
    assert out.startswith(f"reusing the stored check {job_id}")
    assert len(fake.seen("/v1/completions")) == 44

    assert main(["judge", "show", job_id]) == 0
    assert "prefers the first-shown answer 100%" in capsys.readouterr().out
    assert main(["judge", "list"]) == 0
    listed = capsys.readouterr().out
    assert job_id in listed and "few-shots=0 logprob" in listed


def test_an_eval_job_records_the_check_of_its_judge(seeded_store, tiny_spec, capsys):
    from cai_engine import eval as evaluation

    settings = {"models": [tiny_spec], "judge": tiny_spec, "limit": 2, "few_shots": 0}
    settings |= {"helpful": None, "calibrate": "position"}
    settings["sampling"] = {"temperature": 0.7, "max_new_tokens": 4, "seed": 0}
    job = evaluation.submit_eval(seeded_store, settings)
    job = finish(seeded_store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error

    check = seeded_store.judge_check_for_job(job.id)
    assert check.job_id == job.id and check.used_by == job.id and check.reused is False
    assert check.settings == "few-shots=0 logprob"
    assert check.calibrate == "position"
    assert check.applied_bias == pytest.approx(check.position_bias)
    assert [e["check_job"] for e in job.run.events() if e["event"] == "judge_check"] == [job.id]
    assert main(["judge", "show", job.id]) == 0
    out = capsys.readouterr().out
    assert out.startswith(badge(check)) and "position-calibrated: " in out


def test_the_verdict_is_said_beside_a_label_jobs_numbers_and_gates_its_export(
    pairs_job, tiny_spec, tmp_path, monkeypatch, capsys
):
    store, pairs = pairs_job
    monkeypatch.setenv("CAI_HOME", str(store.home))
    settings = {"pairs": pairs.id, "constitution": "harmless", "model": tiny_spec}
    job = finish(store, submit_labels(store, {**settings, "few_shots": 0, "limit": 4}).id)
    assert job.status == "succeeded", job.error
    check = store.judge_check_for_job(job.id)
    assert not check.qualified  # a random tiny model

    assert main(["review", "stats", "--labels", job.id]) == 0
    out = capsys.readouterr().out
    verdict = badge(check).removeprefix("judge ")  # "NOT qualified: 44% [35, 54] on ..."
    assert out.splitlines()[1] == f"judge {job.config['model']}: {verdict}"

    # the export says which check its labels rest on, and the flag refuses an unqualified one
    out_dir = tmp_path / "refused"
    args = ["export", "prefs", "--labels", job.id, "--require-qualified-judge"]
    assert main([*args, "--out", str(out_dir)]) == 1
    err = capsys.readouterr().err
    assert f"label job {job.id} was labelled by {job.config['model']}" in err
    assert badge(check) in err and not out_dir.exists()
    result = export.export_prefs_from_labels(store, job.id, tmp_path / "kept")
    recorded = result.manifest["judge_check"]
    assert recorded["job"] == check.job_id and recorded["qualified"] is False
    assert recorded["verdict"] == badge(check) and recorded["gold_pairs"] == check.n
    on_disk = json.loads((tmp_path / "kept" / "manifest.json").read_text())
    assert on_disk["judge_check"] == recorded

    # a job's own bar: the stored check is reused and judged under it
    low = {**settings, "few_shots": 0, "limit": 2, "judge_threshold": 0.2}
    low = finish(store, submit_labels(store, low).id)
    used = store.judge_check_for_job(low.id)
    assert (used.job_id, used.reused, used.threshold) == (check.job_id, True, 0.2)

    # the same job under a bar its judge clears: the flag lets it through
    with store.connect() as con:
        con.rows("UPDATE judge_check_uses SET qualified = true WHERE job_id = ?", [job.id])
    assert main([*args, "--out", str(tmp_path / "passed")]) == 0
    out = capsys.readouterr().out
    assert "judge qualified: " in out
    passed = json.loads((tmp_path / "passed" / "manifest.json").read_text())["judge_check"]
    assert passed["qualified"] is True and passed["verdict"].startswith("judge qualified: ")
