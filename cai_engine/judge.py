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
