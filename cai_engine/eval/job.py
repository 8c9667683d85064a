"""The `eval` job: answer, judge, summarise, a chunk of prompts at a time (`chunk_prompts`):
the job holds one chunk of answers and verdicts, and the summary is SQL over its shards."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai_engine import jobs
from cai_engine.critique import check_constitution
from cai_engine.errors import CaiError
from cai_engine.eval.answers import ANSWER_KEY, collect_answers
from cai_engine.eval.config import EvalConfig
from cai_engine.eval.judge import JUDGEMENT_KEY, judge_all, label_config
from cai_engine.eval.metrics import summarise_tables
from cai_engine.eval.report import model_lineage
from cai_engine.eval.revisions import ANSWER_COLUMNS, critique_answer_pages  # noqa: F401
from cai_engine.jobs import JobKind
from cai_engine.models import parse_spec
from cai_engine.models.local import check_model_available
from cai_engine.prompts import count_prompts, select_prompts
from cai_engine.store import eval_summary

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


def critique_answers(store: Store, job_id: str, page: int = 256) -> list[dict]:
    """A critique job's initial answers and revisions in one list, read a page of traces at a
    time (`revisions.critique_answer_pages`, which a job reads page by page instead)."""
    return [r for rows in critique_answer_pages(store, job_id, page) for r in rows]


def run_eval(ctx: JobContext, config: EvalConfig) -> None:

    version = ctx.store.get_version(config.constitution)
    n_prompts = sum(count_prompts(ctx.store, ref, config.limit) for _, ref in config.sets())
    check_models(ctx.store, config.answering)
    critique = None
    if config.critique_job:
        source = jobs.get_job(ctx.store, config.critique_job)
        jobs.ingest(ctx.store, source)
        first = next(critique_answer_pages(ctx.store, source.id, page=1), [])
        if not first:
            raise CaiError(f"critique job {source.id} has no traces ({source.status})")
        critique = (source, first[0]["model"])  # the job and the model that revised
    ctx.event("constitution", ref=version.ref, hash=version.hash)

    n_compared = len([m for m in config.models if m != config.ref_model])
    planned = (
        2 * len(config.answering) * n_prompts  # answers, then a refusal verdict for each
        + n_compared * n_prompts  # win-rate comparisons against the reference
        + (ctx.store.count_revision_pairs(critique[0].id) if critique else 0)
    )
    ctx.progress(total=planned, unit="answers and verdicts", force=True)
    # 1) answers, then verdicts, a chunk of prompts at a time, each into the job's shards
    ctx.phase("answering the first batch of prompts")
    n_answers = collect_answers(ctx, config)
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
    with ctx.resume_index("eval_answers", key=ANSWER_KEY) as answers:
        judge_all(
            ctx,
            config,
            version,
            answers,
            critique[0] if critique else None,
            done=n_answers,
            position_bias=bias,
        )
    ctx.check_cancelled()
    # 2) the summary: SQL over the shards, never their rows in a list
    lineages = {spec: model_lineage(ctx.store, spec) for spec in config.answering}
    ctx.phase("summarising", setup=True)
    with eval_summary.over_shards(
        [p for _, p in ctx.run.shards("eval_answers")],
        [p for _, p in ctx.run.shards("eval_judgements")],
    ) as con:
        results = summarise_tables(config, ctx.job_id, con, lineages, critique)
    ctx.write_shard("eval_results", results)
    with ctx.resume_index("eval_judgements", key=JUDGEMENT_KEY) as judged:
        n_judged, tokens, seconds = judged.aggregate(
            "count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(latency_s), 0.0)"
        )
    ctx.progress(done=n_answers + n_judged, total=n_answers + n_judged, force=True)
    ctx.metric(
        answers=n_answers,
        judgements=int(n_judged),
        judge_tokens=int(tokens),
        judge_seconds=float(seconds),
    )


JOB = JobKind(
    name="eval",
    config=EvalConfig,
    run=run_eval,
    description="Evaluate models: harmlessness and helpfulness win rates, refusals, lengths.",
    tables=("eval_answers", "eval_judgements", "eval_results"),
)
