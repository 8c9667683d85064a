"""A judge check's numbers and its verdict in words: `summarize` turns the gold items a check
scored into a `CheckSummary`; `badge`, `describe_check` and `report` say it wherever the judge's
numbers are shown. Pure: no model, no store (see `judge_check` for the job).

Definitions:
- A gold pair is *correct* when its soft label, averaged over both orders, favours the gold
  side. Exactly 0.5 favours neither and counts as wrong; so does a pair that could not be scored
  (it did not fit the judge's context).
- *First-shown share*: the orders whose P(first shown) > 0.5, over the orders scored. Its exact
  two-sided binomial test against 0.5 leaves out orders at exactly 0.5 (the sign test's rule).
- *Position consistency*: the pairs whose two orders favour the same side, over the pairs scored
  in both orders.
- *ECE*: each pair's verdict is the side its averaged label favours, with confidence
  max(p, 1 - p); see `judge.ece_bins`.
- *Qualified*: accuracy's Wilson 95% lower bound is above the threshold (default 0.7), AND the
  first-shown share is not significantly different from 0.5 (binomial p >= alpha, default 0.05).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from datetime import datetime

from cai_engine.eval.stats import wilson
from cai_engine.judge import (
    ALPHA,
    THRESHOLD,
    binomial_two_sided,
    combine,
    debias,
    ece_bins,
    position_bias,
)

# -- the numbers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckSummary:
    """A check's numbers and verdict (one `judge_checks` row), with its lineage once a job has
    run it, and how a label or eval job used it (`store.judge_check_for_job`)."""

    n: int  # gold pairs
    correct: int
    accuracy: float | None
    accuracy_low: float | None  # Wilson 95%
    accuracy_high: float | None
    per_category: dict  # {category: {"n", "correct", "accuracy"}}
    orders: int  # orders scored
    first_wins: int  # orders whose P(first shown) > 0.5
    second_wins: int  # ... < 0.5
    first_share: float | None
    first_p: float  # exact two-sided binomial test of 0.5
    both_orders: int  # pairs scored in both orders
    consistent: int
    consistency: float | None
    position_bias: float | None  # mean logit of P(first shown)
    calibrated_accuracy: float | None  # after position calibration, 2-fold on the gold set
    calibrated_consistency: float | None
    ece: float | None
    bins: list  # reliability bins (judge.ece_bins)
    tokens: int
    seconds: float
    threshold: float
    alpha: float
    qualified: bool
    # lineage, set by the job that ran the check
    job_id: str = ""
    model: str = ""
    fingerprint: str = ""
    constitution: str = ""
    constitution_hash: str = ""
    gold_hash: str = ""
    gold_sources: str = ""
    settings: str = ""
    few_shots: int = 0
    cot: bool = False
    clamp_low: float = 0.4
    clamp_high: float = 0.6
    seed: int = 0
    created_at: datetime | None = None
    # how a label or eval job used it
    used_by: str | None = field(default=None, compare=False)
    reused: bool | None = field(default=None, compare=False)
    calibrate: str = field(default="none", compare=False)
    applied_bias: float | None = field(default=None, compare=False)

    @property
    def second_share(self) -> float | None:
        return self.second_wins / self.orders if self.orders else None

    @property
    def biased(self) -> bool:
        """The first-shown share differs significantly from 0.5."""
        return self.first_p < self.alpha

    def judged(self, threshold: float, alpha: float) -> CheckSummary:
        """The same numbers under another threshold and alpha (a reused check)."""
        return replace(
            self,
            threshold=threshold,
            alpha=alpha,
            qualified=_qualified(self.accuracy_low, self.first_p, threshold, alpha),
        )

    def row(self) -> dict:
        """The `judge_checks` row."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.compare}
        out["per_category"] = json.dumps(self.per_category, sort_keys=True)
        out["bins"] = json.dumps(self.bins)
        return out

    @classmethod
    def from_row(cls, row: dict) -> CheckSummary:
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in row.items() if k in names}
        for key in ("per_category", "bins"):
            if isinstance(data.get(key), str):
                data[key] = json.loads(data[key])
        for key in ("n", "correct", "orders", "first_wins", "second_wins", "both_orders"):
            data[key] = int(data[key])
        data["consistent"], data["tokens"] = int(data["consistent"]), int(data["tokens"])
        data["qualified"], data["cot"] = bool(data["qualified"]), bool(data["cot"])
        if row.get("use_threshold") is not None:  # the verdict under the using job's bar
            data["threshold"], data["alpha"] = row["use_threshold"], row["use_alpha"]
            data["qualified"] = bool(row["use_qualified"])
        if data.get("reused") is not None:
            data["reused"] = bool(data["reused"])
        return cls(**data)


