"""Eval answers: every (model, set, prompt) answered once, a chunk of prompts at a time: from
the job's shards, reused from an earlier eval of the same weights and sampling, or generated
now. The answers go to the job's `eval_answers` shards; the job holds one chunk of them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from cai_engine.eval.config import EvalConfig
from cai_engine.models import parse_spec
from cai_engine.models.local import model_fingerprint
from cai_engine.prompts import iter_prompts

if TYPE_CHECKING:
    from cai_engine.prompts import Prompt
    from cai_engine.runner import JobContext
    from cai_engine.store import Store

ANSWER_KEY = ("model", "prompt_set", "prompt_id")  # one answer


def answer_key(r: dict) -> tuple:
    return tuple(r[c] for c in ANSWER_KEY)


def prompt_chunks(store: Store, ref: str, cfg: EvalConfig) -> Iterator[list[Prompt]]:
    """The prompts of one eval set (its first `cfg.limit`), `cfg.chunk_prompts` at a time."""
    prompts = iter_prompts(store, ref, cfg.limit, page=cfg.chunk_prompts)
    while chunk := list(itertools.islice(prompts, cfg.chunk_prompts)):
        yield chunk


def collect_answers(ctx: JobContext, cfg: EvalConfig) -> int:
    """Every (model, set, prompt) answered, a chunk of prompts at a time: from the job's
    shards, reused from earlier eval jobs of the same weights and sampling, or generated now
    (a model loads only if it has something to answer). Returns how many answers the job's
    shards hold."""

    names = cfg.set_names()
    sampling = cfg.sampling.model_dump_json()
    # what earlier attempts answered, asked a chunk at a time; finished answers are kept
    # whatever happens next
    with (
        ctx.resume_index("eval_answers", key=ANSWER_KEY) as previous,
        ctx.writer("eval_answers", flush_rows=cfg.batch, done=previous.keys) as out,
    ):
        for spec in cfg.answering:
            fingerprint = model_fingerprint(parse_spec(spec), ctx.store.home)
            with ctx.lazy_model(spec, model=spec) as model:
                for role, ref in cfg.sets():
                    set_name, reused = names[role], 0
                    for chunk in prompt_chunks(ctx.store, ref, cfg):
                        have = previous.done_among("prompt_id", [p.prompt_id for p in chunk])
                        todo = [p for p in chunk if (spec, set_name, p.prompt_id) not in have]
                        if todo and cfg.reuse_answers:
                            found = _reuse(ctx, spec, fingerprint, sampling, set_name, todo)
                            out.add(found)
                            reused += len(found)
                            got = {a["prompt_id"] for a in found}
                            todo = [p for p in todo if p.prompt_id not in got]
                        if todo:
                            ctx.check_cancelled()
                            _generate(ctx, cfg, model(), (spec, fingerprint, sampling),
                                      set_name, todo, out.add)  # fmt: skip
                            ctx.check_cancelled()
                    if reused:
                        ctx.event("answers_reused", model=spec, prompt_set=set_name, n=reused)
    return out.done


def _reuse(ctx: JobContext, spec, fingerprint, sampling, set_name, todo) -> list[dict]:
    """Answers earlier eval jobs stored for these weights, sampling and prompts (`todo`, one
    chunk), as this job's."""
    stored = ctx.store.reusable_answers(
        spec, fingerprint, sampling, set_name, ctx.job_id, [p.prompt_id for p in todo]
    )
    return [
        {
            **{k: old[k] for k in _ANSWER_COLUMNS},
            "job_id": ctx.job_id,
            "reused_from": old["reused_from"] or old["job_id"],
        }
        for old in stored
    ]


def _generate(ctx: JobContext, cfg, model, answering, set_name, todo, add) -> None:
    """Answer `todo` (prompts of set `set_name`) with `model`; `answering` is its (spec,
    fingerprint, sampling). Each finished batch goes to `add`."""
    spec, fingerprint, sampling = answering

    def save(indices, completions):
        nonlocal clock
        now = time.perf_counter()
        share = (now - clock) / max(1, len(indices))  # the batch's wall time, split evenly
        clock = now
        new = []
        for i, c in zip(indices, completions, strict=True):
            if c.finish_reason == "cancelled":
                continue  # abandoned mid-answer: not stored, redone on resume
            new.append(
                {
                    "job_id": ctx.job_id,
                    "model": spec,
                    "fingerprint": fingerprint,
                    "prompt_set": set_name,
                    "prompt_id": todo[i].prompt_id,
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

    clock = time.perf_counter()  # after loading: a batch's time is only its generation
    model.chat(
        [p.messages for p in todo],
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
