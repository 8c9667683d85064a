"""SL-CAI: the model answers, critiques its answer under a principle, revises it, and repeats.

For each prompt (Bai et al. 2022, §3):
1. generate the initial answer;
2. for rounds k = 1..n, draw a principle (at random for that round, by weight, seeded), ask
   for a critique with its `critique_request`, then for a revision with its
   `revision_request`; the revision is the answer the next round critiques.
The conversation grows as chat turns, after few-shot examples from the constitution's bank.
Each step runs batched across all prompts, and every completed step becomes a row of the
`traces` table, keyed by (job, prompt, sample, round, step): a resumed job redoes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cai_engine.constitution import Constitution, FewShot, Principle
from cai_engine.errors import CaiError
from cai_engine.jobs import JobKind
from cai_engine.models import EMBEDDED, SamplingParams, parse_spec
from cai_engine.seeding import seeded_rng

STEPS = ("initial", "critique", "revision")

# A critique "says no change is needed" when it matches one of these (case-insensitive).
# The rule is deliberately simple and visible; it only matters with `skip_unchanged`.
NO_CHANGE_PATTERNS = [
    r"\bno (?:changes?|revisions?|edits?) (?:is |are )?(?:needed|necessary|required)\b",
    r"\b(?:does not|doesn't|do not|don't) need (?:any )?(?:changes?|revision|to be (?:changed|revised))\b",
    r"\bnothing (?:needs to be|to) (?:changed?|revised?|fix(?:ed)?)\b",
    r"\b(?:is|was) already (?:fine|good|appropriate|harmless|helpful|acceptable)\b",
]
_NO_CHANGE = re.compile("|".join(NO_CHANGE_PATTERNS), re.IGNORECASE)


def says_no_change(critique: str) -> bool:
    return bool(_NO_CHANGE.search(critique))


class CritiqueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    constitution: str = Field(description="Constitution reference, e.g. harmless or harmless@2.")
    prompts: str = Field(description="Prompt set and optional split, e.g. red-team:train.")
    model: str = Field(EMBEDDED, description="Model spec of the model that answers and revises.")
    rounds: int = Field(2, ge=1, le=16, description="Critique→revision rounds (the paper used 4).")
    limit: int | None = Field(None, gt=0, description="Use only the first N prompts.")
    samples: int = Field(1, ge=1, le=16, description="Independent traces per prompt.")
    principle_sampling: Literal["per_round", "per_prompt"] = Field(
        "per_round",
        description="Draw a principle each round (paper), or once per prompt (HF recipe).",
    )
    principle: str | None = Field(
        None, description="Use only this principle id (ablations; used even if disabled)."
    )
    few_shots: int = Field(
        2, ge=0, le=32, description="Few-shot examples from the bank to prepend."
    )
    skip_unchanged: bool = Field(
        False, description="Skip the revision when the critique says no change is needed."
    )
    seed: int = Field(0, ge=0, description="Seeds principle draws and sampling.")
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(max_new_tokens=160))
    shard_rows: int = Field(64, gt=0, le=100_000, description="Rows per shard (at most).")

    @field_validator("model")
    @classmethod
    def _spec(cls, value: str) -> str:
        return str(parse_spec(value))

    @property
    def steps_per_trace(self) -> int:
        return 1 + 2 * self.rounds


def check_constitution(c: Constitution, config) -> list[Principle]:
    """The principles a job may draw from (one, when `config.principle` fixes it); errors name
    what is wrong. Critique and label jobs share it."""
    if config.principle:
        try:
            return [c.principle(config.principle)]
        except KeyError:
            raise CaiError(
                f"principle '{config.principle}' is not in constitution '{c.name}'; "
                f"its ids: {', '.join(p.id for p in c.principles)}"
            ) from None
    enabled = c.enabled_principles
    if not enabled:
        raise CaiError(f"constitution '{c.name}' has every principle disabled; enable at least one")
    return enabled


def draw_principles(
    principles: list[Principle],
    prompt_id: str,
    sample: int,
    rounds: int,
    seed: int,
    mode: str = "per_round",
) -> list[str]:
    """The principle id for each round of one trace: weighted, seeded, independent of batching."""
    weights = [p.weight for p in principles]
    if mode == "per_prompt":
        (pick,) = seeded_rng(seed, prompt_id, sample).choices(principles, weights=weights)
        return [pick.id] * rounds
    return [
        seeded_rng(seed, prompt_id, sample, r).choices(principles, weights=weights)[0].id
        for r in range(1, rounds + 1)
    ]


def select_few_shots(bank: list[FewShot], n: int) -> list[FewShot]:
    """The first `n` few-shots, making sure one "no change needed" example is among them."""
    if n <= 0 or not bank:
        return []
    chosen = list(bank[:n])
    if not any(s.no_change for s in chosen):
        spare = next((s for s in bank[n:] if s.no_change), None)
        if spare is not None:
            chosen[-1] = spare
    return [s for s in bank if any(s is c for c in chosen)]  # keep the bank's order


def few_shot_turns(shots: list[FewShot], c: Constitution) -> list[list[dict]]:
    """Each few-shot as a block of chat turns: question, answer, critique, revision."""
    blocks = []
    for shot in shots:
        p = c.principle(shot.principle) if shot.principle else c.principles[0]
        blocks.append(
            [{"role": m.role, "content": m.content} for m in shot.conversation]
            + [
                {"role": "user", "content": p.critique_request},
                {"role": "assistant", "content": shot.critique},
                {"role": "user", "content": p.revision_request},
                {"role": "assistant", "content": shot.revision},
            ]
        )
    return blocks


def step_of(index: int) -> tuple[int, str]:
    """Step 0 is the initial answer; then critique and revision of round 1, of round 2, ..."""
    if index == 0:
        return 0, "initial"
    return (index + 1) // 2, "critique" if index % 2 else "revision"


def conversation_for(
    prompt_messages: list[dict], history: list[dict], next_index: int, principle: Principle | None
) -> list[dict]:
    """The chat turns that ask for step `next_index`, given the trace's earlier step rows."""
    turns = list(prompt_messages)
    for k, row in enumerate(history):
        round_, kind = step_of(k)
        if kind == "critique":
            turns.append({"role": "user", "content": row["_critique_request"]})
        elif kind == "revision":
            turns.append({"role": "user", "content": row["_revision_request"]})
        turns.append({"role": "assistant", "content": row["text"]})
    _, kind = step_of(next_index)
    if kind == "critique":
        turns.append({"role": "user", "content": principle.critique_request})
    elif kind == "revision":
        turns.append({"role": "user", "content": principle.revision_request})
    return turns


