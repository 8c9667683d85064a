"""The feedback model's question and its soft-label maths, shared by label jobs, eval jobs and
the RL constitution reward (after Bai et al. 2022, section 4).

For each comparison a principle is drawn at random, and the feedback model reads a
multiple-choice question

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
log-probabilities; any tokenization works because whole continuations are scored. P(A better)
from both orders is averaged, and a pair whose two orders disagree is position-inconsistent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from cai_engine.constitution import ComparisonFewShot, Constitution, Principle
from cai_engine.seeding import seeded_rng

INTRO = "Consider the following conversation between a human and an assistant:"
ANSWER_PREFIX = "The answer is:"
COT_PREFIX = "Let's think step-by-step:"
OPTIONS = (" (A)", " (B)")
OMITTED = "[{n} earlier turn(s) left out to fit the context]"
CUT = "\n[... {n} characters left out to fit the context ...]\n"
ROLE_NAMES = {"user": "Human", "assistant": "Assistant", "system": "System"}


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


def comparison_turns(
    shots: list[ComparisonFewShot], c: Constitution, cot: bool
) -> list[list[dict]]:
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


def _clamp_bounds(value: tuple[float, float]) -> tuple[float, float]:
    lo, hi = value
    if not 0.0 <= lo <= 0.5 <= hi <= 1.0:
        raise ValueError(f"clamp must satisfy 0 <= low <= 0.5 <= high <= 1, got {value}")
    return value


THRESHOLD = 0.7  # a judge qualifies when its gold accuracy's lower 95% bound is above this
ALPHA = 0.05  # its position bias is significant when the binomial p-value is below this


class JudgeSettings(BaseModel):
    """What a job whose numbers come from a judge (label, eval) says about checking it: the
    same three fields and rule in each."""

    judge_check: bool = Field(
        True,
        description="Check the judge on the gold set first (or reuse a stored check) and "
        "record its verdict beside the numbers it gives.",
    )
    calibrate: Literal["none", "position"] = Field(
        "none",
        description="position: take the judge's order bias, measured by its check on the gold "
        "set, out of each order's probability before the orders are averaged.",
    )
    judge_threshold: float = Field(
        THRESHOLD,
        ge=0.0,
        lt=1.0,
        description="The judge qualifies when its gold-set accuracy's lower 95% bound is above "
        "this (and it shows no significant position bias).",
    )

    @model_validator(mode="after")
    def _calibration_needs_a_check(self):
        if self.calibrate == "position" and not self.judge_check:
            raise ValueError(
                "calibrate 'position' reads the judge check's bias: keep judge_check on"
            )
        return self


# The configs' `clamp` field: the range chain-of-thought probabilities are clamped to.
Clamp = Annotated[
    tuple[float, float],
    AfterValidator(_clamp_bounds),
    Field(description="Chain-of-thought probabilities are clamped to this range."),
]


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


def draw_principle(principles: list[Principle], prompt_id: str, pair: int, seed: int) -> Principle:
    """The principle for one comparison: weighted, seeded, the same for both orders."""
    rng = seeded_rng(seed, "label", prompt_id, pair)
    return rng.choices(principles, weights=[p.weight for p in principles])[0]


# -- position calibration -------------------------------------------------------------------
#
# A judge with position bias adds a constant to the logit of whichever answer it reads first.
# Each gold pair is shown in both orders, so over the orders of a gold set an unbiased judge's
# logits of P(first shown) average to about 0 (the better answer is first in half of them), and a
# biased judge's average to its bias b. Contextual calibration (Zhao et al. 2021) subtracts b
# from each order's logit before the orders are combined.

P_EDGE = 1e-6  # probabilities are kept this far from 0 and 1 before taking a logit


def logit(p: float) -> float:
    p = min(1.0 - P_EDGE, max(P_EDGE, p))
    return math.log(p / (1.0 - p))


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def position_bias(p_first: list[float]) -> float | None:
    """The judge's order bias in logits: the mean logit of P(first shown) over the orders
    scored (None without any)."""
    if not p_first:
        return None
    return sum(logit(p) for p in p_first) / len(p_first)


def debias(p_first: float, bias: float) -> float:
    """P(first shown) with the position bias `bias` (logits) taken out: sigmoid(logit(p) - b)."""
    return sigmoid(logit(p_first) - bias)


# -- significance and calibration of a judge's verdicts -------------------------------------


def binomial_two_sided(k: int, n: int) -> float:
    """The exact two-sided binomial test of k successes in n trials against p = 0.5: the
    probability of an outcome at least as far from n/2 as k, i.e. 2 * P(X <= min(k, n - k))
    capped at 1 (at p = 0.5 this is also the sum over outcomes no likelier than k). n = 0
    gives 1. Exact in integers, so any n works."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    low = min(k, n - k)
    term, tail = 1, 0  # C(n, i) for i = 0, 1, ... and their running sum
    for i in range(low + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, 2 * tail / 2**n)


ECE_BINS = 5  # confidence bins of width 0.1 over [0.5, 1]


def ece_bins(
    confidences: list[float], hits: list[bool], bins: int = ECE_BINS
) -> tuple[float | None, list[dict]]:
    """Expected calibration error of two-way verdicts, and its reliability bins.

    Each verdict has a confidence in [0.5, 1] (the probability of the side it picked) and a hit
    (the side was right). The bins split [0.5, 1] into `bins` equal widths, the last one closed;
    each bin reports how many verdicts fell in it, their mean confidence and their accuracy.
    ECE = sum over bins of (n_bin / N) * |accuracy_bin - confidence_bin|; None when N = 0.
    """
    if len(confidences) != len(hits):
        raise ValueError("confidences and hits differ in length")
    width = 0.5 / bins
    grouped: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for c, h in zip(confidences, hits, strict=True):
        if not 0.5 <= c <= 1.0:
            raise ValueError(f"a confidence must lie in [0.5, 1], got {c}")
        grouped[min(bins - 1, int((c - 0.5) / width))].append((c, bool(h)))
    out, ece, total = [], 0.0, len(confidences)
    for i, members in enumerate(grouped):
        n = len(members)
        conf = sum(c for c, _ in members) / n if n else None
        acc = sum(h for _, h in members) / n if n else None
        if n:
            ece += n / total * abs(acc - conf)
        out.append(
            {
                "low": round(0.5 + i * width, 10),
                "high": round(0.5 + (i + 1) * width, 10),
                "n": n,
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return (ece if total else None), out