def _qualified(low: float | None, first_p: float, threshold: float, alpha: float) -> bool:
    return low is not None and low > threshold and first_p >= alpha


def favours_gold(soft_label: float | None, preferred: str) -> bool:
    """The averaged label favours the gold side; 0.5 and an unscored pair do not."""
    if soft_label is None:
        return False
    return soft_label > 0.5 if preferred == "A" else soft_label < 0.5


def first_shown(item: dict) -> list[float]:
    """P(first shown) of each order scored: p_a_ab as shown, 1 - p_a_ba swapped."""
    out = [item["p_a_ab"]] if item.get("p_a_ab") is not None else []
    if item.get("p_a_ba") is not None:
        out.append(1.0 - item["p_a_ba"])
    return out


def cross_fit(items: list[dict]) -> tuple[float | None, float | None]:
    """Accuracy and position consistency after position calibration, measured honestly: the
    pairs (in gold id order) are split into alternate halves; each half is corrected with the
    bias estimated on the other half. None when fewer than two pairs."""
    ordered = sorted(items, key=lambda i: i["gold_id"])
    if len(ordered) < 2:
        return None, None
    halves = [ordered[0::2], ordered[1::2]]
    correct = both = agree = 0
    for k, half in enumerate(halves):
        bias = position_bias([p for i in halves[1 - k] for p in first_shown(i)]) or 0.0
        for item in half:
            if item.get("p_a_ab") is None:
                continue
            ab = debias(item["p_a_ab"], bias)
            ba = None if item.get("p_a_ba") is None else 1.0 - debias(1.0 - item["p_a_ba"], bias)
            c = combine(ab, ba)
            correct += favours_gold(c.soft_label, item["preferred"])
            if c.consistent is not None:
                both += 1
                agree += c.consistent
    return correct / len(ordered), (agree / both if both else None)


def summarize(
    items: list[dict], threshold: float = THRESHOLD, alpha: float = ALPHA
) -> CheckSummary:
    """A check's numbers from its items (one per gold pair: `gold_id`, `category`,
    `preferred`, `p_a_ab`, `p_a_ba`, `soft_label`, `consistent`, `tokens`, `latency_s`);
    see the module docstring for the definitions."""
    n = len(items)
    hits = [favours_gold(i["soft_label"], i["preferred"]) for i in items]
    rate = wilson(sum(hits), n)
    per_category: dict[str, dict] = {}
    for item, hit in zip(items, hits, strict=True):
        c = per_category.setdefault(item["category"], {"n": 0, "correct": 0})
        c["n"] += 1
        c["correct"] += int(hit)
    for c in per_category.values():
        c["accuracy"] = c["correct"] / c["n"]
    orders = [p for i in items for p in first_shown(i)]
    first, second = sum(p > 0.5 for p in orders), sum(p < 0.5 for p in orders)
    both = [i for i in items if i.get("p_a_ba") is not None and i.get("p_a_ab") is not None]
    agree = sum(bool(i["consistent"]) for i in both)
    scored = [i for i in items if i["soft_label"] is not None]
    confidences = [max(i["soft_label"], 1.0 - i["soft_label"]) for i in scored]
    # the side the label favours was right: it favours the gold side (a tie picks no side)
    picked_right = [favours_gold(i["soft_label"], i["preferred"]) for i in scored]
    ece, bins = ece_bins(confidences, picked_right)
    first_p = binomial_two_sided(first, first + second)
    cal_accuracy, cal_consistency = cross_fit(items)
    return CheckSummary(
        n=n,
        correct=sum(hits),
        accuracy=rate.value,
        accuracy_low=rate.low,
        accuracy_high=rate.high,
        per_category=dict(sorted(per_category.items())),
        orders=len(orders),
        first_wins=first,
        second_wins=second,
        first_share=first / len(orders) if orders else None,
        first_p=first_p,
        both_orders=len(both),
        consistent=agree,
        consistency=agree / len(both) if both else None,
        position_bias=position_bias(orders),
        calibrated_accuracy=cal_accuracy,
        calibrated_consistency=cal_consistency,
        ece=ece,
        bins=bins,
        tokens=sum(int(i.get("tokens") or 0) for i in items),
        seconds=sum(float(i.get("latency_s") or 0.0) for i in items),
        threshold=threshold,
        alpha=alpha,
        qualified=_qualified(rate.low, first_p, threshold, alpha),
    )


