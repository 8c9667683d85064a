"""RL-CAI labels (`label` job): the feedback model's soft preference for each pair.

Each pair is scored as given and swapped (see `judge` for the question and the maths). In
chain-of-thought mode the model first writes "Let's think step-by-step: ...", the options are
scored after that text, and the probabilities are clamped (to [0.4, 0.6] by default), since
reasoning makes them nearly 0 or 1.

A label job can also label contrastive pairs by construction (`source = "construction"`): no
model is loaded, and each pair gets P(preferred side) = `score` (see `contrastive`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from cai_engine import jobs
from cai_engine.constitution import Constitution, Principle
from cai_engine.critique import check_constitution
from cai_engine.errors import CaiError
from cai_engine.jobs import JobKind
from cai_engine.judge import (
    ANSWER_PREFIX,
    COT_PREFIX,
    OPTIONS,
    Clamp,
    JudgeSettings,
    clamp,
    combine,
    comparison_turns,
    debias,
    draw_principle,
    fit_conversation,
    question_text,
    select_comparison_shots,
    soft_label,
)
from cai_engine.models import EMBEDDED, SamplingParams, parse_spec

if TYPE_CHECKING:
    from cai_engine.runner import JobContext
    from cai_engine.store import Store


class LabelConfig(JudgeSettings):
    model_config = ConfigDict(extra="forbid")

    pairs: str = Field(description="The pairs job whose pairs to label.")
    constitution: str | None = Field(
        None,
        description="Constitution reference, e.g. harmless or harmless@2 (required for judge"
        " labels; labels by construction use the pairs job's).",
    )
    source: Literal["judge", "construction", "dataset"] = Field(
        "judge",
        description="judge: the feedback model scores each pair; construction: contrastive pairs"
        " are labelled from their known better side, no model loaded; dataset: labels that came"
        " with imported pairs (`cai import`), recorded, never run.",
    )
    annotator: str | None = Field(
        None, description="Dataset labels: the source's annotator whose labels these are."
    )
    score: float = Field(
        1.0,
        gt=0.5,
        le=1.0,
        description="Labels by construction: P(the preferred answer is better) given to each pair.",
    )
    model: str = Field(EMBEDDED, description="Feedback model spec (local or openai).")
    both_orders: bool = Field(True, description="Score each pair as given and swapped.")
    cot: bool = Field(False, description="Chain of thought: reason first, then read the options.")
    clamp: Clamp = (0.4, 0.6)
    few_shots: int = Field(
        2, ge=0, le=16, description="Labelled comparisons from the constitution to prepend."
    )
    principle: str | None = Field(
        None, description="Use only this principle id (ablations; used even if disabled)."
    )
    limit: int | None = Field(None, gt=0, description="Label only the first N pairs.")
    seed: int = Field(0, ge=0, description="Seeds the principle drawn for each comparison.")
    cot_sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(
            temperature=0.0, max_new_tokens=128, stop=[ANSWER_PREFIX]
        ),
        description="How the chain of thought is sampled.",
    )
    batch_pairs: int = Field(
        64, gt=0, le=4096, description="Pairs scored together and saved as one shard."
    )

    @field_validator("model")
    @classmethod
    def _spec(cls, value: str) -> str:
        return str(parse_spec(value))

    @model_validator(mode="after")
    def _source(self):
        if self.source == "judge" and not self.constitution:
            raise ValueError("a judge needs a constitution (its principles' questions)")
        if self.source == "dataset" and (self.cot or self.principle):
            raise ValueError("dataset labels ask no judge: leave out cot and principle")
        if self.source == "construction" and (self.cot or self.principle):
            # (its model is never loaded: the rows name "construction" as their model)
            raise ValueError(
                "labels by construction ask no judge: leave out cot and principle (the pair's"
                " own principle is kept)"
            )
        return self


@dataclass
class _Question:
    pair: dict
    principle: Principle
    turns: list[list[dict]]  # per order: the conversation ending with the question (user turn)
    truncated_turns: int
    flags: list[str]
    prompt_tokens: int = 0
    few_shots: int = 0  # labelled comparisons prepended (the oldest go first when too long)


def label_pairs(
    pairs: Iterable[dict],
    constitution: Constitution,
    constitution_hash: str,
    model,
    config: LabelConfig,
    *,
    job_id: str = "",
    emit: Callable[[list[dict]], None] | None = None,
    event: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    position_bias: float | None = None,
) -> list[dict]:
    """Label `pairs` with `model` in batches of `config.batch_pairs`; returns one row per
    pair, in the order of `pairs`.

    `emit(rows)` receives each batch's rows as soon as they are scored. With
    `config.calibrate == "position"`, `position_bias` (logits, from the judge's check) is
    taken out of each order's P(first shown) (`judge.debias`), after any CoT clamp.
    """
    out: list[dict] = []
    for rows in label_batches(
        pairs,
        constitution,
        constitution_hash,
        model,
        config,
        job_id=job_id,
        emit=emit,
        event=event,
        should_stop=should_stop,
        position_bias=position_bias,
    ):
        out += rows
    return out


def label_batches(
    pairs: Iterable[dict],
    constitution: Constitution,
    constitution_hash: str,
    model,
    config: LabelConfig,
    *,
    job_id: str = "",
    emit: Callable[[list[dict]], None] | None = None,
    event: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    position_bias: float | None = None,
) -> Iterator[list[dict]]:
    """`label_pairs` a batch at a time: yields each batch's rows once scored, taking the
    next `config.batch_pairs` pairs from `pairs` (a list or a stream) only then."""
    principles = check_constitution(constitution, config)
    if config.calibrate == "position" and position_bias is None:
        raise CaiError("calibrate 'position' needs the judge's position bias from a judge check")
    bias = position_bias if config.calibrate == "position" else None
    event = event or (lambda *a, **k: None)
    shots = comparison_turns(
        select_comparison_shots(constitution.comparison_few_shots, config.few_shots),
        constitution,
        config.cot,
    )
    context = model.context_length
    # room the answer needs after the question: the prefill, the options, the reasoning
    reserve = 16 + (config.cot_sampling.max_new_tokens + 8 if config.cot else 0)
    stream = iter(pairs)
    while batch := list(itertools.islice(stream, config.batch_pairs)):
        if should_stop and should_stop():
            break
        t0 = time.perf_counter()
        questions, rows = [], []
        for pair in batch:
            q = _question(pair, principles, shots, model, context, reserve, config)
            if q is None:
                rows.append(_row(job_id, pair, None, config, constitution, constitution_hash))
                event("pair_overflow", prompt_id=pair["prompt_id"], pair=pair["pair"])
                continue
            if "identical" in pair["flags"].split(","):
                q.flags.append("identical")
                rows.append(
                    _row(job_id, pair, q, config, constitution, constitution_hash, 0.5, 0.5)
                )
                continue
            questions.append(q)
        scored = _score(questions, model, config, should_stop, bias)
        if scored is None:  # cancelled mid-batch: nothing of this batch is kept
            break
        for q, (p_ab, p_ba, cot, cot_tokens) in zip(questions, scored, strict=True):
            rows.append(
                _row(
                    job_id,
                    q.pair,
                    q,
                    config,
                    constitution,
                    constitution_hash,
                    p_ab,
                    p_ba,
                    cot=cot,
                    cot_tokens=cot_tokens,
                )
            )
        share = (time.perf_counter() - t0) / max(1, len(rows))
        for r in rows:
            r["latency_s"] = share
        position = {(p["prompt_id"], int(p["pair"])): i for i, p in enumerate(batch)}
        rows.sort(key=lambda r: position[(r["prompt_id"], r["pair"])])  # the input's order
        if emit:
            emit(rows)
        yield rows


def _question(pair, principles, shots, model, context, reserve, config) -> _Question | None:
    """The question(s) for one pair, made to fit the context: first the oldest few-shots go,
    then the conversation's middle turns, then the middle of its longest turns; never the
    options. None when even the options alone do not fit."""
    principle = draw_principle(principles, pair["prompt_id"], pair["pair"], config.seed)
    messages = pair["prompt_messages"]
    flags = [f for f in pair["flags"].split(",") if f == "empty"]
    orders = [(pair["response_a"], pair["response_b"])]
    if config.both_orders:
        orders.append((pair["response_b"], pair["response_a"]))
    blocks = list(shots)

    def build(msgs) -> list[list[dict]]:
        prefix = [t for block in blocks for t in block]
        return [
            prefix
            + [
                {
                    "role": "user",
                    "content": question_text(msgs, principle.preference_question, a, b),
                }
            ]
            for a, b in orders
        ]

    longest = max(range(len(orders)), key=lambda i: len("".join(orders[i])))

    def spare_tokens(msgs) -> int | None:
        n = model.count_tokens(build(msgs)[longest]) if context else None
        return None if n is None else context - reserve - n

    def spare_chars(msgs) -> int:
        spare = spare_tokens(msgs)
        if spare is None or spare >= 0:
            return 0 if spare is None else spare
        turns = build(msgs)[longest]
        # characters per token over everything the model reads turns tokens into text
        ratio = sum(len(t["content"]) for t in turns) / max(1, context - reserve - spare)
        return int(spare * max(1.0, ratio)) - 1

    while blocks and (spare_tokens(messages) or 0) < 0:
        blocks.pop(0)  # the oldest few-shot goes first
    truncated = 0
    if context:
        try:
            fitted, truncated = fit_conversation(messages, spare_chars)
        except OverflowError:
            return None
        if fitted != messages:
            flags.append("truncated")
        messages = fitted
    q = _Question(pair, principle, build(messages), truncated, flags)
    q.few_shots = len(blocks)
    return q


def _score(questions: list[_Question], model, config: LabelConfig, should_stop, bias=None):
    """(p_a_ab, p_a_ba or None, [cot texts], cot tokens) per question, or None if cancelled.
    With `bias` (logits), each order's P(first shown) is position-calibrated."""
    if not questions:
        return []
    n_orders = 2 if config.both_orders else 1
    convs = [turns for q in questions for turns in q.turns]
    cots = [""] * len(convs)
    cot_tokens = [0] * len(convs)
    if config.cot:
        asks = [c + [{"role": "assistant", "content": COT_PREFIX}] for c in convs]
        completions = model.chat(asks, config.cot_sampling, should_stop=should_stop)
        if any(c.finish_reason == "cancelled" for c in completions):
            return None
        cots = [c.text.strip() for c in completions]
        cot_tokens = [c.completion_tokens for c in completions]
        prompts = [
            c + [{"role": "assistant", "content": f"{COT_PREFIX} {r}\n{ANSWER_PREFIX}"}]
            for c, r in zip(convs, cots, strict=True)
        ]
    else:
        prompts = [c + [{"role": "assistant", "content": ANSWER_PREFIX}] for c in convs]
    if should_stop and should_stop():
        return None
    logprobs = model.score_choices(prompts, list(OPTIONS))
    for q_index, q in enumerate(questions):
        q.prompt_tokens = sum(
            model.count_tokens(prompts[q_index * n_orders + o]) or 0 for o in range(n_orders)
        )
    out = []
    for i in range(len(questions)):
        p_first = [soft_label(*logprobs[i * n_orders + o]) for o in range(n_orders)]
        if config.cot:
            p_first = [clamp(p, config.clamp) for p in p_first]
        if bias is not None:  # after the clamp: the check measured the bias on clamped values
            p_first = [debias(p, bias) for p in p_first]
        p_ab = p_first[0]
        p_ba = 1.0 - p_first[1] if n_orders == 2 else None  # swapped: option (B) is response A
        texts = cots[i * n_orders : (i + 1) * n_orders] if config.cot else []
        tokens = sum(cot_tokens[i * n_orders : (i + 1) * n_orders])
        out.append((p_ab, p_ba, texts, tokens))
    return out


def _row(
    job_id,
    pair,
    q,
    config,
    constitution,
    constitution_hash,
    p_ab=None,
    p_ba=None,
    cot=None,
    cot_tokens=0,
) -> dict:
    flags = list(q.flags) if q else ["overflow"]
    combined = combine(p_ab, p_ba if config.both_orders else None) if p_ab is not None else None
    if config.cot and combined and "identical" not in flags:
        flags.append("clamped")
    cot = cot or []
    return {
        "job_id": job_id,
        "pairs_job": pair["job_id"],
        "prompt_set": pair["prompt_set"],
        "prompt_id": pair["prompt_id"],
        "pair": int(pair["pair"]),
        "principle_id": q.principle.id if q else "",
        "constitution": constitution.name,
        "constitution_hash": constitution_hash,
        "model": config.model,
        "mode": "cot" if config.cot else "logprob",
        "few_shots": q.few_shots if q else 0,
        "p_a_ab": p_ab,
        "p_a_ba": p_ba if config.both_orders else None,
        "soft_label": combined.soft_label if combined else None,
        "winner": combined.winner if combined else None,
        "confidence": combined.confidence if combined else None,
        "consistent": combined.consistent if combined else None,
        "cot_ab": cot[0] if len(cot) > 0 else None,
        "cot_ba": cot[1] if len(cot) > 1 else None,
        "prompt_tokens": q.prompt_tokens if q else 0,
        "cot_tokens": cot_tokens,
        "latency_s": 0.0,
        "truncated_turns": q.truncated_turns if q else 0,
        "flags": ",".join(flags),
    }


def given_label_row(
    pair: dict,
    p_a: float,
    *,
    job_id: str,
    model: str,
    source: str,
    mode: str | None = None,
    principle_id: str = "",
    constitution: str = "",
    constitution_hash: str = "",
    flags: str = "",
) -> dict:
    """A label row for a preference no model read here (by construction, or from a dataset):
    P(A) = `p_a`, recorded as its one order, with the row's `label_source` (and `mode`, which
    defaults to it)."""
    winner = "A" if p_a > 0.5 else "B" if p_a < 0.5 else "tie"
    return {
        "job_id": job_id,
        "pairs_job": pair["job_id"],
        "prompt_set": pair["prompt_set"],
        "prompt_id": pair["prompt_id"],
        "pair": int(pair["pair"]),
        "principle_id": principle_id,
        "constitution": constitution,
        "constitution_hash": constitution_hash,
        "model": model,
        "mode": mode or source,
        "few_shots": 0,
        "p_a_ab": p_a,  # the label as given: there is no other order to read
        "p_a_ba": None,
        "soft_label": p_a,
        "winner": winner,
        "confidence": abs(p_a - 0.5) * 2,
        "consistent": None,  # no order was scored, so none can disagree
        "cot_ab": None,
        "cot_ba": None,
        "prompt_tokens": 0,
        "cot_tokens": 0,
        "latency_s": 0.0,
        "truncated_turns": 0,
        "flags": flags,
        "label_source": source,
    }


# The tokens a label job counts: the questions it scored (both orders) and any reasoning it wrote.
TOKENS = ("prompt_tokens", "cot_tokens")


def submit_labels(store: Store, config: dict, label: str | None = None):
    """Check a label config against the store, pin the constitution version, and submit."""

    cfg = jobs.validate_config("label", config)
    if cfg.source == "dataset":
        raise CaiError("dataset labels are recorded by `cai import`, not submitted as a job")
    if cfg.source == "construction":
        from cai_engine.contrastive import submit_construction_labels

        return submit_construction_labels(store, cfg, config, label)
    source = jobs.get_job(store, cfg.pairs)
    if source.kind != "pairs":
        raise CaiError(f"job {source.id} is a {source.kind} job; --pairs needs a pairs job")
    version = store.get_version(cfg.constitution)
    check_constitution(version.constitution, cfg)
    pinned = {**config, "constitution": version.pinned}
    return jobs.submit(store, "label", pinned, label=label)


def run_labels(ctx: JobContext, config: LabelConfig) -> None:

    version = ctx.store.get_version(config.constitution)
    check_constitution(version.constitution, config)
    source = jobs.get_job(ctx.store, config.pairs)
    jobs.ingest(ctx.store, source)
    n_pairs = ctx.store.count_pairs(source.id)
    if not n_pairs:
        raise CaiError(f"pairs job {source.id} has no pairs ({source.status})")
    if source.status != "succeeded":
        ctx.event("pairs_job_unfinished", job=source.id, status=source.status, pairs=n_pairs)
    total = min(n_pairs, config.limit) if config.limit else n_pairs
    # what earlier attempts labelled, asked a page at a time
    with ctx.resume_index(
        "labels", key=("prompt_id", "pair"), total=total, tokens=TOKENS, unit="pairs"
    ) as labelled:
        if labelled.keys >= total:
            return
        todo = min(total - labelled.keys, config.batch_pairs)
        ctx.phase(f"scoring the first batch of {todo} pairs")
        with ctx.model(config.model) as model:
            ctx.event("constitution", ref=version.ref, hash=version.hash)
            bias = None
            if config.judge_check:  # run or reuse the judge's check; its bias if calibrating
                from cai_engine.judge_check import ensure_check

                bias = ensure_check(
                    ctx, model, version, config, threshold=config.judge_threshold
                ).applied_bias
            with ctx.writer(
                "labels",
                flush_rows=config.batch_pairs,
                checkpoint=True,  # a scored batch is a checkpoint
                done=labelled.keys,
                tokens=TOKENS,
            ) as out:
                for _ in label_batches(  # each batch went to the shards as it was scored
                    _pending_pairs(ctx.store, source.id, total, labelled, config.batch_pairs),
                    version.constitution,
                    version.hash,
                    model,
                    config,
                    job_id=ctx.job_id,
                    emit=out.add,
                    event=ctx.event,
                    should_stop=lambda: ctx.cancelled,
                    position_bias=bias,
                ):
                    pass
    ctx.check_cancelled()
    # over every label the job wrote (in this attempt or before), without reading them back
    with ctx.resume_index("labels", key=("prompt_id", "pair")) as written:
        labels, scored, confidence, both, consistent = written.aggregate(
            """
            count(*),
            count(*) FILTER (WHERE soft_label IS NOT NULL),
            coalesce(sum(confidence) FILTER (WHERE soft_label IS NOT NULL), 0),
            count(*) FILTER (WHERE soft_label IS NOT NULL AND consistent IS NOT NULL
                             AND NOT contains(flags, 'identical')),
            count(*) FILTER (WHERE soft_label IS NOT NULL AND consistent
                             AND NOT contains(flags, 'identical'))
            """
        )
    ctx.metric(
        labels=int(labels),
        mean_confidence=float(confidence) / max(1, scored),
        consistency=consistent / both if both else None,
    )


def _pending_pairs(store: Store, job_id: str, total: int, labelled, page: int) -> Iterator[dict]:
    """The first `total` pairs of pairs job `job_id` in order, a page at a time, less those
    `labelled` (a `ShardIndex` of the labels so far) already holds."""
    after, left = None, total
    while left > 0:
        pairs = store.pair_page(job_id, after=after, limit=min(page, left))
        if not pairs:
            return
        done = labelled.done_among("prompt_id", sorted({p["prompt_id"] for p in pairs}))
        yield from (p for p in pairs if (p["prompt_id"], int(p["pair"])) not in done)
        after, left = (pairs[-1]["prompt_id"], int(pairs[-1]["pair"])), left - len(pairs)


def run_label_job(ctx: JobContext, config: LabelConfig) -> None:
    """A label job: scored by the judge (`run_labels`), or by construction (no model)."""
    if config.source == "dataset":
        raise CaiError(f"the labels of {config.pairs} were imported; there is nothing to run")
    if config.source == "construction":
        from cai_engine.contrastive import run_construction_labels

        return run_construction_labels(ctx, config)
    return run_labels(ctx, config)


JOB = JobKind(
    name="label",
    config=LabelConfig,
    run=run_label_job,
    description="RL-CAI: soft AI preference labels for pairs, in both orders (or contrastive"
    " pairs' labels by construction).",
    tables=("labels",),
)