def critique(
    prompts: list,
    constitution: Constitution,
    constitution_hash: str,
    model,
    config: CritiqueConfig,
    *,
    prompt_set: str = "",
    job_id: str = "",
    done: list[dict] | None = None,
    emit: Callable[[list[dict]], None] | None = None,
    event: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict]:
    """Run (or continue) the critique→revision loop; returns every trace row, old and new.

    `done` holds rows from an earlier attempt; `emit(rows)` receives new rows as each batch
    of a step completes.
    """
    principles = check_constitution(constitution, config)
    by_id = {p.id: p for p in constitution.principles}
    shots = few_shot_turns(select_few_shots(constitution.few_shots, config.few_shots), constitution)
    event = event or (lambda *a, **k: None)
    traces: dict[tuple[str, int], list[dict]] = {}
    plans: dict[tuple[str, int], list[str]] = {}
    prompt_of = {}
    for p in prompts:
        for s in range(config.samples):
            key = (p.prompt_id, s)
            traces[key] = []
            prompt_of[key] = p
            plans[key] = draw_principles(
                principles, p.prompt_id, s, config.rounds, config.seed, config.principle_sampling
            )
    for row in sorted(done or [], key=lambda r: (r["round"], STEPS.index(r["step"]))):
        key = (row["prompt_id"], row["sample"])
        if key in traces:
            traces[key].append(_with_requests(dict(row), by_id))
    context = model.context_length
    rows_out: list[dict] = []
    skipped_tokens = 0

    def make_row(key, index, principle_id, text, c, flags=(), dropped=0):
        round_, kind = step_of(index)
        p = prompt_of[key]
        if not text.strip():
            flags = (*flags, "empty")
        return {
            "job_id": job_id,
            "prompt_set": prompt_set,
            "prompt_id": p.prompt_id,
            "sample": key[1],
            "round": round_,
            "step": kind,
            "principle_id": principle_id,
            "constitution": constitution.name,
            "constitution_hash": constitution_hash,
            "model": config.model,
            "sampling": config.sampling.model_dump_json(),
            "seed": config.seed,
            "text": text,
            "prompt_tokens": c.prompt_tokens if c else 0,
            "completion_tokens": c.completion_tokens if c else 0,
            "latency_s": c.latency_s if c else 0.0,
            "finish_reason": c.finish_reason if c else "skipped",
            "truncated_tokens": c.truncated_tokens if c else 0,
            "few_shots_dropped": dropped,
            "flags": ",".join(flags),
        }

    def everything() -> list[dict]:
        return [_public(r) for rows in traces.values() for r in rows]

    for index in range(config.steps_per_trace):
        if should_stop and should_stop():
            return everything()
        round_, kind = step_of(index)
        pending = [k for k, rows in traces.items() if len(rows) == index]
        if not pending:
            continue
        conversations, keys, dropped_counts = [], [], []
        new_rows = []
        for key in pending:
            principle = by_id[plans[key][round_ - 1]] if round_ else None
            if (
                kind == "revision"
                and config.skip_unchanged
                and says_no_change(traces[key][-1]["text"])
            ):
                previous = traces[key][-2]["text"]
                row = make_row(key, index, principle.id, previous, None, flags=("skipped",))
                skipped_tokens += (
                    model.count_tokens([{"role": "assistant", "content": previous}]) or 0
                )
                new_rows.append((key, _with_requests(row, by_id)))
                continue
            base = conversation_for(prompt_of[key].messages, traces[key], index, principle)
            blocks = list(shots)
            dropped = 0
            while (
                blocks
                and context
                and (
                    (model.count_tokens([t for b in blocks for t in b] + base) or 0)
                    + config.sampling.max_new_tokens
                    > context
                )
            ):
                blocks.pop(0)  # the oldest few-shot goes first
                dropped += 1
            conversations.append([t for b in blocks for t in b] + base)
            keys.append(key)
            dropped_counts.append(dropped)
        if any(dropped_counts):
            event(
                "few_shots_dropped",
                step=index,
                traces=sum(1 for d in dropped_counts if d),
                most=max(dropped_counts),
            )

        def save(
            indices,
            completions,
            keys=keys,
            dropped_counts=dropped_counts,
            index=index,
            round_=round_,
        ):
            batch = []
            for i, c in zip(indices, completions, strict=True):
                if c.finish_reason == "cancelled":
                    continue
                key = keys[i]
                principle_id = plans[key][round_ - 1] if round_ else None
                row = make_row(key, index, principle_id, c.text, c, dropped=dropped_counts[i])
                if c.truncated_tokens:
                    event(
                        "truncated",
                        prompt_id=key[0],
                        sample=key[1],
                        step=index,
                        tokens=c.truncated_tokens,
                    )
                batch.append((key, _with_requests(row, by_id)))
            _commit(batch)

        def _commit(batch):
            for key, row in batch:
                traces[key].append(row)
                rows_out.append(row)
            if emit and batch:
                emit([_public(r) for _, r in batch])

        _commit(new_rows)
        if conversations:
            model.chat(conversations, config.sampling, should_stop=should_stop, on_batch=save)
        if should_stop and should_stop():
            return everything()
    if config.skip_unchanged:
        skipped = sum(1 for r in rows_out if "skipped" in r["flags"].split(","))
        event("skipped_revisions", revisions=skipped, tokens_saved=skipped_tokens)
    return everything()


