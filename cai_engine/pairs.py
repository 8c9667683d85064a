"""RL-CAI pairs (`pairs` job): two answers to one prompt, for a feedback model or a person to
compare. Either k >= 2 sampled answers per prompt, every two of them a pair; or, from a critique
job, each trace's initial answer against its final revision.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.generate import generate_answers
from cai_engine.jobs import JobKind
from cai_engine.models import EMBEDDED, SamplingParams, parse_spec
from cai_engine.models.base import CUT_OFF
from cai_engine.prompts import parse_prompt_ref, select_prompts
from cai_engine.seeding import seeded_rng

if TYPE_CHECKING:
    from cai_engine.runner import JobContext
    from cai_engine.store import Store


class PairsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: str | None = Field(
        None,
        description="Prompt set and optional split to sample answers for, e.g. red-team:train.",
    )
    from_critique: str | None = Field(
        None,
        description="A critique job: pair each trace's initial answer with its final revision.",
    )
    model: str = Field(EMBEDDED, description="Model spec that writes the answers.")
    samples: int = Field(2, ge=2, le=8, description="Answers per prompt; every two form a pair.")
    limit: int | None = Field(None, gt=0, description="Use only the first N prompts.")
    seed: int = Field(0, ge=0, description="Seeds which answer of a critique pair is shown as A.")
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=1.0, max_new_tokens=160)
    )
    shard_rows: int = Field(64, gt=0, le=100_000, description="Rows per shard (at most).")

    @field_validator("model")
    @classmethod
    def _spec(cls, value: str) -> str:
        return str(parse_spec(value))

    @model_validator(mode="after")
    def _one_source(self):
        if bool(self.prompts) == bool(self.from_critique):
            raise ValueError("give exactly one of prompts (sample answers) or from_critique")
        return self


def pair_flags(a: str, b: str, a_cut: bool = False, b_cut: bool = False) -> str:
    """identical, empty, and a_cut_off / b_cut_off for an answer that hit the token limit."""
    flags = []
    if a.strip() == b.strip():
        flags.append("identical")
    if not a.strip() or not b.strip():
        flags.append("empty")
    flags += [f"{side}_cut_off" for side, cut in (("a", a_cut), ("b", b_cut)) if cut]
    return ",".join(flags)


def cut_off_sides(flags: str | None) -> list[str]:
    """The sides ("A", "B") of a pair whose answer was cut off at the token limit."""
    names = (flags or "").split(",")
    return [side.upper() for side in ("a", "b") if f"{side}_cut_off" in names]


def pairs_from_samples(rows: list[dict], job_id: str) -> list[dict]:
    """Every two answers of the same prompt form a pair: k answers give k(k-1)/2 pairs."""
    by_prompt: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["prompt_id"], r["sample"])):
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    out = []
    for prompt_id, answers in by_prompt.items():
        for n, (a, b) in enumerate(itertools.combinations(answers, 2)):
            out.append(
                {
                    "job_id": job_id,
                    "prompt_set": a["prompt_set"],
                    "prompt_id": prompt_id,
                    "pair": n,
                    "source": "samples",
                    "source_job": None,
                    "a_ref": f"sample {a['sample']}",
                    "b_ref": f"sample {b['sample']}",
                    "response_a": a["text"],
                    "response_b": b["text"],
                    "model": a["model"],
                    "sampling": a["sampling"],
                    "seed_a": a["seed"],
                    "seed_b": b["seed"],
                    "constitution_hash": None,
                    "flags": pair_flags(
                        a["text"],
                        b["text"],
                        a.get("finish_reason") == CUT_OFF,
                        b.get("finish_reason") == CUT_OFF,
                    ),
                }
            )
    return out


def pairs_from_traces(rows: list[dict], job_id: str, source_job: str, seed: int = 0) -> list[dict]:
    """Each complete trace gives one pair: its initial answer against its final revision.

    Which of the two is shown as A is drawn per trace (seeded), so a one-order label job
    does not always see the revision in the same position.
    """
    traces: dict[tuple, list[dict]] = {}
    for r in rows:
        traces.setdefault((r["prompt_id"], r["sample"]), []).append(r)
    out, counters = [], {}
    for (prompt_id, sample), steps in sorted(traces.items()):
        initial = next((r for r in steps if r["step"] == "initial"), None)
        revisions = [r for r in steps if r["step"] == "revision"]
        if initial is None or not revisions:
            continue
        final = max(revisions, key=lambda r: r["round"])
        sides = [("initial", initial), (f"revision {final['round']}", final)]
        if seeded_rng(seed, prompt_id, sample).random() < 0.5:
            sides.reverse()
        (a_ref, a), (b_ref, b) = sides
        n = counters.get(prompt_id, 0)
        counters[prompt_id] = n + 1
        out.append(
            {
                "job_id": job_id,
                "prompt_set": initial["prompt_set"],
                "prompt_id": prompt_id,
                "pair": n,
                "source": "critique",
                "source_job": source_job,
                "a_ref": a_ref,
                "b_ref": b_ref,
                "response_a": a["text"],
                "response_b": b["text"],
                "model": initial["model"],
                "sampling": initial["sampling"],
                "seed_a": a["seed"],
                "seed_b": b["seed"],
                "constitution_hash": initial["constitution_hash"],
                "flags": pair_flags(
                    a["text"],
                    b["text"],
                    a.get("finish_reason") == CUT_OFF,
                    b.get("finish_reason") == CUT_OFF,
                ),
            }
        )
    return out


def submit_pairs(store: Store, config: dict, label: str | None = None):
    """Check a pairs config against the store, then submit the job."""

    cfg = jobs.validate_config("pairs", config)
    if cfg.prompts:
        select_prompts(store, cfg.prompts, cfg.limit)
    else:
        source = jobs.get_job(store, cfg.from_critique)
        if source.kind != "critique":
            raise CaiError(
                f"job {source.id} is a {source.kind} job; from_critique needs a critique job"
            )
    return jobs.submit(store, "pairs", config, label=label)


def run_pairs(ctx: JobContext, config: PairsConfig) -> None:

    previous = ctx.resume("pairs", key=("prompt_id", "pair"))
    if config.from_critique:
        ctx.phase("reading the critique job's traces")
        source = jobs.get_job(ctx.store, config.from_critique)
        jobs.ingest(ctx.store, source)
        traces = ctx.store.traces(source.id)
        if not traces:
            raise CaiError(f"critique job {source.id} has no traces ({source.status})")
        if config.limit:
            keep = sorted({r["prompt_id"] for r in traces})[: config.limit]
            traces = [r for r in traces if r["prompt_id"] in set(keep)]
        pairs = pairs_from_traces(traces, ctx.job_id, source.id, config.seed)
        if not pairs:
            raise CaiError(f"critique job {source.id} has no trace with a revision to pair")
    else:
        prompts = select_prompts(ctx.store, config.prompts, config.limit)
        set_name, _ = parse_prompt_ref(config.prompts)
        ctx.progress(unit="answers")  # sampled first; the count turns to pairs after
        ctx.phase(f"sampling the first batch of {config.samples} answers per prompt")
        answers = generate_answers(
            ctx, prompts, set_name, config.model, config.sampling, config.samples, config.shard_rows
        )
        ctx.check_cancelled()
        pairs = pairs_from_samples(answers, ctx.job_id)
    # progress counts pairs now, like the label job that scores them
    ctx.progress(done=len(previous.done), total=len(pairs), unit="pairs")
    ctx.phase("writing the pairs")
    with ctx.writer("pairs", flush_rows=config.shard_rows, done=len(previous.done)) as out:
        out.add(previous.pending(pairs))
    flagged = {
        f: sum(f in p["flags"].split(",") for p in pairs)
        for f in ("identical", "empty", "a_cut_off", "b_cut_off")
    }
    ctx.event("pairs", pairs=len(pairs), **flagged)
    ctx.metric(pairs=len(pairs), **flagged)


JOB = JobKind(
    name="pairs",
    config=PairsConfig,
    run=run_pairs,
    description="RL-CAI: pairs of answers to label (k samples per prompt, or critique traces).",
    tables=("generations", "pairs"),
)