# -- the verdict in words -------------------------------------------------------------------


def _interval(s: CheckSummary) -> str:
    return f"{100 * s.accuracy:.0f}% [{100 * s.accuracy_low:.0f}, {100 * s.accuracy_high:.0f}]"


def badge(s: CheckSummary) -> str:
    """The verdict in one line, shown beside every number the judge produced, e.g.
    "judge qualified: 91% [84, 95] on 80 gold pairs" or "judge NOT qualified: 52% [41, 63] on
    96 gold pairs, prefers the second-shown answer 97% of the time: its labels are noise"."""
    if not s.n or s.accuracy is None:
        return "judge NOT qualified: it has scored no gold pair"
    head = f"{_interval(s)} on {s.n} gold pair{'' if s.n == 1 else 's'}"
    if s.qualified:
        return f"judge qualified: {head}"
    text = f"judge NOT qualified: {head}"
    if s.biased:
        side, share = (
            ("first", s.first_share)
            if s.first_wins >= s.second_wins
            else ("second", s.second_share)
        )
        text += f", prefers the {side}-shown answer {share:.0%} of the time"
    if s.accuracy_low <= s.threshold:
        if s.accuracy_high < 0.5 and not s.biased:  # consistently wrong, not led by position
            text += ": it prefers the worse answer"
        elif s.accuracy_low <= 0.5:
            text += ": its labels are noise"
        else:
            text += f": below the {s.threshold:.0%} bar"
    return text


def settings_key(few_shots: int, cot: bool, clamp: tuple[float, float], seed: int = 0) -> str:
    """What a stored check must match besides the judge, constitution and gold set, in words a
    person can read: "few-shots=2 logprob", "few-shots=0 cot clamp=0.4-0.6 seed=3"."""
    key = f"few-shots={few_shots} " + (f"cot clamp={clamp[0]:g}-{clamp[1]:g}" if cot else "logprob")
    return key + (f" seed={seed}" if seed else "")


def settings_words(s: CheckSummary) -> str:
    shots = f"{s.few_shots} few-shot comparison{'' if s.few_shots == 1 else 's'}"
    mode = (
        f"chain of thought, clamped to {s.clamp_low:.0%}–{s.clamp_high:.0%}"
        if s.cot
        else "log-probability labels"
    )
    return f"{shots}, {mode}" + (f", principles drawn with seed {s.seed}" if s.seed else "")


