"""Eval answers: every (model, set, prompt) answered once, from the job's shards, reused
from an earlier eval of the same weights and sampling, or generated now.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cai_engine.eval.config import EvalConfig
from cai_engine.models import parse_spec
from cai_engine.models.local import model_fingerprint

if TYPE_CHECKING:
    from cai_engine.runner import JobContext


def answer_key(r: dict) -> tuple:
    return (r["model"], r["prompt_set"], r["prompt_id"])


def collect_answers(ctx: JobContext, cfg: EvalConfig, prompts: dict) -> list[dict]:
    """Every (model, set, prompt) answered: from the job's shards, reused from earlier eval
    jobs of the same weights and sampling, or generated now. Returns all answer rows."""

    previous = ctx.resume("eval_answers", key=answer_key)
    have = set(previous.done)
    sampling = cfg.sampling.model_dump_json()
    rows = list(previous.rows)
    # finished answers are kept whatever happens next
    with ctx.writer("eval_answers", flush_rows=cfg.batch, done=len(rows)) as out:

        def add(new: list[dict]) -> None:
            out.add(new)
            rows.extend(new)
            have.update(answer_key(r) for r in new)

        for spec in cfg.answering:
            fingerprint = model_fingerprint(parse_spec(spec), ctx.store.home)
            todo = []
            for set_name, set_prompts in prompts.items():
                if cfg.reuse_answers:
                    reused = _reuse(ctx, spec, fingerprint, sampling, set_name, set_prompts, have)
                    if reused:
                        add(reused)
                        ctx.event("answers_reused", model=spec, prompt_set=set_name, n=len(reused))
                todo += [
                    (set_name, p) for p in set_prompts if (spec, set_name, p.prompt_id) not in have
                ]
            if todo:
                ctx.check_cancelled()
                _generate(ctx, cfg, spec, fingerprint, sampling, todo, add)
                ctx.check_cancelled()
    return rows


def _reuse(ctx: JobContext, spec, fingerprint, sampling, set_name, set_prompts, have) -> list[dict]:
    """Answers earlier eval jobs stored for these weights, sampling and prompts, as this job's."""
    missing = {p.prompt_id for p in set_prompts if (spec, set_name, p.prompt_id) not in have}
    if not missing:
        return []
    stored = ctx.store.reusable_answers(spec, fingerprint, sampling, set_name, ctx.job_id)
    return [
        {
            **{k: old[k] for k in _ANSWER_COLUMNS},
            "job_id": ctx.job_id,
            "reused_from": old["reused_from"] or old["job_id"],
        }
        for old in stored
        if old["prompt_id"] in missing
    ]


def _generate(ctx: JobContext, cfg, spec, fingerprint, sampling, todo, add) -> None:
    """Answer `todo` [(set name, prompt)] with one model, handing each finished batch to `add`."""

    def save(indices, completions):
        nonlocal clock
        now = time.perf_counter()
        share = (now - clock) / max(1, len(indices))  # the batch's wall time, split evenly
        clock = now
        new = []
        for i, c in zip(indices, completions, strict=True):
            if c.finish_reason == "cancelled":
                continue  # abandoned mid-answer: not stored, redone on resume
            set_name, p = todo[i]
            new.append(
                {
                    "job_id": ctx.job_id,
                    "model": spec,
                    "fingerprint": fingerprint,
                    "prompt_set": set_name,
                    "prompt_id": p.prompt_id,
                    "sampling": sampling,
                    "text": c.text,
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                    "latency_s": share,
                    "finish_reason": c.finish_reason,
                    "reused_from": None,
                }
            )
            ctx.add_tokens(c.completion_tokens)
        add(new)

    with ctx.model(spec, model=spec) as model:
        clock = time.perf_counter()  # after loading: a batch's time is only its generation
        model.chat(
            [p.messages for _, p in todo],
            cfg.sampling,
            should_stop=lambda: ctx.cancelled,
            on_batch=save,
        )


_ANSWER_COLUMNS = (
    "model",
    "fingerprint",
    "prompt_set",
    "prompt_id",
    "sampling",
    "text",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "finish_reason",
)
