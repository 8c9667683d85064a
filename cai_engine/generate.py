"""The `generate` job: answer the prompts of a set with a model, k samples per prompt.

Rows go to the `generations` table, one per (prompt, sample), written in shards as batches
finish. A resumed job skips the (prompt, sample) pairs its shards already hold. Sample k uses
seed `seed + k`, so samples of one prompt differ and a rerun reproduces them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cai_engine.jobs import JobKind
from cai_engine.models import EMBEDDED, SamplingParams, parse_spec
from cai_engine.prompts import parse_prompt_ref, select_prompts

if TYPE_CHECKING:
    from cai_engine.runner import JobContext


class GenerateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: str = Field(description="Prompt set and optional split, e.g. red-team:test.")
    model: str = Field(EMBEDDED, description="Model spec (see `cai models list`).")
    limit: int | None = Field(None, gt=0, description="Use only the first N prompts.")
    samples: int = Field(1, ge=1, le=64, description="Answers per prompt.")
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    shard_rows: int = Field(64, gt=0, le=100_000, description="Rows per shard (at most).")

    @field_validator("model")
    @classmethod
    def _spec(cls, value: str) -> str:
        return str(parse_spec(value))


def generate_answers(
    ctx: JobContext,
    prompts: list,
    set_name: str,
    model_spec: str,
    sampling,
    samples: int,
    shard_rows: int,
) -> list[dict]:
    """Answer `prompts` `samples` times into the job's `generations` shards, continuing from
    what the shards already hold; returns every row, old and new. Progress counts answers."""
    previous = ctx.resume(
        "generations",
        key=("prompt_id", "sample"),
        total=len(prompts) * samples,
        tokens="completion_tokens",
    )
    todo = [
        (p, k) for k in range(samples) for p in prompts if (p.prompt_id, k) not in previous.done
    ]
    if not todo:
        return previous.rows
    new_rows: list[dict] = []
    # whatever finished is kept, also when the model or server fails
    with (
        ctx.model(model_spec) as model,
        ctx.writer(
            "generations",
            flush_rows=shard_rows,
            done=len(previous.done),
            tokens="completion_tokens",
        ) as out,
    ):
        for k in range(samples):
            batch = [p for p, s in todo if s == k]
            if not batch:
                continue
            params = sampling.model_copy(update={"seed": sampling.seed + k})

            def save(indices, completions, batch=batch, params=params, k=k):
                rows = [
                    _row(ctx, set_name, batch[i].prompt_id, k, model_spec, params, c)
                    for i, c in zip(indices, completions, strict=True)
                    if c.finish_reason != "cancelled"  # abandoned: not stored, redone on resume
                ]
                out.add(rows)
                new_rows.extend(rows)

            model.chat(
                [p.messages for p in batch],
                params,
                should_stop=lambda: ctx.cancelled,
                on_batch=save,
            )
            ctx.check_cancelled()
    return previous.rows + new_rows


def _row(
    ctx: JobContext, set_name: str, prompt_id: str, sample: int, model_spec: str, params, c
) -> dict:
    """The row of completion `c`; a prompt cut to fit the context is also an event."""
    if c.truncated_tokens:
        ctx.event("truncated", prompt_id=prompt_id, tokens=c.truncated_tokens)
    return {
        "job_id": ctx.job_id,
        "prompt_set": set_name,
        "prompt_id": prompt_id,
        "sample": sample,
        "model": model_spec,
        "sampling": params.model_dump_json(),
        "seed": params.seed,
        "text": c.text,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "finish_reason": c.finish_reason,
        "truncated_tokens": c.truncated_tokens,
        "latency_s": c.latency_s,
    }


def run(ctx: JobContext, config: GenerateConfig) -> None:

    prompts = select_prompts(ctx.store, config.prompts, config.limit)
    set_name, _ = parse_prompt_ref(config.prompts)
    rows = generate_answers(
        ctx, prompts, set_name, config.model, config.sampling, config.samples, config.shard_rows
    )
    ctx.metric(generated=len(rows), tokens=ctx.tokens)


JOB = JobKind(
    name="generate",
    config=GenerateConfig,
    run=run,
    description="Answer a prompt set with a model (k samples per prompt).",
    tables=("generations",),
)
