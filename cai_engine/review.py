"""Human spot-checks of AI preference labels, and how often people agree with the AI.

A reviewer works through a queue of a label job's pairs, drawn by one of four strategies:
- `random`: a seeded shuffle;
- `stratified`: round-robin over principles, so the first N cover every principle evenly;
- `least_confident`: the AI's least confident labels first;
- `inconsistent`: position-inconsistent labels first (the two orders disagreed), then the
  rest, least confident first.
Each pair is shown with its responses in a display order drawn per (pair, reviewer), and the
verdict is stored about the responses as stored (A, B), with the order that was shown.
Verdicts are appended, never updated: a re-review adds a row, and the latest counts.

Agreement (how `agreement()` treats ties, documented for users):
- Only *decisive* comparisons count: the human said A or B, and the AI's soft label was not
  exactly 0.5. A human "tie" or "both bad" states no preference, so it is reported as a
  count, not as a disagreement; an AI tie (identical responses) likewise.
- Cohen's kappa is computed on the 2x2 table of those decisive comparisons, so it measures
  agreement on *which* response is better beyond what each side's A/B rates give by chance.
- Each (pair, reviewer) counts once, with that reviewer's latest verdict other than skip.

The queue's order and the agreement are SQL (`cai_engine/store/review.py`), so a job of any
size is asked, never loaded: the store runs it on a job's tables (`Store.next_review`,
`Store.agreement`), and `order_queue`, `session` and `agreement` below run the very same SQL
over an in-memory DuckDB holding the lists they are given. The random order is DuckDB's hash
of (seed, prompt id, pair): fixed for a seed, whatever order the labels come in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cai_engine.errors import CaiError
from cai_engine.seeding import seeded_rng
from cai_engine.traces import SEARCH_MAX

if TYPE_CHECKING:
    from cai_engine.store import Store


STRATEGIES = {
    "random": "Random",
    "stratified": "Stratified by principle",
    "least_confident": "Least confident first",
    "inconsistent": "Position-inconsistent first",
}
VERDICTS = ("A", "B", "tie", "both_bad", "skip")
VERDICT_NAMES = {
    "A": "A is better",
    "B": "B is better",
    "tie": "Tie",
    "both_bad": "Both bad",
    "skip": "Skip",
}
CALIBRATION_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# the soft-label histogram's edges: bins closed on the right, the first one on both sides
SOFT_LABEL_BINS = tuple(i / 10 for i in range(11))
SCRATCH_JOB = ""  # the job id of the lists `order_queue`, `session` and `agreement` are given


@dataclass(frozen=True)
class LabelFilter:
    """Which labels the "All labels" table shows: drawn under `principle`; only the
    position-inconsistent ones (`inconsistent`); with `cut_off` True only pairs with an answer
    cut off at the token limit, with False only those without; AI confidence within
    [`min_confidence`, `max_confidence`] (a bound leaves out unscored labels); with
    `reviewed` True only pairs with a human verdict other than skip (by `reviewer`, when
    given), with False only those without; mentioning `search` (case-insensitive, as plain
    text: no character is a pattern) in the prompt or either response."""

    principle: str | None = None
    inconsistent: bool = False
    cut_off: bool | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    reviewed: bool | None = None
    reviewer: str | None = None
    search: str | None = None

    def __post_init__(self):
        if self.search and len(self.search.strip()) > SEARCH_MAX:
            raise CaiError(
                f"search: {len(self.search.strip()):,} characters; search for at most "
                f"{SEARCH_MAX} (a phrase from the text, not the text)"
            )
        for name in ("min_confidence", "max_confidence"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise CaiError(f"{name}: {value} is not a confidence; use 0 to 1")
        low, high = self.min_confidence, self.max_confidence
        if low is not None and high is not None and low > high:
            raise CaiError(f"min_confidence {low} is above max_confidence {high}")
        if self.reviewer is not None and self.reviewed is None:
            raise CaiError("reviewer: a reviewer narrows reviewed=True or False; set one")

    @property
    def needle(self) -> str:
        """The text searched for, as typed less surrounding spaces (matched ignoring case)."""
        return (self.search or "").strip()


def key_of(row: dict) -> tuple[str, int]:
    return (row["prompt_id"], int(row["pair"]))


def reviewable(labels: list[dict]) -> list[dict]:
    """Labels a person can check: scored ones (an overflowed pair has no AI label)."""
    return [r for r in labels if r.get("soft_label") is not None]


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise CaiError(f"unknown strategy '{strategy}'; use one of {', '.join(STRATEGIES)}")


def order_queue(labels: list[dict], strategy: str, seed: int = 0) -> list[dict]:
    """The label rows in the order a reviewer sees them under `strategy`.

    The order is the store's (`Store.next_review`): the same SQL, run over an in-memory
    DuckDB holding `labels`, so a list and a job of a million labels queue alike.
    """
    from cai_engine.store.review import scratch, session_queue

    check_strategy(strategy)
    by_key = {key_of(r): r for r in reviewable(labels)}
    with scratch(labels, []) as con:
        queue = session_queue(con, SCRATCH_JOB, "", strategy, len(by_key), seed)
    return [by_key[(prompt_id, pair)] for prompt_id, pair, _ in queue]


def display_order(row: dict, reviewer: str) -> str:
    """ "AB" or "BA": which response this reviewer sees first, fixed per pair and reviewer."""
    return (
        "AB"
        if seeded_rng("display", row["prompt_id"], row["pair"], reviewer).random() < 0.5
        else "BA"
    )


def to_stored(verdict_shown: str, order: str) -> str:
    """Map a verdict about the shown positions (A = shown first) to the stored responses."""
    if verdict_shown in ("A", "B") and order == "BA":
        return "B" if verdict_shown == "A" else "A"
    return verdict_shown


def human_verdicts(reviews: list[dict]) -> dict[tuple[str, int], dict]:
    """(prompt_id, pair) -> the most recent verdict by anyone, other than skip."""
    out: dict[tuple[str, int], dict] = {}
    for r in reviews:
        if r["verdict"] != "skip":
            out[(r["prompt_id"], int(r["pair"]))] = r
    return out


@dataclass
class Progress:
    reviewed: int  # pairs of the session this reviewer has given a verdict (skip included)
    total: int  # pairs in the session


def session(
    labels: list[dict], reviews: list[dict], reviewer: str, strategy: str, size: int, seed: int = 0
) -> tuple[list[dict], Progress]:
    """A reviewer's session: the first `size` pairs of the queue and those still to do (the
    store's `next_review` asks the same of a job's tables, one pair at a time)."""
    from cai_engine.store.review import scratch, session_queue

    check_strategy(strategy)
    by_key = {key_of(r): r for r in reviewable(labels)}
    with scratch(labels, reviews) as con:
        queue = session_queue(con, SCRATCH_JOB, reviewer, strategy, size, seed)
    todo = [by_key[(prompt_id, pair)] for prompt_id, pair, done in queue if not done]
    return todo, Progress(len(queue) - len(todo), len(queue))


def record(
    store: Store,
    labels_job: str,
    prompt_id: str,
    pair: int,
    reviewer: str,
    verdict: str,
    display: str,
    note: str | None = None,
) -> str:
    """Check and append one verdict (about the stored responses A and B)."""
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise CaiError("a reviewer name is needed; type one in (there are no accounts)")
    if len(reviewer) > 100:
        raise CaiError("a reviewer name has at most 100 characters")
    if verdict not in VERDICTS:
        raise CaiError(f"unknown verdict '{verdict}'; use one of {', '.join(VERDICTS)}")
    if display not in ("AB", "BA"):
        raise CaiError(f"display order must be AB or BA, not '{display}'")
    if note is not None and len(note) > 10_000:
        raise CaiError("a note has at most 10,000 characters")
    if not store.label_exists(labels_job, prompt_id, pair):
        raise CaiError(f"label job {labels_job} has no label for prompt {prompt_id} pair {pair}")
    return store.add_review(
        labels_job, prompt_id, pair, reviewer, verdict, display, (note or "").strip() or None
    )


# -- agreement ------------------------------------------------------------------------------


def cohen_kappa(table: dict[tuple[str, str], int]) -> float | None:
    """Cohen's kappa from counts keyed (human, ai); None when chance agreement is certain."""
    n = sum(table.values())
    if n == 0:
        return None
    cats = sorted({c for k in table for c in k})
    observed = sum(v for (h, a), v in table.items() if h == a) / n
    human = Counter()
    ai = Counter()
    for (h, a), v in table.items():
        human[h] += v
        ai[a] += v
    expected = sum(human[c] * ai[c] for c in cats) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


