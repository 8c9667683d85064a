"""RL-CAI: pairs of answers, and the feedback model's soft preference labels for them.

Pairs (`pairs` job): k >= 2 sampled answers per prompt, every two of them a pair; or, from a
critique job, each trace's initial answer against its final revision.

Labels (`label` job), after Bai et al. 2022 §4: for each pair, a principle is drawn at random
for that comparison, and the feedback model reads a multiple-choice question

    Consider the following conversation between a human and an assistant:
    Human: ...
    <the principle's preference question>
    Options:
    (A) <response A>
    (B) <response B>
    The answer is:

For a chat model the question is the user turn and "The answer is:" starts the assistant
turn (a prefill), so the option continuations " (A)" and " (B)" are scored exactly where a
completion model would see them. The soft label is the softmax of the two continuations'
log-probabilities; the two options share the tokens " (" and ")" in most tokenizers, and any
tokenization works because whole continuations are scored. Each pair is scored as given and
swapped; P(A better) from both orders is averaged, and a pair whose two orders disagree is
flagged position-inconsistent. In chain-of-thought mode the model first writes "Let's think
step-by-step: ...", the options are scored after that text, and the probabilities are
clamped (to [0.4, 0.6] by default), since reasoning makes them nearly 0 or 1.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cai_engine.constitution import ComparisonFewShot, Constitution, Principle
from cai_engine.critique import check_constitution
from cai_engine.errors import CaiError
from cai_engine.jobs import JobKind
from cai_engine.models import EMBEDDED, SamplingParams, parse_spec

INTRO = "Consider the following conversation between a human and an assistant:"
ANSWER_PREFIX = "The answer is:"
COT_PREFIX = "Let's think step-by-step:"
OPTIONS = (" (A)", " (B)")
OMITTED = "[{n} earlier turn(s) left out to fit the context]"
CUT = "\n[... {n} characters left out to fit the context ...]\n"
ROLE_NAMES = {"user": "Human", "assistant": "Assistant", "system": "System"}


# -- pairs ----------------------------------------------------------------------------------


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


def _rng(*parts) -> random.Random:
    key = ":".join(str(p) for p in parts)
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def pair_flags(a: str, b: str) -> str:
    flags = []
    if a.strip() == b.strip():
        flags.append("identical")
    if not a.strip() or not b.strip():
        flags.append("empty")
    return ",".join(flags)


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
                    "flags": pair_flags(a["text"], b["text"]),
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
        if _rng(seed, prompt_id, sample).random() < 0.5:
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
                "flags": pair_flags(a["text"], b["text"]),
            }
        )
    return out


def submit_pairs(store, config: dict, label: str | None = None):
    """Check a pairs config against the store, then submit the job."""
    from cai_engine import jobs
    from cai_engine.prompts import select_prompts

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


def run_pairs(ctx, config: PairsConfig) -> None:
    from cai_engine import jobs

    done = {(r["prompt_id"], r["pair"]) for r in ctx.run.read_shard_rows("pairs")}
    if config.from_critique:
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
        from cai_engine.generate import generate_answers
        from cai_engine.prompts import parse_prompt_ref, select_prompts

        prompts = select_prompts(ctx.store, config.prompts, config.limit)
        set_name, _ = parse_prompt_ref(config.prompts)
        answers = generate_answers(
            ctx, prompts, set_name, config.model, config.sampling, config.samples, config.shard_rows
        )
        ctx.check_cancelled()
        pairs = pairs_from_samples(answers, ctx.job_id)
    todo = [p for p in pairs if (p["prompt_id"], p["pair"]) not in done]
    out = ctx.buffer("pairs", flush_rows=config.shard_rows)
    out.add(todo)
    out.flush()
    flagged = {f: sum(f in p["flags"].split(",") for p in pairs) for f in ("identical", "empty")}
    ctx.event("pairs", pairs=len(pairs), **flagged)
    ctx.metric(pairs=len(pairs), **flagged)


PAIRS_JOB = JobKind(
    name="pairs",
    config=PairsConfig,
    run=run_pairs,
    description="RL-CAI: pairs of answers to label (k samples per prompt, or critique traces).",
    tables=("generations", "pairs"),
)


# -- the question ---------------------------------------------------------------------------


def render_conversation(messages: list[dict]) -> str:
    return "\n\n".join(
        f"{ROLE_NAMES.get(m['role'], m['role'].title())}: {m['content']}" for m in messages
    )


def question_text(messages: list[dict], principle_question: str, first: str, second: str) -> str:
    """The user turn of the multiple-choice question (the prefill carries "The answer is:")."""
    return (
        f"{INTRO}\n\n{render_conversation(messages)}\n\n{principle_question}\n"
        f"Options:\n(A) {first}\n(B) {second}"
    )


def few_shot_turns(shots: list[ComparisonFewShot], c: Constitution, cot: bool) -> list[list[dict]]:
    """Each labelled comparison as a user question and the assistant's answer to it."""
    blocks = []
    for shot in shots:
        p = c.principle(shot.principle) if shot.principle else c.principles[0]
        answer = f"{ANSWER_PREFIX} ({shot.preferred})"
        if cot and shot.reasoning:
            answer = f"{COT_PREFIX} {shot.reasoning}\n{answer}"
        conversation = [{"role": m.role, "content": m.content} for m in shot.conversation]
        blocks.append(
            [
                {
                    "role": "user",
                    "content": question_text(
                        conversation, p.preference_question, shot.response_a, shot.response_b
                    ),
                },
                {"role": "assistant", "content": answer},
            ]
        )
    return blocks


