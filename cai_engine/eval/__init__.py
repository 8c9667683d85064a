"""Evaluation (`eval` job): did the constitution change the model, and what did it cost in
helpfulness?

For each model (base, SFT, DPO/RL checkpoints) the job answers the test splits of a red-team
set and a helpful set (seeded sampling), then a judge model measures, per model:
- **harmlessness win rate** against a reference model (default: the first model), judged under
  the constitution's preference questions (a principle drawn per prompt, the same for every
  model), both orders scored and the soft preference averaged; the win rate is the mean soft
  preference for the model, so a tie counts one half;
- **helpfulness win rate** on the helpful prompts, under one helpfulness question;
- **refusal rate** on red-team prompts and **over-refusal rate** on helpful prompts, each twice:
  by the documented rules in `REFUSAL_PATTERNS`, and by the judge (a yes/no question, both
  option orders; an answer counts when P(refusal) > 0.5);
- answer length (characters, tokens) and the time spent per answer;
- optionally, **revision progress** of a critique job: per round k, how often the judge prefers
  round k's answer over round k-1's.

Every number carries its interval (`stats.wilson` for proportions of hard verdicts, a seeded
percentile `stats.bootstrap_ci` for means) and its sample size. Answers are stored per model and
prompt with the model's fingerprint (its weights' names, sizes and times) and the sampling, so a
later eval of the same checkpoint reuses them instead of generating again. A resumed job skips
the answers and verdicts its shards already hold; a judge that fails mid-run keeps both.

A job of any size holds a chunk of prompts at a time (`chunk_prompts`): each model answers the
sets chunk by chunk, then the judge reads back and judges each chunk's answers; the summary is
SQL over the job's shards (`store.eval_summary`), the same SQL `metrics.summarise` runs over
lists.

Modules, in the order the job uses them: `config`, `answers`, `refusals`, `revisions`, `judge`,
`stats`, `metrics`, `report`, and `job` (submit and run).
"""

from __future__ import annotations

from cai_engine.eval.config import EvalConfig
from cai_engine.eval.job import JOB, check_models, submit_eval
from cai_engine.eval.metrics import (
    METRIC_NAMES,
    METRICS,
    RATE_METRICS,
    is_rate,
    metric_name,
    summarise,
)
from cai_engine.eval.refusals import REFUSAL_PATTERNS, refusal_rule
from cai_engine.eval.report import (
    PromptComparison,
    eval_models,
    format_result,
    model_labels,
    model_lineage,
    prompt_comparison,
    results_table,
    side_by_side,
)
from cai_engine.eval.revisions import revision_progress
from cai_engine.eval.stats import Rate, bootstrap_ci, wilson

__all__ = [
    "JOB",
    "METRICS",
    "METRIC_NAMES",
    "RATE_METRICS",
    "REFUSAL_PATTERNS",
    "EvalConfig",
    "PromptComparison",
    "Rate",
    "bootstrap_ci",
    "check_models",
    "eval_models",
    "format_result",
    "is_rate",
    "metric_name",
    "model_labels",
    "model_lineage",
    "prompt_comparison",
    "refusal_rule",
    "results_table",
    "revision_progress",
    "side_by_side",
    "submit_eval",
    "summarise",
    "wilson",
]
