"""The eval job's summary: one row per model and metric, with its interval and sample size."""

from __future__ import annotations

import json
from dataclasses import dataclass

from cai_engine.eval.config import EvalConfig
from cai_engine.eval.refusals import REFUSAL_PATTERNS
from cai_engine.eval.revisions import RoundProgress
from cai_engine.eval.stats import Rate, bootstrap_ci, wilson
from cai_engine.store import eval_summary

METRICS: dict[str, str] = {
    "harmlessness_win_rate": "Harmlessness win rate vs the reference (soft; ties count 1/2)",
    "helpfulness_win_rate": "Helpfulness win rate vs the reference (soft; ties count 1/2)",
    "refusal_rate_rule": "Refusal rate on red-team prompts, by the rules",
    "refusal_rate_judge": "Refusal rate on red-team prompts, by the judge",
    "over_refusal_rate_rule": "Over-refusal rate on helpful prompts, by the rules",
    "over_refusal_rate_judge": "Over-refusal rate on helpful prompts, by the judge",
    "chars_harmful": "Answer length on red-team prompts (characters)",
    "chars_helpful": "Answer length on helpful prompts (characters)",
    "tokens_per_answer": "Tokens per answer (both sets)",
    "seconds_per_answer": "Generation time per answer (its share of the batch's wall time, s)",
    "tokens_total": "Tokens generated (both sets)",
}


RATE_METRICS = {m for m in METRICS if "rate" in m}

# What a chart or table calls each metric; `METRICS` says what it measures, the key is the name
# in the store and the CLI.
METRIC_NAMES: dict[str, str] = {
    "harmlessness_win_rate": "Harmlessness win rate",
    "helpfulness_win_rate": "Helpfulness win rate",
    "refusal_rate_rule": "Refusal rate (rules)",
    "refusal_rate_judge": "Refusal rate (judge)",
    "over_refusal_rate_rule": "Over-refusal rate (rules)",
    "over_refusal_rate_judge": "Over-refusal rate (judge)",
    "chars_harmful": "Answer length, red-team (chars)",
    "chars_helpful": "Answer length, helpful (chars)",
    "tokens_per_answer": "Tokens per answer",
    "seconds_per_answer": "Seconds per answer",
    "tokens_total": "Tokens generated",
}


def metric_name(metric: str) -> str:
    """A metric's human-readable name: "Harmlessness win rate" for `harmlessness_win_rate`,
    "Revision round 2 over round 1" for `revision_round_2`; an unknown key as it is."""
    if metric.startswith("revision_round_"):
        k = int(metric.rsplit("_", 1)[1])
        return f"Revision round {k} over round {k - 1}"
    return METRIC_NAMES.get(metric, metric)


def is_rate(metric: str) -> bool:
    """Whether a metric is a share in [0, 1] (shown in percent)."""
    return metric in RATE_METRICS or metric.startswith("revision_round_")


def _result(
    job_id, model, metric, eval_set, rate: Rate, method, judge=None, reference=None, **detail
):
    return {
        "job_id": job_id,
        "model": model,
        "metric": metric,
        "eval_set": eval_set,
        "judge": judge,
        "reference": reference,
        "value": rate.value,
        "low": rate.low,
        "high": rate.high,
        "n": rate.n,
        "method": method,
        "detail": json.dumps(detail, sort_keys=True, default=str),
    }


def summarise(
    cfg: EvalConfig, job_id: str, answers, judgements, lineages, critique=None
) -> list[dict]:
    """The summary rows of answers and verdicts given as lists (as a job writes them): the
    same SQL a job runs over its shards (`summarise_tables`), over an in-memory DuckDB."""
    with eval_summary.scratch(list(answers), list(judgements)) as con:
        return summarise_tables(cfg, job_id, con, lineages, critique)


def summarise_tables(cfg: EvalConfig, job_id: str, con, lineages, critique=None) -> list[dict]:
    """The summary rows: one per model and metric, each with its interval and sample size.

    Args:
        con (`Conn`):
            A DuckDB connection with the job's `eval_answers` and `eval_judgements` (see
            `store.eval_summary`): counts and sums come from SQL aggregates, and a bootstrap
            reads the one column it resamples, never the rows.
        critique (`tuple`, *optional*):
            (the critique job, its model spec) when the job measured revision progress.
    """
    answers = eval_summary.answer_stats(con)
    verdicts = eval_summary.verdict_stats(con)
    out = []
    for spec in cfg.answering:
        mine = {s: a for (m, s), a in answers.items() if m == spec}
        fingerprints = [a["fingerprint"] for a in mine.values() if a["fingerprint"]]
        s = _Summary(
            cfg,
            job_id,
            spec,
            con,
            verdicts,
            common={
                "lineage": lineages.get(spec, {}),
                "fingerprint": min(fingerprints) if fingerprints else None,
            },
        )
        # 1) per prompt set: win rate against the reference, refusal rates, answer length
        for role, set_name in cfg.set_names().items():
            if spec != cfg.ref_model:
                out.append(s.win_rate(role, set_name))
            out += s.refusal_rates(role, set_name)
            out.append(s.chars(role, set_name))
        # 2) over both sets: what answering cost
        out += s.costs(mine)
    # 3) the critique job's revisions, round against round
    if critique:
        out += _revision_progress(cfg, job_id, con, *critique)
    return out


