"""The built-in `tick` job: a tiny, model-free stage that exercises the whole job runtime.

It writes `total` rows (i, i*i) to the `ticks` table in shards of `shard_size`, sleeping
`delay_s` per row. Resuming continues after the last complete shard; a cancel abandons the
shard in progress. `cai jobs submit tick` is a quick check that jobs work on a machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from cai_engine.jobs import JobKind

if TYPE_CHECKING:
    from cai_engine.runner import JobContext


class TickConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total: int = Field(20, gt=0, le=1_000_000, description="Rows to write.")
    shard_size: int = Field(5, gt=0, le=100_000, description="Rows per shard.")
    delay_s: float = Field(0.05, ge=0, le=60, description="Seconds of pretend work per row.")
    fail_at: int | None = Field(None, ge=0, description="Raise an error at this row (for tests).")


def run(ctx: JobContext, config: TickConfig) -> None:
    import time

    done = {row["i"] for row in ctx.run.read_shard_rows("ticks")}
    start = max(done) + 1 if done else 0
    if start:
        ctx.event("resumed_from", rows=start)
    # Counts come from the shards, not from status.json, which can lag them after a crash.
    ctx.progress(done=start, total=config.total, tokens=len(done), force=True)
    batch: list[dict] = []
    for i in range(start, config.total):
        ctx.check_cancelled()  # abandons the unfinished batch: its rows were never written
        if config.fail_at is not None and i == config.fail_at:
            raise RuntimeError(f"fail_at={i} reached")
        time.sleep(config.delay_s)
        batch.append({"job_id": ctx.job_id, "i": i, "value": i * i})
        if len(batch) == config.shard_size or i == config.total - 1:
            ctx.write_shard("ticks", batch)
            ctx.add_tokens(len(batch))
            ctx.progress(done=i + 1, force=True)
            batch = []


JOB = JobKind(
    name="tick",
    config=TickConfig,
    run=run,
    description="Write numbered rows in shards: a quick check of the job runtime.",
    tables=("ticks",),
)
