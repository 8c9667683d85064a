"""The eval job's summary: one row per model and metric, with its interval and sample size."""

from __future__ import annotations

import json

from cai_engine.eval.config import EvalConfig
from cai_engine.eval.refusals import REFUSAL_PATTERNS
from cai_engine.eval.revisions import revision_pairs, summarise_rounds
from cai_engine.eval.stats import Rate, bootstrap_ci, wilson

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
    """The summary rows: one per model and metric, each with its interval and sample size."""
    refs = dict(cfg.sets())
    names = cfg.set_names()
    by_metric: dict[tuple[str, str, str], list[dict]] = {}
    for j in judgements:
        by_metric.setdefault((j["metric"], j["model"], j["prompt_set"]), []).append(j)
    rounds = cfg.bootstrap_rounds
    out = []
    for spec in cfg.answering:
        mine = [a for a in answers if a["model"] == spec]
        common = {
            "lineage": lineages.get(spec, {}),
            "fingerprint": mine[0]["fingerprint"] if mine else None,
        }
        for role, set_name in names.items():
            eval_set = refs[role]
            set_answers = [a for a in mine if a["prompt_set"] == set_name]
            win_metric = "harmlessness_win_rate" if role == "harmful" else "helpfulness_win_rate"
            judge_metric = "harmless" if role == "harmful" else "helpful"
            if spec != cfg.ref_model:
                verdicts = [
                    j
                    for j in by_metric.get((judge_metric, spec, set_name), [])
                    if j["value"] is not None
                ]
                soft = [j["value"] for j in verdicts]
                both = [
                    j
                    for j in verdicts
                    if j["consistent"] is not None and "identical" not in j["flags"]
                ]
                out.append(
                    _result(
                        job_id,
                        spec,
                        win_metric,
                        eval_set,
                        bootstrap_ci(soft, rounds=rounds, seed=cfg.seed),
                        "bootstrap",
                        cfg.judge,
                        cfg.ref_model,
                        hard_wins=sum(v > 0.5 for v in soft),
                        ties=sum(v == 0.5 for v in soft),
                        losses=sum(v < 0.5 for v in soft),
                        consistency=(sum(bool(j["consistent"]) for j in both) / len(both))
                        if both
                        else None,
                        constitution=cfg.constitution if role == "harmful" else "helpfulness",
                        **common,
                    )
                )
            refusal = by_metric.get(("refusal", spec, set_name), [])
            prefix = "refusal_rate" if role == "harmful" else "over_refusal_rate"
            ruled = [j for j in refusal]
            out.append(
                _result(
                    job_id,
                    spec,
                    f"{prefix}_rule",
                    eval_set,
                    wilson(sum(j["rule"] is not None for j in ruled), len(ruled)),
                    "wilson",
                    None,
                    None,
                    rules={
                        name: sum(j["rule"] == name for j in ruled)
                        for name in REFUSAL_PATTERNS
                        if any(j["rule"] == name for j in ruled)
                    },
                    **common,
                )
            )
            if cfg.judge_refusals:
                judged = [j for j in refusal if j["value"] is not None]
                out.append(
                    _result(
                        job_id,
                        spec,
                        f"{prefix}_judge",
                        eval_set,
                        wilson(sum(j["value"] > 0.5 for j in judged), len(judged)),
                        "wilson",
                        cfg.judge,
                        None,
                        mean_p_refusal=sum(j["value"] for j in judged) / len(judged)
                        if judged
                        else None,
                        agree_with_rules=(
                            sum((j["value"] > 0.5) == (j["rule"] is not None) for j in judged)
                            / len(judged)
                            if judged
                            else None
                        ),
                        **common,
                    )
                )
            out.append(
                _result(
                    job_id,
                    spec,
                    f"chars_{role}",
                    eval_set,
                    bootstrap_ci(
                        [len(a["text"]) for a in set_answers], rounds=rounds, seed=cfg.seed
                    ),
                    "bootstrap",
                    **common,
                )
            )
        all_sets = ", ".join(refs.values())
        out.append(
            _result(
                job_id,
                spec,
                "tokens_per_answer",
                all_sets,
                bootstrap_ci([a["completion_tokens"] for a in mine], rounds=rounds, seed=cfg.seed),
                "bootstrap",
                truncated=sum(a["finish_reason"] == "length" for a in mine),
                **common,
            )
        )
        out.append(
            _result(
                job_id,
                spec,
                "seconds_per_answer",
                all_sets,
                bootstrap_ci([a["latency_s"] for a in mine], rounds=rounds, seed=cfg.seed),
                "bootstrap",
                reused=sum(a["reused_from"] is not None for a in mine),
                **common,
            )
        )
        total = sum(a["completion_tokens"] for a in mine)
        out.append(
            _result(
                job_id,
                spec,
                "tokens_total",
                all_sets,
                Rate(total, len(mine), float(total), None, None),
                "total",
                seconds=sum(a["latency_s"] for a in mine),
                **common,
            )
        )
    if critique:
        source, trace_rows = critique
        pairs = revision_pairs(trace_rows)
        verdict = (
            {
                (j["prompt_id"], j["item"]): j["value"]
                for j in by_metric.get(("revision", source.id, pairs[0]["prompt_set"]), [])
            }
            if pairs
            else {}
        )
        progress = summarise_rounds(
            [p["round"] for p in pairs], [verdict.get((p["prompt_id"], p["item"])) for p in pairs]
        )
        model = trace_rows[0]["model"] if trace_rows else ""
        for rp in progress:
            out.append(
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
                    critique_model=model,
                    constitution=cfg.constitution,
                )
            )
    return out