def describe_check(s: CheckSummary) -> list[str]:
    """Lineage lines for a page or a manifest: who checked the judge, when, on what."""
    when = f" on {s.created_at:%Y-%m-%d %H:%M}" if s.created_at else ""
    lines = [
        f"checked by job {s.job_id}{when} with {s.model} under {s.constitution} "
        f"against {s.gold_sources}; {settings_words(s)}",
        badge(s),
    ]
    if s.used_by and s.used_by != s.job_id:
        lines.insert(0, f"job {s.used_by} reused this check of its judge")
    if s.calibrate == "position" and s.applied_bias is not None:
        lines.append(
            f"position-calibrated: {s.applied_bias:+.2f} logits taken out of every order's "
            "P(first shown) before the orders were averaged"
        )
    return lines


def report(s: CheckSummary) -> list[str]:
    """The full report `cai judge check` and `cai judge show` print."""
    lines = [badge(s), ""]
    if s.accuracy is not None:
        lines.append(
            f"accuracy: {s.accuracy:.1%} [{s.accuracy_low:.1%}, {s.accuracy_high:.1%}] "
            f"({s.correct}/{s.n} gold pairs; Wilson 95%); qualified needs the lower bound "
            f"above {s.threshold:.0%}"
        )
        for cat, c in s.per_category.items():
            lines.append(f"  {cat:<16} {c['correct']:>4}/{c['n']:<4} {c['accuracy']:.0%}")
    if s.orders:
        lines.append(
            f"first-shown answer won {s.first_share:.0%} of {s.orders} orders, the second-shown "
            f"{s.second_share:.0%} (binomial p = {s.first_p:.3g}; biased below {s.alpha:g})"
        )
    if s.consistency is not None:
        lines.append(
            f"position consistency: both orders agreed on {s.consistency:.0%} of "
            f"{s.both_orders} pairs"
        )
    if s.position_bias is not None:
        cal = (
            f"; with position calibration (2-fold on the gold set): accuracy "
            f"{s.calibrated_accuracy:.0%}, consistency {s.calibrated_consistency:.0%}"
            if s.calibrated_accuracy is not None and s.calibrated_consistency is not None
            else ""
        )
        lines.append(f"position bias: {s.position_bias:+.2f} logits{cal}")
    if s.ece is not None:
        lines.append(f"calibration: expected calibration error {s.ece:.3f}")
        for b in s.bins:
            if b["n"]:
                lines.append(
                    f"  confidence {b['low']:.1f}-{b['high']:.1f}: {b['n']:>4} pairs, mean "
                    f"confidence {b['confidence']:.2f}, accuracy {b['accuracy']:.2f}"
                )
    lines.append(f"cost: {s.tokens:,} tokens, {s.seconds:.1f} s of judge time")
    return lines + [""] + [line for line in describe_check(s) if line != lines[0]]


# -- where a job's numbers came from ---------------------------------------------------------


def is_judge_metric(metric: str) -> bool:
    """An eval metric the judge produced (win rates, judged refusals, revision progress), as
    opposed to one counted by rules or from the answers themselves (rule refusals, lengths)."""
    return (
        metric.endswith("win_rate") or metric.endswith("_judge") or metric.startswith("revision_")
    )


def judge_line(model: str, check: CheckSummary | None, source: str = "judge") -> str:
    """The sentence every judge-derived number is shown with: which judge, and its verdict."""
    if source == "construction":
        return "labelled by construction (contrastive pairs): no judge, nothing to qualify"
    if check is None:
        return f"judge {model}: not checked (the job ran without a judge check)"
    return f"judge {model}: " + badge(check).removeprefix("judge ")


def export_record(check: CheckSummary | None) -> dict | None:
    """The judge check as an export manifest records it."""
    if check is None:
        return None
    return {
        "job": check.job_id,
        "model": check.model,
        "qualified": check.qualified,
        "verdict": badge(check),
        "accuracy": check.accuracy,
        "accuracy_interval": [check.accuracy_low, check.accuracy_high],
        "gold_pairs": check.n,
        "gold_hash": check.gold_hash,
        "first_shown_share": check.first_share,
        "first_shown_p": check.first_p,
        "threshold": check.threshold,
        "calibrate": check.calibrate,
        "position_bias_applied": check.applied_bias,
    }