@dataclass
class _Summary:
    """The summary rows of one answering model (`spec`)."""

    cfg: EvalConfig
    job_id: str
    spec: str
    con: object  # the tables' connection: the bootstraps read their columns from it
    verdicts: dict[tuple[str, str, str], dict]  # `eval_summary.verdict_stats`
    common: dict  # detail every row of the model carries: its lineage and fingerprint

    def result(self, metric, eval_set, rate, method, judge=None, reference=None, **detail):
        return _result(
            self.job_id,
            self.spec,
            metric,
            eval_set,
            rate,
            method,
            judge,
            reference,
            **detail,
            **self.common,
        )

    def bootstrap(self, values) -> Rate:
        return bootstrap_ci(values, rounds=self.cfg.bootstrap_rounds, seed=self.cfg.seed)

    def win_rate(self, role: str, set_name: str) -> dict:
        """Soft win rate against the reference model, with hard counts and order consistency."""
        cfg = self.cfg
        judge_metric = "harmless" if role == "harmful" else "helpful"
        v = self.verdicts.get((judge_metric, self.spec, set_name), _NO_VERDICTS)
        soft = eval_summary.verdict_values(self.con, judge_metric, self.spec, set_name)
        return self.result(
            "harmlessness_win_rate" if role == "harmful" else "helpfulness_win_rate",
            dict(cfg.sets())[role],
            self.bootstrap(soft),
            "bootstrap",
            cfg.judge,
            cfg.ref_model,
            hard_wins=v["above"],
            ties=v["ties"],
            losses=v["below"],
            consistency=v["consistent"] / v["both_orders"] if v["both_orders"] else None,
            constitution=cfg.constitution if role == "harmful" else "helpfulness",
        )

    def refusal_rates(self, role: str, set_name: str) -> list[dict]:
        """The refusal rate by the rules, and by the judge when it was asked."""
        eval_set = dict(self.cfg.sets())[role]
        v = self.verdicts.get(("refusal", self.spec, set_name), _NO_VERDICTS)
        prefix = "refusal_rate" if role == "harmful" else "over_refusal_rate"
        hits = v.get("rules", {})
        out = [
            self.result(
                f"{prefix}_rule",
                eval_set,
                wilson(v["rule_hits"], v["verdicts"]),
                "wilson",
                rules={name: hits[name] for name in REFUSAL_PATTERNS if hits.get(name)},
            )
        ]
        if self.cfg.judge_refusals:
            n = v["judged"]
            out.append(
                self.result(
                    f"{prefix}_judge",
                    eval_set,
                    wilson(v["above"], n),
                    "wilson",
                    self.cfg.judge,
                    mean_p_refusal=v["value_sum"] / n if n else None,
                    agree_with_rules=v["agree_with_rules"] / n if n else None,
                )
            )
        return out

    def chars(self, role: str, set_name: str) -> dict:
        return self.result(
            f"chars_{role}",
            dict(self.cfg.sets())[role],
            self.bootstrap(eval_summary.answer_chars(self.con, self.spec, set_name)),
            "bootstrap",
        )

    def costs(self, mine: dict[str, dict]) -> list[dict]:
        """Tokens and seconds per answer, and the tokens in all, over both sets (`mine`: the
        model's `eval_summary.answer_stats` per prompt set)."""
        all_sets = ", ".join(dict(self.cfg.sets()).values())
        order = list(self.cfg.set_names().values())
        tokens, seconds = eval_summary.answer_costs(self.con, self.spec, order)
        total = sum(int(a["tokens"]) for a in mine.values())
        return [
            self.result(
                "tokens_per_answer",
                all_sets,
                self.bootstrap(tokens),
                "bootstrap",
                truncated=sum(int(a["truncated"]) for a in mine.values()),
            ),
            self.result(
                "seconds_per_answer",
                all_sets,
                self.bootstrap(seconds),
                "bootstrap",
                reused=sum(int(a["reused"]) for a in mine.values()),
            ),
            self.result(
                "tokens_total",
                all_sets,
                Rate(total, len(tokens), float(total), None, None),
                "total",
                seconds=sum(seconds),
            ),
        ]


# a model with no verdicts of a kind: every count zero
_NO_VERDICTS = dict.fromkeys(
    ("verdicts", "judged", "value_sum", "above", "ties", "below", "both_orders", "consistent",
     "rule_hits", "agree_with_rules"),
    0,
)  # fmt: skip


def _revision_progress(cfg, job_id, con, source, critique_model: str) -> list[dict]:
    """Per round k, how often the judge preferred round k's revision to round k-1's answer."""
    progress = [
        RoundProgress(
            round=int(r["round"]),
            pairs=int(r["judged"]),
            preferred=wilson(r["value_sum"], int(r["judged"])),
            wins=wilson(int(r["above"]), int(r["judged"])),
        )
        for r in eval_summary.round_stats(con, source.id)
    ]
    return [
        _result(
            job_id,
            source.id,
            f"revision_round_{rp.round}",
            source.config.get("prompts", ""),
            rp.preferred,
            "wilson",
            cfg.judge,
            f"round {rp.round - 1}",
            hard_wins=rp.wins.k,
            hard_win_rate=rp.wins.value,
            critique_model=critique_model,
            constitution=cfg.constitution,
        )
        for rp in progress
    ]
