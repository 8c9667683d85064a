"""The `generate` job: answer the prompts of a set with a model, k samples per prompt.

Rows go to the `generations` table, one per (prompt, sample), written in shards as batches
finish. A resumed job skips the (prompt, sample) pairs its shards already hold. Sample k uses
seed `seed + k`, so samples of one prompt differ and a rerun reproduces them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cai_engine.jobs import JobKind
from cai_engine.models import EMBEDDED, SamplingParams, load_model, parse_spec


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
    ctx, prompts: list, set_name: str, model_spec: str, sampling, samples: int, shard_rows: int
) -> list[dict]:
    """Answer `prompts` `samples` times into the job's `generations` shards, continuing from
    what the shards already hold; returns every row, old and new. Progress counts answers."""
    previous = ctx.run.read_shard_rows("generations")
    done = {(r["prompt_id"], r["sample"]) for r in previous}
    total = len(prompts) * samples
    # Counts come from the shards, not from status.json, which can lag them after a crash.
    tokens = sum(r["completion_tokens"] for r in previous)
    ctx.progress(done=len(done), total=total, tokens=tokens, force=True)
    todo = [(p, k) for k in range(samples) for p in prompts if (p.prompt_id, k) not in done]
    if not todo:
        return previous
    model = load_model(model_spec, ctx.store.home)
    ctx.event("model_loaded", **model.info().details)
    out = ctx.buffer("generations", flush_rows=shard_rows)
    new_rows: list[dict] = []
    finished = len(done)
    try:
        for k in range(samples):
            batch = [p for p, s in todo if s == k]
            if not batch:
                continue
            params = sampling.model_copy(update={"seed": sampling.seed + k})

            def save(indices, completions, batch=batch, params=params, k=k):
                nonlocal finished
                rows = []
                for i, c in zip(indices, completions, strict=True):
                    if c.finish_reason == "cancelled":
                        continue  # abandoned mid-generation: not stored, redone on resume
                    if c.truncated_tokens:
                        ctx.event(
                            "truncated", prompt_id=batch[i].prompt_id, tokens=c.truncated_tokens
                        )
                    rows.append(
                        {
                            "job_id": ctx.job_id,
                            "prompt_set": set_name,
                            "prompt_id": batch[i].prompt_id,
                            "sample": k,
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
                    )
                    ctx.add_tokens(c.completion_tokens)
                out.add(rows)
                new_rows.extend(rows)
                finished += len(rows)
                ctx.progress(done=finished)

            model.chat(
                [p.messages for p in batch],
                params,
                should_stop=lambda: ctx.cancelled,
                on_batch=save,
            )
            ctx.check_cancelled()
    finally:
        out.flush()  # whatever finished is kept, also when the model or server fails
        ctx.progress(done=finished, force=True)
        model.close()
    return previous + new_rows


def run(ctx, config: GenerateConfig) -> None:
    from cai_engine.prompts import parse_prompt_ref, select_prompts

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
