"""Judge qualification (`judge-check` job, `cai judge check`): before a feedback model's labels
or verdicts are trusted, it answers a gold set of clear-cut comparisons (`gold.py`) exactly as a
label job scores pairs (`labels.label_batches`: the same question, both orders, the same
few-shots), and the check says whether its numbers mean anything.

The numbers and the verdict in words, with their definitions, are in `judge_verdict`.

A check is stored per judge (model spec and `models.local.model_fingerprint`), constitution
version, gold-set hash and settings (`settings_key`), and reused: `find_check`. Every label and
eval job calls `ensure_check` with its loaded judge. When no stored check fits, the job runs one
inline and stores it under its own job id (items in `judge_check_items`, the summary in
`judge_checks`), not under a new judge-check job record: a record of another job running inside
this process would look dead to every reader (its pid's command line names the caller, see
`jobs.reconcile`), and the caller's run folder makes a killed check resume with the job. Either
way the job records the check it used in `judge_check_uses`, with any position calibration.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cai_engine import jobs
from cai_engine.critique import check_constitution
from cai_engine.errors import CaiError
from cai_engine.gold import GoldPair, GoldSet, as_pairs, gold_set
from cai_engine.jobs import JobKind
from cai_engine.judge import Clamp, select_comparison_shots
from cai_engine.judge_verdict import (
    ALPHA,
    THRESHOLD,
    CheckSummary,
    badge,
    cross_fit,
    describe_check,
    favours_gold,
    report,
    settings_key,
    summarize,
)
from cai_engine.labels import LabelConfig, label_batches
from cai_engine.models import EMBEDDED, parse_spec

if TYPE_CHECKING:
    from cai_engine.constitution import Constitution, ConstitutionVersion
    from cai_engine.runner import JobContext
    from cai_engine.store import Store

ITEMS, CHECKS, USES = "judge_check_items", "judge_checks", "judge_check_uses"


# -- the job --------------------------------------------------------------------------------


class JudgeCheckConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(EMBEDDED, description="The judge (feedback) model spec to check.")
    constitution: str = Field(
        "harmless", description="Constitution whose preference questions the judge answers."
    )
    gold_files: list[str] = Field(
        default_factory=list, description="Your own gold pairs (JSONL files), added to the set."
    )
    bundled: bool = Field(True, description="Include the studio's bundled gold set.")
    few_shots: int = Field(
        2, ge=0, le=16, description="Labelled comparisons from the constitution to prepend."
    )
    cot: bool = Field(False, description="Chain of thought: reason first, then read the options.")
    clamp: Clamp = (0.4, 0.6)
    threshold: float = Field(
        THRESHOLD,
        ge=0.0,
        lt=1.0,
        description="Qualified when accuracy's lower 95% bound is above this.",
    )
    alpha: float = Field(
        ALPHA, gt=0.0, lt=1.0, description="Position bias is significant below this p-value."
    )
    seed: int = Field(0, ge=0, description="Seeds the principle drawn for each gold pair.")
    batch_pairs: int = Field(
        64, gt=0, le=4096, description="Gold pairs scored together and saved as one shard."
    )
    gold_hash: str | None = Field(
        None, description="Set at submit: the gold set's hash (the job fails if it changed)."
    )

    @field_validator("model")
    @classmethod
    def _spec(cls, value: str) -> str:
        return str(parse_spec(value))


def label_config(cfg: JudgeCheckConfig, constitution_ref: str) -> LabelConfig:
    """The label config a check scores with: both orders, every enabled principle."""
    return LabelConfig(
        pairs="gold",
        constitution=constitution_ref,
        model=cfg.model,
        few_shots=cfg.few_shots,
        cot=cfg.cot,
        clamp=cfg.clamp,
        seed=cfg.seed,
        batch_pairs=cfg.batch_pairs,
        judge_check=False,
    )


def gold_for(
    constitution: Constitution, ref: str, few_shots: int, files=(), bundled: bool = True
) -> GoldSet:
    """The gold set of a check with `few_shots`: the bundled set, `files`, and those of the
    constitution's comparison few-shots that the run does not prepend."""
    used = select_comparison_shots(constitution.comparison_few_shots, few_shots)
    return gold_set(
        bundled=bundled, files=files, constitution=constitution, ref=ref, used_few_shots=used
    )