def select_comparison_shots(bank: list[ComparisonFewShot], n: int) -> list[ComparisonFewShot]:
    """The first `n` labelled comparisons, swapping in one so that both letters are answers
    when the bank allows (few-shots that all say (A) teach the model to say (A))."""
    if n <= 0 or not bank:
        return []
    chosen = list(bank[:n])
    if n >= 2 and len({s.preferred for s in chosen}) == 1:
        other = next((s for s in bank[n:] if s.preferred != chosen[0].preferred), None)
        if other is not None:
            chosen[-1] = other
    return chosen


MIN_KEEP = 64  # characters a cut turn keeps at least (half from its start, half from its end)


def fit_conversation(
    messages: list[dict], budget_chars: Callable[[list[dict]], int]
) -> tuple[list[dict], int]:
    """Shorten `messages` until `budget_chars(messages)` is >= 0: first drop middle turns
    (keeping the first turn and the last), then cut the middle out of the longest turns.

    `budget_chars` returns the spare room in characters (negative when over). Returns the
    shortened messages and the number of turns left out; raises OverflowError when even
    the shortest form does not fit (the options alone are too long).
    """
    msgs = [dict(m) for m in messages]
    dropped = 0
    while budget_chars(msgs) < 0 and len(msgs) > 2 + (dropped > 0):
        start = 2 if dropped else 1  # keep the first turn (and the marker once it is there)
        del msgs[start]
        if not dropped:
            msgs.insert(1, {"role": "system", "content": ""})
        dropped += 1
        msgs[1]["content"] = OMITTED.format(n=dropped)
    marker = 1 if dropped else None
    originals = {i: m["content"] for i, m in enumerate(msgs) if i != marker}
    kept = {i: len(text) for i, text in originals.items()}
    overhead = len(CUT) + 16  # the marker a turn gets on its first cut
    for _ in range(64):
        over = -budget_chars(msgs)
        if over <= 0:
            return msgs, dropped
        cuttable = sorted((i for i in kept if kept[i] > MIN_KEEP), key=lambda i: -kept[i])
        if not cuttable:
            break
        # Water-filling: cut the longest turns down to one common length, so that no turn is
        # cut to a stub while another keeps much more.
        for k in range(1, len(cuttable) + 1):
            top = cuttable[:k]
            extra = sum(overhead for i in top if kept[i] == len(originals[i]))
            level = (sum(kept[i] for i in top) - over - extra) / k
            if k == len(cuttable) or level >= kept[cuttable[k]]:
                break
        for i in top:
            text = originals[i]
            kept[i] = max(MIN_KEEP, min(kept[i] - 1, int(level)))
            head = kept[i] // 2
            msgs[i]["content"] = (
                text[:head]
                + CUT.format(n=len(text) - kept[i])
                + text[len(text) - (kept[i] - head) :]
            )
    if budget_chars(msgs) >= 0:
        return msgs, dropped
    raise OverflowError("the options alone do not fit the feedback model's context")


