"""The `eval` job: answer, judge, summarise."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai_engine import jobs
from cai_engine.critique import check_constitution
from cai_engine.errors import CaiError
from cai_engine.eval.answers import collect_answers
from cai_engine.eval.config import EvalConfig
from cai_engine.eval.judge import judge_all, label_config
from cai_engine.eval.metrics import summarise
from cai_engine.eval.report import model_lineage
from cai_engine.eval.revisions import revision_pairs
from cai_engine.jobs import JobKind
from cai_engine.models import parse_spec
from cai_engine.models.local import check_model_available
from cai_engine.prompts import select_prompts

if TYPE_CHECKING:
    from cai_engine.runner import JobContext
    from cai_engine.store import Store


def check_models(store: Store, specs: list[str]) -> None:
    """Every model must exist now; a trained model that was deleted is named."""

    for spec in specs:
        check_model_available(parse_spec(spec), store.home)


def submit_eval(store: Store, config: dict, label: str | None = None):
    """Check an eval config against the store (sets not empty, models on disk), then submit."""

    cfg = jobs.validate_config("eval", config)
    for _, ref in cfg.sets():
        select_prompts(store, ref, cfg.limit)
    check_models(store, cfg.answering + [cfg.judge])
    version = store.get_version(cfg.constitution)
    check_constitution(version.constitution, label_config(cfg, version.ref))
    if cfg.critique_job:
        source = jobs.get_job(store, cfg.critique_job)
        if source.kind != "critique":
            raise CaiError(
                f"job {source.id} is a {source.kind} job; critique_job needs a critique job"
            )
    pinned = {**config, "constitution": version.pinned}
    return jobs.submit(store, "eval", pinned, label=label)


# what revision progress reads of a critique job's answer steps (never its critiques)
ANSWER_COLUMNS = ("job_id", "prompt_set", "prompt_id", "sample", "round", "step", "text", "model")


def critique_answers(store: Store, job_id: str, page: int = 256) -> list[dict]:
    """A critique job's initial answers and revisions, a page of traces at a time, each row
    cut to what revision progress reads (`ANSWER_COLUMNS` and the prompt's messages, one
    list per prompt): the critiques and the rest of each row are never held."""
    out: list[dict] = []
    after, messages = None, {}
    while rows := store.trace_rows_page(job_id, after=after, limit=page, answers_only=True):
        for r in rows:
            if r["prompt_id"] not in messages:
                messages = {r["prompt_id"]: r["prompt_messages"]}  # rows come a prompt at a time
            out.append(
                {
                    **{c: r[c] for c in ANSWER_COLUMNS},
                    "prompt_messages": messages[r["prompt_id"]],
                }
            )
        after = (rows[-1]["prompt_id"], rows[-1]["sample"])
    return out


def run_eval(ctx: JobContext, config: EvalConfig) -> None:

    version = ctx.store.get_version(config.constitution)
    names = config.set_names()
    prompts = {
        names[role]: select_prompts(ctx.store, ref, config.limit) for role, ref in config.sets()
    }
    check_models(ctx.store, config.answering)
    critique = None
    if config.critique_job:
        source = jobs.get_job(ctx.store, config.critique_job)
        jobs.ingest(ctx.store, source)
        rows = critique_answers(ctx.store, source.id)
        if not rows:
            raise CaiError(f"critique job {source.id} has no traces ({source.status})")
        critique = (source, rows)
    ctx.event("constitution", ref=version.ref, hash=version.hash)

    n_prompts = sum(map(len, prompts.values()))
    n_compared = len([m for m in config.models if m != config.ref_model])
    planned = (
        2 * len(config.answering) * n_prompts  # answers, then a refusal verdict for each
        + n_compared * n_prompts  # win-rate comparisons against the reference
        + (len(revision_pairs(critique[1])) if critique else 0)
    )
    ctx.progress(total=planned, unit="answers and verdicts", force=True)
    ctx.phase("answering the first batch of prompts")
    answers = collect_answers(ctx, config, prompts)
    ctx.check_cancelled()
    bias = None
    if config.judge_check:  # run or reuse the judge's check (loading the judge only to run one)
        from cai_engine.judge_check import ensure_check

        with ctx.lazy_model(config.judge, "judge_loaded", model=config.judge) as judge:
            labelling = label_config(config, version.ref)
            bias = ensure_check(
                ctx, judge, version, labelling, threshold=config.judge_threshold
            ).applied_bias
    ctx.phase("judging the first batch")
    judgements = judge_all(
        ctx,
        config,
        version,
        prompts,
        answers,
        ctx.resume("eval_judgements").rows,
        critique[1] if critique else None,
        position_bias=bias,
    )
    ctx.check_cancelled()
    lineages = {spec: model_lineage(ctx.store, spec) for spec in config.answering}
    ctx.phase("summarising", setup=True)
    results = summarise(config, ctx.job_id, answers, judgements, lineages, critique)
    ctx.write_shard("eval_results", results)
    ctx.progress(force=True)
    ctx.metric(
        answers=len(answers),
        judgements=len(judgements),
        judge_tokens=sum(j["prompt_tokens"] for j in judgements),
        judge_seconds=sum(j["latency_s"] for j in judgements),
    )


JOB = JobKind(
    name="eval",
    config=EvalConfig,
    run=run_eval,
    description="Evaluate models: harmlessness and helpfulness win rates, refusals, lengths.",
    tables=("eval_answers", "eval_judgements", "eval_results"),
)