@dataclass
class Agreement:
    reviews: int  # (pair, reviewer) verdicts counted, skips excluded
    decisive: int  # of those, human said A or B and the AI was not a tie
    agree: int
    rate: float | None
    kappa: float | None
    table: dict[tuple[str, str], int]  # (human, ai) -> count, decisive only
    ties: int  # human tie verdicts
    both_bad: int
    ai_ties: int  # decisive human verdicts on pairs the AI called a tie
    by_principle: list[dict] = field(default_factory=list)
    calibration: list[dict] = field(default_factory=list)
    consistency_rate: float | None = None  # labels scored in both orders that agree
    first_position_rate: float | None = None  # orders in which the first-shown response won
    position_bias: bool = False
    position: PositionEvidence | None = None  # the evidence behind position_bias
    # the scored labels' soft labels counted in SOFT_LABEL_BINS: [{"bin", "low", "high", "labels"}]
    soft_label_bins: list[dict] = field(default_factory=list)
    strata: list[dict] = field(default_factory=list)  # per principle: labels, reviewed, left


def agreement(labels: list[dict], reviews: list[dict]) -> Agreement:
    """Compare human verdicts with the AI's hard labels; see the module docstring for ties.

    `labels` as `Store.labels` returns them, `reviews` as `Store.reviews` does (oldest first).
    The numbers are the store's (`Store.agreement`): the same SQL, run over an in-memory DuckDB
    holding these lists.
    """
    from cai_engine.store.review import agreement_of, scratch

    with scratch(labels, reviews) as con:
        return agreement_of(con, SCRATCH_JOB)