def _with_requests(row: dict, by_id: dict[str, Principle]) -> dict:
    """Attach the requests that asked for this step, so later steps can replay the dialogue."""
    p = by_id.get(row.get("principle_id") or "")
    row["_critique_request"] = p.critique_request if p else ""
    row["_revision_request"] = p.revision_request if p else ""
    return row


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


# -- the job --------------------------------------------------------------------------------


def submit(store, config: dict, label: str | None = None):
    """Check a critique config against the store, pin the constitution version, and submit.

    Everything that can be checked before a process starts is: the config's keys and values,
    the constitution (and that it has a principle to draw), and a non-empty prompt selection.
    """
    from cai_engine import jobs
    from cai_engine.prompts import select_prompts

    cfg = jobs.validate_config("critique", config)
    version = store.get_version(cfg.constitution)
    check_constitution(version.constitution, cfg)
    select_prompts(store, cfg.prompts, cfg.limit)
    pinned = {**config, "constitution": f"{version.name}@{version.hash[:12]}"}
    return jobs.submit(store, "critique", pinned, label=label)


def run(ctx, config: CritiqueConfig) -> None:
    from cai_engine.models import load_model
    from cai_engine.prompts import parse_prompt_ref, select_prompts

    version = ctx.store.get_version(config.constitution)
    constitution = version.constitution
    check_constitution(constitution, config)
    prompts = select_prompts(ctx.store, config.prompts, config.limit)
    set_name, _ = parse_prompt_ref(config.prompts)
    previous = ctx.run.read_shard_rows("traces")
    total = len(prompts) * config.samples * config.steps_per_trace
    ctx.progress(
        done=len(previous),
        total=total,
        tokens=sum(r["completion_tokens"] for r in previous),
        force=True,
    )
    if len(previous) >= total:
        return
    model = load_model(config.model, ctx.store.home)
    ctx.event("model_loaded", **model.info().details)
    ctx.event("constitution", ref=version.ref, hash=version.hash)
    out = ctx.buffer("traces", flush_rows=config.shard_rows)
    finished = len(previous)

    def emit(rows):
        nonlocal finished
        out.add(rows)
        finished += len(rows)
        ctx.add_tokens(sum(r["completion_tokens"] for r in rows))
        ctx.progress(done=finished)

    try:
        critique(
            prompts,
            constitution,
            version.hash,
            model,
            config,
            prompt_set=set_name,
            job_id=ctx.job_id,
            done=previous,
            emit=emit,
            event=ctx.event,
            should_stop=lambda: ctx.cancelled,
        )
    finally:
        out.flush()
        ctx.progress(done=finished, force=True)
    ctx.check_cancelled()
    ctx.metric(rows=finished, tokens=ctx.tokens)


JOB = JobKind(
    name="critique",
    config=CritiqueConfig,
    run=run,
    description="SL-CAI: answer, then critique and revise under drawn principles.",
    tables=("traces",),
)