def gold_item(row: dict, pair: GoldPair) -> dict:
    """A `judge_check_items` row from the label row of a gold pair."""
    return {
        "job_id": row["job_id"],
        "gold_id": pair.id,
        "category": pair.category,
        "topic": pair.topic,
        "preferred": pair.preferred,
        "principle_id": row["principle_id"],
        "p_a_ab": row["p_a_ab"],
        "p_a_ba": row["p_a_ba"],
        "soft_label": row["soft_label"],
        "correct": favours_gold(row["soft_label"], pair.preferred),
        "consistent": row["consistent"],
        "tokens": int(row["prompt_tokens"]) + int(row["cot_tokens"]),
        "latency_s": float(row["latency_s"]),
        "flags": row["flags"],
    }


def current_fingerprint(spec: str, home: Path) -> str | None:
    """The judge's fingerprint now, without converting the embedded model (None when it has
    not been converted yet: then no stored check can be of it)."""
    from cai_engine.models.embedded import is_converted
    from cai_engine.models.local import model_fingerprint

    parsed = parse_spec(spec)
    if parsed.kind == "embedded" and not is_converted(home):
        return None
    return model_fingerprint(parsed, home)


def find_check(
    store: Store,
    model: str,
    fingerprint: str,
    constitution_hash: str,
    gold_hash: str,
    settings: str,
) -> CheckSummary | None:
    """The newest stored check with exactly this judge, constitution, gold set and settings."""
    return store.find_judge_check(
        str(parse_spec(model)), fingerprint, constitution_hash, gold_hash, settings
    )


def submit_check(
    store: Store, config: dict, *, rerun: bool = False, label: str | None = None
) -> tuple[jobs.Job | None, CheckSummary | None]:
    """Check a judge-check config, and either reuse a stored check (returns (None, check),
    judged under this config's threshold) or submit a job (returns (job, None)). The
    constitution version, the gold files' absolute paths and the gold set's hash are pinned."""
    from cai_engine.models.local import check_model_available

    cfg = jobs.validate_config("judge-check", config)
    version = store.get_version(cfg.constitution)
    constitution = version.constitution
    check_constitution(constitution, label_config(cfg, version.ref))
    check_model_available(parse_spec(cfg.model), store.home)
    files = [str(Path(f).expanduser().resolve()) for f in cfg.gold_files]
    gold = gold_for(constitution, version.ref, cfg.few_shots, files, cfg.bundled)
    if not rerun:
        fingerprint = current_fingerprint(cfg.model, store.home)
        key = settings_key(cfg.few_shots, cfg.cot, cfg.clamp, cfg.seed)
        found = fingerprint and find_check(
            store, cfg.model, fingerprint, version.hash, gold.hash, key
        )
        if found:
            return None, found.judged(cfg.threshold, cfg.alpha)
    pinned = {**config, "constitution": version.pinned, "gold_files": files, "gold_hash": gold.hash}
    return jobs.submit(store, "judge-check", pinned, label=label), None


