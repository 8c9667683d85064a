"""RL-CAI pairs (`pairs` job): two answers to one prompt, for a feedback model or a person to
compare. Either k >= 2 sampled answers per prompt, every two of them a pair; or, from a critique
job, each trace's initial answer against its final revision; or (`contrastive`, RLCD) two answers
per prompt under a positive and a negative system prompt, the better side known by construction
(see `contrastive`).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cai_engine import jobs
from cai_engine.contrastive import Plan
from cai_engine.errors import CaiError
from cai_engine.generate import _row as generation_row
from cai_engine.jobs import JobKind
from cai_engine.models import EMBEDDED, SamplingParams, parse_spec
from cai_engine.models.base import CUT_OFF
from cai_engine.prompts import count_prompts, iter_prompts, parse_prompt_ref
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
    seed: int = Field(
        0,
        ge=0,
        description="Seeds which answer of a critique or contrastive pair is shown as A, and the"
        " principle drawn for each contrastive pair.",
    )
    contrastive: bool = Field(
        False,
        description="RLCD: answer each prompt twice with the same sampling, under a positive and"
        " a negative system prompt from a principle drawn per prompt; the better side is known"
        " by construction.",
    )
    constitution: str | None = Field(
        None,
        description="Contrastive pairs: the constitution whose principles give the system"
        " prompts, e.g. harmless or harmless@2 (pinned at submit).",
    )
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=1.0, max_new_tokens=160)
    )
    imported: str | None = Field(
        None,
        description="Set by `cai import`: the file these pairs were imported from (prompts names"
        " the prompt set made from its conversations). Such a job samples nothing.",
    )
    shard_rows: int = Field(64, gt=0, le=100_000, description="Rows per shard (at most).")
    chunk_prompts: int = Field(
        256,
        gt=0,
        le=100_000,
        description="Prompts (or critique traces) the job takes at a time: memory holds one"
        " chunk; the pairs do not depend on it.",
    )

    @field_validator("model")
    @classmethod
    def _spec(cls, value: str) -> str:
        return str(parse_spec(value))

    @model_validator(mode="after")
    def _one_source(self):
        if self.imported and (self.from_critique or self.contrastive):
            raise ValueError("imported pairs come from a file: leave out from_critique and"
                             " contrastive")  # fmt: skip
        if bool(self.prompts) == bool(self.from_critique):
            raise ValueError("give exactly one of prompts (sample answers) or from_critique")
        if self.contrastive:
            if self.from_critique:
                raise ValueError(
                    "contrastive pairs answer prompts: give prompts, not from_critique"
                )
            if not self.constitution:
                raise ValueError("contrastive pairs need a constitution (its principles give the"
                                 " system prompts)")  # fmt: skip
            if self.samples != 2:
                raise ValueError("contrastive pairs are two answers per prompt (positive and"
                                 " negative): leave samples at 2")  # fmt: skip
        elif self.constitution:
            raise ValueError("constitution is for contrastive pairs only: add contrastive, or"
                             " leave the constitution out")  # fmt: skip
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
    return list(trace_pairs(sorted(traces.items()), job_id, source_job, seed))


def trace_pairs(
    traces: Iterable[tuple[tuple[str, int], list[dict]]], job_id: str, source_job: str, seed: int
) -> Iterator[dict]:
    """`pairs_from_traces` for traces that come as ((prompt id, sample), steps) in that order,
    e.g. a job read a page at a time: a pair's number counts the prompt's earlier pairs."""
    counting, n = None, 0  # the prompt whose pairs are being numbered, and its next number
    for (prompt_id, sample), steps in traces:
        initial = next((r for r in steps if r["step"] == "initial"), None)
        revisions = [r for r in steps if r["step"] == "revision"]
        if initial is None or not revisions:
            continue
        final = max(revisions, key=lambda r: r["round"])
        sides = [("initial", initial), (f"revision {final['round']}", final)]
        if seeded_rng(seed, prompt_id, sample).random() < 0.5:
            sides.reverse()
        (a_ref, a), (b_ref, b) = sides
        if prompt_id != counting:
            counting, n = prompt_id, 0
        yield {
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
        n += 1


def submit_pairs(store: Store, config: dict, label: str | None = None):
    """Check a pairs config against the store, then submit the job."""

    cfg = jobs.validate_config("pairs", config)
    if cfg.imported:
        raise CaiError("imported pairs are recorded by `cai import`, not submitted as a job")
    if cfg.contrastive:  # the exact version, even if a newer one is saved while the job runs
        version = store.get_version(cfg.constitution)
        Plan.of(version, cfg.seed)  # a constitution with no principle to draw is refused now
        config = {**config, "constitution": version.pinned}
    if cfg.prompts:
        count_prompts(store, cfg.prompts, cfg.limit)  # an empty selection is refused now
    else:
        source = jobs.get_job(store, cfg.from_critique)
        if source.kind != "critique":
            raise CaiError(
                f"job {source.id} is a {source.kind} job; from_critique needs a critique job"
            )
    return jobs.submit(store, "pairs", config, label=label)


FLAGS = ("identical", "empty", "a_cut_off", "b_cut_off")


def run_pairs(ctx: JobContext, config: PairsConfig) -> None:
    if config.imported:
        raise CaiError(f"these pairs were imported from {config.imported}; there is nothing to run")

    # pairs an earlier attempt wrote, asked a chunk at a time
    with ctx.resume_index("pairs", key=("prompt_id", "pair")) as written:
        if config.from_critique:
            total, chunks = _critique_pairs(ctx, config)
            ctx.progress(done=written.keys, total=total, unit="pairs")
            ctx.phase("writing the pairs")
        else:
            chunks = _sample_pairs(ctx, config, written)
        # from a critique job progress counts pairs; sampling counts answers (see below)
        done = written.keys if config.from_critique else None
        with ctx.writer("pairs", flush_rows=config.shard_rows, done=done) as out:
            for pairs in chunks:
                done = written.done_among("prompt_id", sorted({p["prompt_id"] for p in pairs}))
                out.add([p for p in pairs if (p["prompt_id"], p["pair"]) not in done])
    ctx.check_cancelled()
    # the counts, over every pair the job wrote (in this attempt or before)
    with ctx.resume_index("pairs", key=("prompt_id", "pair")) as written:
        counts = written.aggregate(
            ", ".join(
                f"count(*) FILTER (WHERE list_contains(string_split(flags, ','), '{f}'))"
                for f in FLAGS  # fixed names, not values
            )
        ) or (0,) * len(FLAGS)
        n = written.keys
    flagged = dict(zip(FLAGS, (int(c) for c in counts), strict=True))
    ctx.progress(done=n, total=n, unit="pairs", force=True)
    ctx.event("pairs", pairs=n, **flagged)
    ctx.metric(pairs=n, **flagged)


def _critique_pairs(ctx: JobContext, config: PairsConfig) -> tuple[int, Iterator[list[dict]]]:
    """How many pairs the critique job gives, and its pairs a page of traces at a time."""
    ctx.phase("reading the critique job's traces")
    source = jobs.get_job(ctx.store, config.from_critique)
    jobs.ingest(ctx.store, source)
    if not ctx.store.trace_facets(source.id)["traces"]:
        raise CaiError(f"critique job {source.id} has no traces ({source.status})")
    total = ctx.store.count_revised_traces(source.id, config.limit)
    if not total:
        raise CaiError(f"critique job {source.id} has no trace with a revision to pair")

    def traces() -> Iterator[tuple[tuple[str, int], list[dict]]]:
        after, last, prompts = None, None, 0
        while page := ctx.store.trace_rows_page(
            source.id, after=after, limit=config.chunk_prompts, answers_only=True
        ):
            for key, steps in itertools.groupby(page, lambda r: (r["prompt_id"], r["sample"])):
                if key[0] != last:
                    last, prompts = key[0], prompts + 1
                    if config.limit and prompts > config.limit:
                        return  # the first `limit` prompts only
                yield key, list(steps)
            after = (page[-1]["prompt_id"], page[-1]["sample"])

    pairs = trace_pairs(traces(), ctx.job_id, source.id, config.seed)

    def chunks() -> Iterator[list[dict]]:
        while chunk := list(itertools.islice(pairs, config.chunk_prompts)):
            yield chunk

    return total, chunks()


def _sample_pairs(ctx: JobContext, config: PairsConfig, written) -> Iterator[list[dict]]:
    """Sample `config.samples` answers per prompt, a chunk of prompts at a time, and yield
    each chunk's pairs. Answers go to the `generations` shards as batches finish; a resumed
    job reads back only the answers of prompts whose pairs it has not written.

    Contrastive pairs are the same loop: sample 0 answers under the positive system prompt,
    sample 1 under the negative one, both with the same sampling (the same seed)."""
    set_name, _ = parse_prompt_ref(config.prompts)
    k = config.samples
    per_prompt = 1 if config.contrastive else k * (k - 1) // 2
    if config.contrastive:
        plan = Plan.of(ctx.store.get_version(config.constitution), config.seed)
        ctx.event("constitution", ref=plan.version.ref, hash=plan.version.hash)
        conversation, seeds, make_pairs = plan.conversation, lambda sample: 0, plan.pairs
    else:
        conversation = lambda p, sample: p.messages  # noqa: E731
        seeds, make_pairs = lambda sample: sample, pairs_from_samples
    n_prompts = count_prompts(ctx.store, config.prompts, config.limit)
    prompts = iter_prompts(ctx.store, config.prompts, config.limit, page=config.chunk_prompts)
    # sampled first: progress counts answers, and turns to pairs at the end
    answered = ctx.resume_index(
        "generations",
        key=("prompt_id", "sample"),
        total=n_prompts * k,
        tokens="completion_tokens",
        unit="answers",
    )
    ctx.phase(f"sampling the first batch of {k} answers per prompt")
    with (
        answered,
        ctx.lazy_model(config.model) as model,
        ctx.writer(
            "generations",
            flush_rows=config.shard_rows,
            done=answered.keys,
            tokens="completion_tokens",
        ) as out,
    ):
        while chunk := list(itertools.islice(prompts, config.chunk_prompts)):
            ids = [p.prompt_id for p in chunk]
            paired = Counter(pid for pid, _ in written.done_among("prompt_id", ids))
            todo = [p for p in chunk if paired[p.prompt_id] < per_prompt]
            if not todo:
                continue  # every pair of the chunk was written before
            # 1) the answers an earlier attempt gave, then the rest, sample by sample
            have = answered.done_among("prompt_id", [p.prompt_id for p in todo])
            rows = answered.rows_for("prompt_id", sorted({pid for pid, _ in have}))
            rows = [r for r in rows if paired[r["prompt_id"]] < per_prompt]
            for sample in range(k):
                batch = [p for p in todo if (p.prompt_id, sample) not in have]
                if batch:
                    messages = [conversation(p, sample) for p in batch]
                    params = config.sampling.model_copy(
                        update={"seed": config.sampling.seed + seeds(sample)}
                    )
                    rows += _answer(ctx, model(), batch, messages, set_name, config, params,
                                    sample, out.add)  # fmt: skip
                ctx.check_cancelled()  # a prompt is paired only once all its answers exist
            # 2) every two answers of a prompt form a pair (contrastive: its two answers)
            yield make_pairs(rows, ctx.job_id)


def _answer(
    ctx: JobContext, model, batch, messages, set_name, config, params, sample: int, emit
) -> list[dict]:
    """Answer `batch` (its conversations `messages`) once as sample `sample` with `params`
    (ordinary pairs: seed `seed + sample`, as `generate` does); each finished batch of the
    model goes to `emit`. Returns the rows."""
    rows: list[dict] = []

    def save(indices, completions):
        new = [
            generation_row(ctx, set_name, batch[i].prompt_id, sample, config.model, params, c)
            for i, c in zip(indices, completions, strict=True)
            if c.finish_reason != "cancelled"  # abandoned: not stored, redone on resume
        ]
        emit(new)
        rows.extend(new)

    model.chat(messages, params, should_stop=lambda: ctx.cancelled, on_batch=save)
    return rows


JOB = JobKind(
    name="pairs",
    config=PairsConfig,
    run=run_pairs,
    description="RL-CAI: pairs of answers to label (k samples per prompt, critique traces, or"
    " contrastive: a positive and a negative system prompt).",
    tables=("generations", "pairs"),
)
