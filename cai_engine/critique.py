"""SL-CAI: the model answers, critiques its answer under a principle, revises it, and repeats.

For each prompt (Bai et al. 2022, §3):
1. generate the initial answer;
2. for rounds k = 1..n, draw a principle (at random for that round, by weight, seeded), ask
   for a critique with its `critique_request`, then for a revision with its
   `revision_request`; the revision is the answer the next round critiques.
The conversation grows as chat turns, after few-shot examples from the constitution's bank.
A job takes its prompts a chunk at a time (`chunk_prompts`): each step runs batched across
the chunk's traces, and memory holds one chunk however big the set. Every completed step
becomes a row of the `traces` table, keyed by (job, prompt, sample, round, step): a resumed
job redoes nothing, and reads back only the traces it had started.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cai_engine import jobs
from cai_engine.constitution import Constitution, FewShot, Principle
from cai_engine.errors import CaiError
from cai_engine.jobs import JobKind
from cai_engine.models import EMBEDDED, SamplingParams, parse_spec
from cai_engine.prompts import count_prompts, iter_prompts, parse_prompt_ref
from cai_engine.seeding import seeded_rng
from cai_engine.traces import edit_size

if TYPE_CHECKING:
    from cai_engine.runner import JobContext
    from cai_engine.store import Store


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
    reuse_cache: bool = Field(
        True,
        description="Local models: each trace keeps its keys and values from one step to the"
        " next, so a step prefills only its new turns, not the whole conversation again.",
    )
    seed: int = Field(0, ge=0, description="Seeds principle draws and sampling.")
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(max_new_tokens=160))
    shard_rows: int = Field(64, gt=0, le=100_000, description="Rows per shard (at most).")
    # 256 = 4 CPU batches of 64: each step still runs full batches, and a job holds one chunk
    chunk_prompts: int = Field(
        256,
        gt=0,
        le=100_000,
        description="Prompts a job takes at a time: each chunk runs all its steps, then the next"
        " starts (memory holds one chunk; texts do not depend on it).",
    )

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
    """Each few-shot as a block of chat turns: question, answer, then critique request,
    critique, revision request and revision for each round (a multi-round few-shot has
    several, as a multi-round trace does)."""
    blocks = []
    for shot in shots:
        p = c.principle(shot.principle) if shot.principle else c.principles[0]
        rounds = [
            (r.critique_request, r.critique, r.revision_request, r.revision)
            for r in shot.earlier_rounds
        ] + [
            (
                shot.critique_request or p.critique_request,
                shot.critique,
                shot.revision_request or p.revision_request,
                shot.revision,
            )
        ]
        blocks.append(
            [{"role": m.role, "content": m.content} for m in shot.conversation]
            + [
                {"role": role, "content": text}
                for r in rounds
                for role, text in zip(("user", "assistant") * 2, r, strict=True)
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


class Earlier(Protocol):
    """What an earlier attempt of a job did, asked one chunk of traces at a time."""

    def for_chunk(self, keys: list[tuple[str, int]]) -> tuple[set[tuple[str, int]], list[dict]]:
        """Of these (prompt id, sample) traces: the ones finished before (skipped whole), and
        the step rows of the others that were started."""
        ...


class _DoneRows:
    """`Earlier` from rows in memory (the plain function's `done`): every row is replayed."""

    def __init__(self, rows: list[dict]):
        self.by_trace: dict[tuple[str, int], list[dict]] = {}
        for r in rows:
            self.by_trace.setdefault((r["prompt_id"], r["sample"]), []).append(r)

    def for_chunk(self, keys):
        return set(), [r for k in keys for r in self.by_trace.get(k, [])]


class ShardsDone:
    """`Earlier` from a job's `traces` shards (a `ShardIndex` keyed by prompt id and sample):
    finished traces are skipped unread, and only the rows of started ones are read back."""

    def __init__(self, index, steps_per_trace: int):
        self.index, self.steps = index, steps_per_trace

    def for_chunk(self, keys):
        counts = self.index.done_among("prompt_id", sorted({p for p, _ in keys}))
        wanted = set(keys)
        complete = {k for k, n in counts.items() if n >= self.steps and k in wanted}
        started = {k for k, n in counts.items() if n < self.steps and k in wanted}
        if not started:
            return complete, []
        rows = self.index.rows_for("prompt_id", sorted({p for p, _ in started}))
        return complete, [r for r in rows if (r["prompt_id"], r["sample"]) in started]


def critique(
    prompts: Iterable,
    constitution: Constitution,
    constitution_hash: str,
    model,
    config: CritiqueConfig,
    *,
    prompt_set: str = "",
    job_id: str = "",
    done: list[dict] | Earlier | None = None,
    emit: Callable[[list[dict]], None] | None = None,
    event: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict]:
    """Run (or continue) the critique→revision loop; returns every trace row, old and new
    (see `critique_chunks`, which a job uses to hold one chunk at a time).

    `done` holds rows from an earlier attempt (or an `Earlier` that reads them chunk by
    chunk); `emit(rows)` receives new rows as each batch of a step completes.
    """
    out: list[dict] = []
    for rows in critique_chunks(
        prompts,
        constitution,
        constitution_hash,
        model,
        config,
        prompt_set=prompt_set,
        job_id=job_id,
        done=done,
        emit=emit,
        event=event,
        should_stop=should_stop,
    ):
        out += rows
    return out


def critique_chunks(
    prompts: Iterable,
    constitution: Constitution,
    constitution_hash: str,
    model,
    config: CritiqueConfig,
    *,
    prompt_set: str = "",
    job_id: str = "",
    done: list[dict] | Earlier | None = None,
    emit: Callable[[list[dict]], None] | None = None,
    event: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[list[dict]]:
    """The critique→revision loop, `config.chunk_prompts` prompts at a time: each chunk runs
    all its steps (each step batched across the chunk's traces), hands its new rows to `emit`
    as batches finish, yields its rows (old and new), and is dropped. Memory holds one chunk,
    however many prompts `prompts` (a list or a stream) yields. Traces that `done` says were
    finished before are skipped, and not yielded when `done` is an `Earlier`.
    """
    # 1) the principles to draw from, and the few-shot examples that open every conversation
    principles = check_constitution(constitution, config)
    by_id = {p.id: p for p in constitution.principles}
    shots = few_shot_turns(select_few_shots(constitution.few_shots, config.few_shots), constitution)
    event = event or (lambda *a, **k: None)
    stopped = should_stop or (lambda: False)
    earlier = done if hasattr(done, "for_chunk") else _DoneRows(done or [])
    skipped, skipped_tokens, kept = 0, 0, None
    stream = iter(prompts)
    while chunk := list(itertools.islice(stream, config.chunk_prompts)):
        if stopped():
            return
        # 2) plan the chunk's traces (their principle for each round), then replay what is done
        run = _Traces(config, constitution, constitution_hash, prompt_set, job_id, by_id, emit)
        keys = [(p.prompt_id, s) for p in chunk for s in range(config.samples)]
        finished, rows = earlier.for_chunk(keys)
        run.plan(chunk, principles, skip=finished)
        run.replay(rows)
        # 3) each step in turn, batched across every trace of the chunk that has reached it
        for index in range(config.steps_per_trace):
            if stopped():
                return
            if not run.waiting_for(index):
                continue
            skipped_tokens += _step(run, index, model, shots, event, should_stop)
            if stopped():
                return
        skipped += sum(1 for r in run.added if "skipped" in r["flags"].split(","))
        kept = model.drop_cache() if _reuses_cache(model, config) else None
        yield run.everything()
    # 4) what skipping unneeded revisions and keeping each trace's cache saved
    if config.skip_unchanged:
        event("skipped_revisions", revisions=skipped, tokens_saved=skipped_tokens)
    if _reuses_cache(model, config) and kept:
        event("kv_cache", **kept)


def _reuses_cache(model, config: CritiqueConfig) -> bool:
    return config.reuse_cache and getattr(model, "reuses_cache", False)


@dataclass
class _Traces:
    """The traces of one chunk as they grow: each (prompt id, sample)'s step rows so far, its
    prompt and principle plan, and the rows this call added."""

    config: CritiqueConfig
    constitution: Constitution
    constitution_hash: str
    prompt_set: str
    job_id: str
    by_id: dict[str, Principle]
    emit: Callable[[list[dict]], None] | None
    steps: dict[tuple[str, int], list[dict]] = field(default_factory=dict)
    plans: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    prompt_of: dict[tuple[str, int], object] = field(default_factory=dict)
    added: list[dict] = field(default_factory=list)

    def plan(self, prompts: list, principles: list[Principle], skip=frozenset()) -> None:
        c = self.config
        for p in prompts:
            for s in range(c.samples):
                key = (p.prompt_id, s)
                if key in skip:  # finished by an earlier attempt
                    continue
                self.steps[key] = []
                self.prompt_of[key] = p
                self.plans[key] = draw_principles(
                    principles, p.prompt_id, s, c.rounds, c.seed, c.principle_sampling
                )

    def replay(self, done: list[dict]) -> None:
        for row in sorted(done, key=lambda r: (r["round"], STEPS.index(r["step"]))):
            key = (row["prompt_id"], row["sample"])
            if key in self.steps:
                self.steps[key].append(_with_requests(dict(row), self.by_id))

    def waiting_for(self, index: int) -> list[tuple[str, int]]:
        """The traces whose next step is `index`."""
        return [key for key, rows in self.steps.items() if len(rows) == index]

    def principle_id(self, key, round_: int) -> str | None:
        return self.plans[key][round_ - 1] if round_ else None

    def row(self, key, index, principle_id, text, c, flags=(), dropped=0) -> dict:
        """The row of step `index` of trace `key`; `c` is its completion (None: skipped)."""
        round_, kind = step_of(index)
        if not text.strip():
            flags = (*flags, "empty")
        row = {
            "job_id": self.job_id,
            "prompt_set": self.prompt_set,
            "prompt_id": self.prompt_of[key].prompt_id,
            "sample": key[1],
            "round": round_,
            "step": kind,
            "principle_id": principle_id,
            "constitution": self.constitution.name,
            "constitution_hash": self.constitution_hash,
            "model": self.config.model,
            "sampling": self.config.sampling.model_dump_json(),
            "seed": self.config.seed,
            "text": text,
            "prompt_tokens": c.prompt_tokens if c else 0,
            "completion_tokens": c.completion_tokens if c else 0,
            "latency_s": c.latency_s if c else 0.0,
            "finish_reason": c.finish_reason if c else "skipped",
            "truncated_tokens": c.truncated_tokens if c else 0,
            "few_shots_dropped": dropped,
            "flags": ",".join(flags),
            "edit_size": None,
            "changed": None,
        }
        if kind == "revision":  # against the answer it revises (pages show it per principle)
            before = next(s["text"] for s in reversed(self.steps[key]) if s["step"] != "critique")
            row["edit_size"], row["changed"] = edit_size(before, text), text != before
        return _with_requests(row, self.by_id)

    def commit(self, batch: list[tuple]) -> None:
        """Append finished `(key, row)` steps to their traces and hand them to `emit`."""
        for key, row in batch:
            self.steps[key].append(row)
            self.added.append(row)
        if self.emit and batch:
            self.emit([_public(r) for _, r in batch])

    def everything(self) -> list[dict]:
        return [_public(r) for rows in self.steps.values() for r in rows]


def _step(run: _Traces, index: int, model, shots, event, should_stop) -> int:
    """Ask for step `index` of every trace that has reached it; returns the tokens that
    skipped revisions saved."""
    round_, kind = step_of(index)
    skipped, asks, skipped_tokens = [], [], 0  # asks: (key, conversation, few-shots dropped)
    # a) a revision the critique calls unneeded repeats the answer; the rest ask the model
    for key in run.waiting_for(index):
        rows = run.steps[key]
        principle_id = run.principle_id(key, round_)
        if kind == "revision" and run.config.skip_unchanged and says_no_change(rows[-1]["text"]):
            previous = rows[-2]["text"]
            row = run.row(key, index, principle_id, previous, None, flags=("skipped",))
            skipped_tokens += model.count_tokens([{"role": "assistant", "content": previous}]) or 0
            skipped.append((key, row))
            continue
        principle = run.by_id[principle_id] if principle_id else None
        base = conversation_for(run.prompt_of[key].messages, rows, index, principle)
        asks.append((key, *_fit_few_shots(shots, base, model, run.config.sampling)))
    dropped = [d for _, _, d in asks]
    if any(dropped):
        event(
            "few_shots_dropped", step=index, traces=sum(1 for d in dropped if d), most=max(dropped)
        )
    run.commit(skipped)

    # b) each finished batch becomes rows at once
    def save(indices, completions):
        batch = []
        for i, c in zip(indices, completions, strict=True):
            if c.finish_reason == "cancelled":
                continue
            key, _, n_dropped = asks[i]
            row = run.row(key, index, run.principle_id(key, round_), c.text, c, dropped=n_dropped)
            if c.truncated_tokens:
                event(
                    "truncated",
                    prompt_id=key[0],
                    sample=key[1],
                    step=index,
                    tokens=c.truncated_tokens,
                )
            batch.append((key, row))
        run.commit(batch)

    if asks:
        reuse = {}
        if _reuses_cache(model, run.config):  # the last step's keys are not needed again
            last = index == run.config.steps_per_trace - 1
            reuse = {"cache_keys": [a[0] for a in asks], "keep_cache": not last}
        model.chat(
            [a[1] for a in asks],
            run.config.sampling,
            should_stop=should_stop,
            on_batch=save,
            **reuse,
        )
    return skipped_tokens


def _fit_few_shots(shots, base: list[dict], model, sampling) -> tuple[list[dict], int]:
    """Few-shot blocks + `base`, dropping the oldest blocks until the answer fits the model's
    context; returns the conversation and how many blocks were dropped."""
    context = model.context_length
    blocks = list(shots)
    dropped = 0
    while (
        blocks
        and context
        and (
            (model.count_tokens([t for b in blocks for t in b] + base) or 0)
            + sampling.max_new_tokens
            > context
        )
    ):
        blocks.pop(0)  # the oldest few-shot goes first
        dropped += 1
    return [t for b in blocks for t in b] + base, dropped


def _with_requests(row: dict, by_id: dict[str, Principle]) -> dict:
    """Attach the requests that asked for this step, so later steps can replay the dialogue."""
    p = by_id.get(row.get("principle_id") or "")
    row["_critique_request"] = p.critique_request if p else ""
    row["_revision_request"] = p.revision_request if p else ""
    return row


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


# -- the job --------------------------------------------------------------------------------


def submit(store: Store, config: dict, label: str | None = None):
    """Check a critique config against the store, pin the constitution version, and submit.

    Everything that can be checked before a process starts is: the config's keys and values,
    the constitution (and that it has a principle to draw), and a non-empty prompt selection.
    """

    cfg = jobs.validate_config("critique", config)
    version = store.get_version(cfg.constitution)
    check_constitution(version.constitution, cfg)
    count_prompts(store, cfg.prompts, cfg.limit)  # an empty selection is refused now
    pinned = {**config, "constitution": version.pinned}
    return jobs.submit(store, "critique", pinned, label=label)


def run(ctx: JobContext, config: CritiqueConfig) -> None:

    version = ctx.store.get_version(config.constitution)
    constitution = version.constitution
    check_constitution(constitution, config)
    set_name, _ = parse_prompt_ref(config.prompts)
    total = count_prompts(ctx.store, config.prompts, config.limit) * (
        config.samples * config.steps_per_trace
    )
    # what earlier attempts finished, asked chunk by chunk: never every earlier row at once
    earlier = ctx.resume_index(
        "traces",
        key=("prompt_id", "sample"),
        total=total,
        tokens="completion_tokens",
        unit="steps",
        count="rows",
    )
    with earlier:
        if earlier.rows >= total:
            return
        ctx.phase(
            "answering the first batch of prompts" if not earlier.rows else "resuming: next batch"
        )
        prompts = iter_prompts(ctx.store, config.prompts, config.limit, page=config.chunk_prompts)
        with ctx.model(config.model) as model:
            ctx.event("constitution", ref=version.ref, hash=version.hash)
            with ctx.writer(
                "traces",
                flush_rows=config.shard_rows,
                done=earlier.rows,
                tokens="completion_tokens",
            ) as out:
                for _ in critique_chunks(  # each chunk's rows went to the shards as they came
                    prompts,
                    constitution,
                    version.hash,
                    model,
                    config,
                    prompt_set=set_name,
                    job_id=ctx.job_id,
                    done=ShardsDone(earlier, config.steps_per_trace),
                    emit=out.add,
                    event=ctx.event,
                    should_stop=lambda: ctx.cancelled,
                ):
                    pass
    ctx.check_cancelled()
    ctx.metric(rows=out.done, tokens=ctx.tokens)


JOB = JobKind(
    name="critique",
    config=CritiqueConfig,
    run=run,
    description="SL-CAI: answer, then critique and revise under drawn principles.",
    tables=("traces",),
)