def check_judge(
    ctx: JobContext,
    model,
    version: ConstitutionVersion,
    gold: GoldSet,
    cfg: LabelConfig,
    *,
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
    progress: bool = True,
) -> CheckSummary:
    """Score `gold` with `model` as label jobs score (continuing from the job's item shards),
    then store and return the summary. `progress`: count gold pairs as the job's progress (a
    judge-check job); otherwise say it in the job's phase (a label or eval job)."""
    from cai_engine.models.local import model_fingerprint

    # 1) what earlier attempts scored
    by_id = {p.id: p for p in gold.pairs}
    counting = {"total": len(gold), "tokens": "tokens", "unit": "gold pairs"} if progress else {}
    with ctx.resume_index(ITEMS, key=("gold_id",), **counting) as index:
        done = {k[0] for k in index.done_among("gold_id", list(by_id))}
    todo = [p for p in as_pairs(gold) if p["prompt_id"] not in done]
    # 2) score the rest, a checkpointed batch at a time
    if todo:
        constitution = version.constitution

        def say(n: int) -> None:
            if not progress:
                ctx.phase(f"checking the judge: {n}/{len(gold)} gold pairs", setup=True)

        say(len(done))
        with ctx.writer(
            ITEMS,
            flush_rows=cfg.batch_pairs,
            checkpoint=True,
            done=len(done) if progress else None,
            tokens="tokens" if progress else None,
        ) as out:
            for rows in label_batches(
                todo,
                constitution,
                version.hash,
                model,
                cfg,
                job_id=ctx.job_id,
                event=ctx.event,
                should_stop=lambda: ctx.cancelled,
            ):
                out.add([gold_item(r, by_id[r["prompt_id"]]) for r in rows])
                done |= {r["prompt_id"] for r in rows}
                say(len(done))
    ctx.check_cancelled()
    # 3) the numbers, over every item the shards hold (one per gold pair)
    items = {r["gold_id"]: r for r in ctx.run.read_shard_rows(ITEMS) if r["gold_id"] in by_id}
    summary = replace(
        summarize(list(items.values()), threshold, alpha),
        job_id=ctx.job_id,
        model=cfg.model,
        fingerprint=model_fingerprint(parse_spec(cfg.model), ctx.store.home),
        constitution=version.ref,
        constitution_hash=version.hash,
        gold_hash=gold.hash,
        gold_sources=gold.describe(),
        settings=settings_key(cfg.few_shots, cfg.cot, cfg.clamp, cfg.seed),
        few_shots=cfg.few_shots,
        cot=cfg.cot,
        clamp_low=cfg.clamp[0],
        clamp_high=cfg.clamp[1],
        seed=cfg.seed,
        created_at=datetime.now(),
    )
    ctx.write_shard(CHECKS, [summary.row()])
    print(f"[{datetime.now():%H:%M:%S}] {badge(summary)}", flush=True)
    return summary


def run_check(ctx: JobContext, config: JudgeCheckConfig) -> None:
    version = ctx.store.get_version(config.constitution)
    cfg = label_config(config, version.ref)
    check_constitution(version.constitution, cfg)
    gold = gold_for(
        version.constitution, version.ref, config.few_shots, config.gold_files, config.bundled
    )
    if config.gold_hash and gold.hash != config.gold_hash:
        raise CaiError(
            f"the gold set changed since this check was submitted ({gold.describe()} now hash "
            f"to {gold.hash[:12]}, not {config.gold_hash[:12]}): submit a new check"
        )
    ctx.event("constitution", ref=version.ref, hash=version.hash)
    ctx.event("gold", hash=gold.hash, sources=gold.describe(), pairs=len(gold))
    ctx.phase(f"scoring the first batch of {min(len(gold), config.batch_pairs)} gold pairs")
    with ctx.model(config.model) as model:
        s = check_judge(
            ctx, model, version, gold, cfg, threshold=config.threshold, alpha=config.alpha
        )
    ctx.metric(**_metrics(s))


def _metrics(s: CheckSummary, prefix: str = "") -> dict:
    keys = ("accuracy", "accuracy_low", "accuracy_high", "first_share", "first_p")
    out = {prefix + k: getattr(s, k) for k in keys}
    out.update({prefix + "consistency": s.consistency, prefix + "ece": s.ece})
    out[prefix + "qualified"] = s.qualified
    return out