BIAS_Z = 2.58  # two-sided p < 0.01


def _sign_test(first: int, second: int, z: float = BIAS_Z) -> bool:
    m = first + second
    return m >= 6 and abs(first - second) > z * m**0.5


def position_biased(labels: list[dict], z: float = BIAS_Z) -> bool:
    """True when the judge favours one display slot beyond what chance allows.

    A pair scored in both orders is inconsistent when the same *slot* wins both times:
    first-biased (the first-shown response won twice) or second-biased. A judge without
    position bias errs towards either slot equally, so among m inconsistent pairs the
    first-biased count f is Binomial(m, 1/2); a sign test flags |f - s| > z·sqrt(m)
    (z = 2.58: two-sided p < 0.01).
    """
    return PositionEvidence.of(labels, z).biased


@dataclass
class PositionEvidence:
    """What the position-bias sign test has to go on, and what it would take to decide."""

    pairs: int  # pairs scored in both orders with a decided label in each
    first: int  # inconsistent pairs where the first-shown response won both orders
    second: int  # ... the second-shown one
    biased: bool
    needed: int  # more inconsistent pairs, all favouring the leading slot, to flag a bias

    @classmethod
    def of(cls, labels: list[dict], z: float = BIAS_Z) -> PositionEvidence:
        first = sum(r["p_a_ab"] > 0.5 and r["p_a_ba"] < 0.5 for r in labels)
        second = sum(r["p_a_ab"] < 0.5 and r["p_a_ba"] > 0.5 for r in labels)
        return cls.from_counts(len(labels), first, second, z)

    @classmethod
    def from_counts(cls, pairs: int, first: int, second: int, z: float = BIAS_Z):
        """The evidence from its counts (`agreement` counts them in SQL)."""
        biased = _sign_test(first, second, z)
        needed = 0
        if not biased:
            lead, lag = max(first, second), min(first, second)
            needed = next(k for k in range(1, 10_000) if _sign_test(lead + k, lag, z))
        return cls(pairs, first, second, biased, needed)

    @property
    def inconsistent(self) -> int:
        return self.first + self.second

    def describe(self) -> str:
        """One sentence for a reviewer: the counts, the verdict and what it rests on."""
        m = self.inconsistent
        if not self.pairs:
            return "No pair scored in both orders yet: position bias cannot be measured."
        counts = (
            f"{m} of {self.pairs} pairs scored in both orders are position-inconsistent "
            f"({self.first} won by the first-shown answer both times, {self.second} by the "
            "second)"
        )
        if self.biased:
            slot = "first" if self.first > self.second else "second"
            return (
                f"{counts}: the judge prefers the {slot}-shown answer beyond chance "
                "(sign test, p < 0.01)."
            )
        if not m:
            return f"{counts}: no sign of position bias."
        return (
            f"{counts}: not enough to call a bias (sign test, p < 0.01); it would take "
            f"{self.needed} more inconsistent pair{'s' if self.needed > 1 else ''} favouring "
            "the same slot."
        )