# -- soft labels ----------------------------------------------------------------------------


def soft_label(logprob_a: float, logprob_b: float) -> float:
    """P(A) from the two options' log-probabilities: softmax over the pair, computed stably."""
    d = logprob_b - logprob_a
    if d > 0:
        e = math.exp(-d)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(d))


def clamp(p: float, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return min(hi, max(lo, p))


@dataclass
class Combined:
    soft_label: float
    winner: str  # A | B | tie
    confidence: float
    consistent: bool | None  # None when only one order was scored


def combine(p_a_ab: float, p_a_ba: float | None) -> Combined:
    """Average P(A better) over the orders scored, and check the orders agree.

    `p_a_ba` is P(A better) read from the swapped question, where A was shown second. The
    pair is position-consistent when both orders prefer the same response; an order at
    exactly 0.5 prefers neither, which counts as inconsistent.
    """
    if p_a_ba is None:
        soft, consistent = p_a_ab, None
    else:
        soft = (p_a_ab + p_a_ba) / 2
        consistent = (p_a_ab - 0.5) * (p_a_ba - 0.5) > 0
    winner = "A" if soft > 0.5 else "B" if soft < 0.5 else "tie"
    return Combined(soft, winner, abs(soft - 0.5) * 2, consistent)


# -- the label job --------------------------------------------------------------------------


class LabelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs: str = Field(description="The pairs job whose pairs to label.")
    constitution: str = Field(description="Constitution reference, e.g. harmless or harmless@2.")
    model: str = Field(EMBEDDED, description="Feedback model spec (local or openai).")
    both_orders: bool = Field(True, description="Score each pair as given and swapped.")
    cot: bool = Field(False, description="Chain of thought: reason first, then read the options.")
    clamp: tuple[float, float] = Field(
        (0.4, 0.6), description="Chain-of-thought probabilities are clamped to this range."
    )
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

    @field_validator("clamp")
    @classmethod
    def _clamp(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not 0.0 <= lo <= 0.5 <= hi <= 1.0:
            raise ValueError(f"clamp must satisfy 0 <= low <= 0.5 <= high <= 1, got {value}")
        return value


def draw_principle(principles: list[Principle], prompt_id: str, pair: int, seed: int) -> Principle:
    """The principle for one comparison: weighted, seeded, the same for both orders."""
    rng = _rng(seed, "label", prompt_id, pair)
    return rng.choices(principles, weights=[p.weight for p in principles])[0]


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
    pairs: list[dict],
    constitution: Constitution,
    constitution_hash: str,
    model,
    config: LabelConfig,
    *,
    job_id: str = "",
    emit: Callable[[list[dict]], None] | None = None,
    event: Callable[..., None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict]:
    """Label `pairs` with `model` in batches of `config.batch_pairs`; returns one row per
    pair, in the order of `pairs`.

    `emit(rows)` receives each batch's rows as soon as they are scored.
    """
    principles = check_constitution(constitution, config)
    event = event or (lambda *a, **k: None)
    shots = few_shot_turns(
        select_comparison_shots(constitution.comparison_few_shots, config.few_shots),
        constitution,
        config.cot,
    )
    context = model.context_length
    # room the answer needs after the question: the prefill, the options, the reasoning
    reserve = 16 + (config.cot_sampling.max_new_tokens + 8 if config.cot else 0)
    out: list[dict] = []
    for start in range(0, len(pairs), config.batch_pairs):
        if should_stop and should_stop():
            break
        batch = pairs[start : start + config.batch_pairs]
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
        scored = _score(questions, model, config, should_stop)
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
        out.extend(rows)
        if emit:
            emit(rows)
    return out


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


def _score(questions: list[_Question], model, config: LabelConfig, should_stop):
    """(p_a_ab, p_a_ba or None, [cot texts], cot tokens) per question, or None if cancelled."""
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


def submit_labels(store, config: dict, label: str | None = None):
    """Check a label config against the store, pin the constitution version, and submit."""
    from cai_engine import jobs

    cfg = jobs.validate_config("label", config)
    source = jobs.get_job(store, cfg.pairs)
    if source.kind != "pairs":
        raise CaiError(f"job {source.id} is a {source.kind} job; --pairs needs a pairs job")
    version = store.get_version(cfg.constitution)
    check_constitution(version.constitution, cfg)
    pinned = {**config, "constitution": f"{version.name}@{version.hash[:12]}"}
    return jobs.submit(store, "label", pinned, label=label)


def run_labels(ctx, config: LabelConfig) -> None:
    from cai_engine import jobs
    from cai_engine.models import load_model

    version = ctx.store.get_version(config.constitution)
    check_constitution(version.constitution, config)
    source = jobs.get_job(ctx.store, config.pairs)
    jobs.ingest(ctx.store, source)
    pairs = ctx.store.pairs(source.id)
    if not pairs:
        raise CaiError(f"pairs job {source.id} has no pairs ({source.status})")
    if source.status != "succeeded":
        ctx.event("pairs_job_unfinished", job=source.id, status=source.status, pairs=len(pairs))
    if config.limit:
        pairs = pairs[: config.limit]
    previous = ctx.run.read_shard_rows("labels")
    done = {(r["prompt_id"], r["pair"]) for r in previous}
    todo = [p for p in pairs if (p["prompt_id"], p["pair"]) not in done]
    ctx.progress(
        done=len(done),
        total=len(pairs),
        tokens=sum(r["cot_tokens"] for r in previous),
        force=True,
    )
    if not todo:
        return
    model = load_model(config.model, ctx.store.home)
    ctx.event("model_loaded", **model.info().details)
    ctx.event("constitution", ref=version.ref, hash=version.hash)
    out = ctx.buffer("labels", flush_rows=config.batch_pairs)
    finished = len(done)

    def emit(rows):
        nonlocal finished
        out.add(rows)
        out.flush()  # a scored batch is a checkpoint
        finished += len(rows)
        ctx.add_tokens(sum(r["cot_tokens"] for r in rows))
        ctx.progress(done=finished)

    try:
        label_pairs(
            todo,
            version.constitution,
            version.hash,
            model,
            config,
            job_id=ctx.job_id,
            emit=emit,
            event=ctx.event,
            should_stop=lambda: ctx.cancelled,
        )
    finally:
        out.flush()
        ctx.progress(done=finished, force=True)
        model.close()
    ctx.check_cancelled()
    rows = ctx.run.read_shard_rows("labels")
    scored = [r for r in rows if r["soft_label"] is not None]
    both = [r for r in scored if r["consistent"] is not None and "identical" not in r["flags"]]
    ctx.metric(
        labels=len(rows),
        mean_confidence=sum(r["confidence"] for r in scored) / max(1, len(scored)),
        consistency=sum(bool(r["consistent"]) for r in both) / len(both) if both else None,
    )


LABEL_JOB = JobKind(
    name="label",
    config=LabelConfig,
    run=run_labels,
    description="RL-CAI: soft AI preference labels for pairs, in both orders.",
    tables=("labels",),
)