def ensure_check(
    ctx: JobContext,
    model,
    version: ConstitutionVersion,
    config: LabelConfig,
    *,
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
) -> CheckSummary:
    """The check of a label or eval job's judge: a stored one that fits, else one run now with
    `model` (the loaded judge, or a function that loads it) and stored under this job. The job
    records it (`judge_check_uses`, an event, metrics), with the bias it takes out when
    `config.calibrate` is "position" (`applied_bias`).

    The check scores the bundled gold set and the constitution's unused comparison few-shots
    with the job's few-shots, mode and clamp, both orders and every enabled principle (seed 0),
    so label and eval jobs with the same judge share one check. A resumed job keeps the check
    it first recorded: the labels it already wrote were made under it.
    """
    # 1) a resumed job keeps its check
    for use in ctx.run.read_shard_rows(USES)[:1]:
        own = [r for r in ctx.run.read_shard_rows(CHECKS) if r["job_id"] == use["check_job"]]
        check = CheckSummary.from_row(own[0]) if own else ctx.store.judge_check(use["check_job"])
        if check is not None:
            return replace(
                check.judged(use["threshold"], use["alpha"]),
                used_by=ctx.job_id,
                reused=bool(use["reused"]),
                calibrate=use["calibrate"],
                applied_bias=use["position_bias"],
            )
    # 2) a stored check (this job's own, from an earlier attempt, first), else check now
    from cai_engine.models.local import model_fingerprint

    cfg = config.model_copy(
        update={
            "judge_check": False,
            "calibrate": "none",
            "both_orders": True,
            "principle": None,
            "limit": None,
            "seed": 0,
        }
    )
    gold = gold_for(version.constitution, version.ref, cfg.few_shots)
    key = settings_key(cfg.few_shots, cfg.cot, cfg.clamp, cfg.seed)
    fingerprint = model_fingerprint(parse_spec(cfg.model), ctx.store.home)
    wanted = (cfg.model, fingerprint, version.hash, gold.hash, key)
    own = [
        CheckSummary.from_row(r)
        for r in ctx.run.read_shard_rows(CHECKS)
        if (r["model"], r["fingerprint"], r["constitution_hash"], r["gold_hash"], r["settings"])
        == wanted
    ]
    check = own[-1] if own else find_check(ctx.store, *wanted)
    reused = check is not None and check.job_id != ctx.job_id
    if check is None:
        with ctx.aside():  # then the job says again what it was doing
            judge = model() if callable(model) and not hasattr(model, "score_choices") else model
            check = check_judge(ctx, judge, version, gold, cfg, progress=False)
    # 3) its verdict under this job's bar, and the bias it takes out
    check = check.judged(threshold, alpha)
    bias = check.position_bias if config.calibrate == "position" else None
    if config.calibrate == "position" and bias is None:
        raise CaiError(f"the judge check {check.job_id} scored no order: no bias to calibrate")
    use = {
        "job_id": ctx.job_id,
        "check_job": check.job_id,
        "reused": reused,
        "threshold": threshold,
        "alpha": alpha,
        "qualified": check.qualified,
        "calibrate": config.calibrate,
        "position_bias": bias,
        "created_at": datetime.now(),
    }
    ctx.write_shard(USES, [use])
    ctx.event(
        "judge_check",
        check_job=check.job_id,
        reused=reused,
        qualified=check.qualified,
        badge=badge(check),
        calibrate=config.calibrate,
        position_bias=bias,
    )
    ctx.metric(judge_check=check.job_id, position_bias=bias, **_metrics(check, "judge_"))
    print(f"[{datetime.now():%H:%M:%S}] {badge(check)} (check {check.job_id})", flush=True)
    return replace(
        check, used_by=ctx.job_id, reused=reused, calibrate=config.calibrate, applied_bias=bias
    )


JOB = JobKind(
    name="judge-check",
    config=JudgeCheckConfig,
    run=run_check,
    description="Qualify a judge: accuracy, position bias and calibration on the gold set.",
    tables=(ITEMS, CHECKS),
)

__all__ = [
    "ALPHA",
    "THRESHOLD",
    "CheckSummary",
    "JudgeCheckConfig",
    "badge",
    "cross_fit",
    "describe_check",
    "ensure_check",
    "find_check",
    "report",
    "settings_key",
    "submit_check",
    "summarize",
]
