"""Human review of AI preference labels: queues, display order, verdicts and agreement.

Most tests build label rows by hand (the keys `store.labels` returns), with the soft label,
winner, confidence and consistency that `feedback.combine` gives for the two orders' P(A).
The store-level tests seed the `labels` table directly: `record` and `session` read it back
through the store, as the studio does.
"""

from __future__ import annotations

import random

import pytest

from cai_engine import review
from cai_engine.errors import CaiError
from cai_engine.judge import combine

LABELS_JOB = "label-test"


def label(prompt_id, pair, p_ab, p_ba=None, principle="harm", flags="") -> dict:
    """A label row as `store.labels` returns it; `p_ab=None` is an unscored (overflow) pair."""
    c = combine(p_ab, p_ba) if p_ab is not None else None
    return {
        "job_id": LABELS_JOB,
        "pairs_job": "pairs-test",
        "prompt_set": "red-team",
        "prompt_id": prompt_id,
        "pair": pair,
        "principle_id": principle,
        "constitution": "harmless",
        "constitution_hash": "0" * 64,
        "model": "hf:tiny",
        "mode": "logprob",
        "few_shots": 0,
        "p_a_ab": p_ab,
        "p_a_ba": p_ba,
        "soft_label": c.soft_label if c else None,
        "winner": c.winner if c else None,
        "confidence": c.confidence if c else None,
        "consistent": c.consistent if c else None,
        "cot_ab": None,
        "cot_ba": None,
        "prompt_tokens": 0,
        "cot_tokens": 0,
        "latency_s": 0.0,
        "truncated_turns": 0,
        "flags": flags if c else "overflow",
        "response_a": f"answer A to {prompt_id}/{pair}",
        "response_b": f"answer B to {prompt_id}/{pair}",
        "prompt_messages": [{"role": "user", "content": f"question {prompt_id}"}],
    }


def verdict(prompt_id, pair, v, reviewer="ann", display="AB") -> dict:
    """A review row as `store.reviews` returns it; lists of these are oldest first."""
    return {
        "id": f"{prompt_id}-{pair}-{reviewer}-{v}",
        "labels_job": LABELS_JOB,
        "prompt_id": prompt_id,
        "pair": pair,
        "reviewer": reviewer,
        "verdict": v,
        "display_order": display,
        "note": None,
    }


def keys(rows) -> list[tuple[str, int]]:
    return [review.key_of(r) for r in rows]


# -- Cohen's kappa -------------------------------------------------------------------------


def test_cohen_kappa_on_a_hand_computed_table():
    # po = (20 + 15) / 50 = 0.7; human A = 25/50, AI A = 30/50: pe = .5*.6 + .5*.4 = 0.5
    table = {("A", "A"): 20, ("A", "B"): 5, ("B", "A"): 10, ("B", "B"): 15}
    assert review.cohen_kappa(table) == pytest.approx(0.4)


def test_cohen_kappa_is_one_for_perfect_agreement_and_minus_one_for_perfect_disagreement():
    assert review.cohen_kappa({("A", "A"): 7, ("B", "B"): 3}) == pytest.approx(1.0)
    assert review.cohen_kappa({("A", "B"): 10, ("B", "A"): 10}) == pytest.approx(-1.0)


def test_cohen_kappa_is_none_when_undefined():
    # Both sides always said A: chance agreement is certain, kappa is 0/0.
    assert review.cohen_kappa({("A", "A"): 12}) is None
    assert review.cohen_kappa({}) is None


# -- the queue -----------------------------------------------------------------------------


def many_labels(n=20) -> list[dict]:
    rng = random.Random(7)
    return [
        label(f"p{i:02d}", i % 2, rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95))
        for i in range(n)
    ]


def test_random_is_a_seeded_permutation_independent_of_the_input_order():
    labels = many_labels()
    first = review.order_queue(labels, "random", seed=1)
    assert sorted(keys(first)) == sorted(keys(labels))
    shuffled = labels[::-1]
    assert keys(review.order_queue(shuffled, "random", seed=1)) == keys(first)
    assert keys(review.order_queue(labels, "random", seed=2)) != keys(first)
    assert keys(first) != sorted(keys(first))  # shuffled, not left in key order


def test_least_confident_first_sorts_by_ascending_confidence():
    queue = review.order_queue(many_labels(), "least_confident")
    confidences = [r["confidence"] for r in queue]
    assert confidences == sorted(confidences)
    assert len(queue) == 20


def test_inconsistent_first_puts_position_inconsistent_labels_first():
    labels = [
        label("c1", 0, 0.9, 0.8),  # consistent, confidence 0.7
        label("c2", 0, 0.55, 0.55),  # consistent, confidence 0.1
        label("i1", 0, 0.9, 0.2),  # inconsistent, confidence 0.1
        label("i2", 0, 0.3, 0.6),  # inconsistent, confidence 0.1
        label("i3", 0, 0.95, 0.4),  # inconsistent, confidence 0.35
        label("o1", 0, 0.6),  # one order: consistent is None, not False
    ]
    queue = review.order_queue(labels, "inconsistent", seed=3)
    assert [r["consistent"] for r in queue[:3]] == [False, False, False]
    assert {r["prompt_id"] for r in queue[:3]} == {"i1", "i2", "i3"}
    assert queue[2]["prompt_id"] == "i3"  # least confident first within the group
    assert {r["prompt_id"] for r in queue[3:]} == {"c1", "c2", "o1"}
    rest = [r["confidence"] for r in queue[3:]]
    assert rest == sorted(rest)


def test_stratified_round_robins_the_principles():
    labels = (
        [label(f"a{i}", 0, 0.7, 0.7, principle="p1") for i in range(5)]
        + [label(f"b{i}", 0, 0.7, 0.7, principle="p2") for i in range(3)]
        + [label("c0", 0, 0.7, 0.7, principle="p3")]
    )
    queue = review.order_queue(labels, "stratified", seed=5)
    assert [r["principle_id"] for r in queue] == [
        "p1", "p2", "p3", "p1", "p2", "p1", "p2", "p1", "p1",
    ]  # fmt: skip
    assert {r["principle_id"] for r in queue[:3]} == {"p1", "p2", "p3"}
    assert sorted(keys(queue)) == sorted(keys(labels))


def test_an_unknown_strategy_names_the_valid_ones():
    with pytest.raises(CaiError) as info:
        review.order_queue(many_labels(), "hardest")
    assert str(info.value) == (
        "unknown strategy 'hardest'; use one of random, stratified, least_confident, inconsistent"
    )


@pytest.mark.parametrize("strategy", sorted(review.STRATEGIES))
def test_unscored_labels_are_never_queued(strategy):
    labels = many_labels(6) + [label("over", 0, None), label("over", 1, None, principle="x")]
    queue = review.order_queue(labels, strategy)
    assert len(queue) == 6
    assert all(r["soft_label"] is not None for r in queue)
    assert review.order_queue([label("over", 0, None)], strategy) == []


# -- display order -------------------------------------------------------------------------


def test_display_order_is_fixed_per_pair_and_reviewer_and_both_orders_occur():
    labels = many_labels(40)
    ann = [review.display_order(r, "ann") for r in labels]
    assert ann == [review.display_order(r, "ann") for r in labels]
    assert set(ann) == {"AB", "BA"}
    bob = [review.display_order(r, "bob") for r in labels]
    assert set(bob) == {"AB", "BA"}
    assert ann != bob  # drawn per reviewer too


@pytest.mark.parametrize(
    "shown, order, stored",
    [
        ("A", "AB", "A"),
        ("B", "AB", "B"),
        ("A", "BA", "B"),  # response B was shown first
        ("B", "BA", "A"),
        ("tie", "BA", "tie"),
        ("both_bad", "BA", "both_bad"),
        ("skip", "BA", "skip"),
    ],
)
def test_to_stored_maps_the_shown_positions_back_to_the_stored_responses(shown, order, stored):
    assert review.to_stored(shown, order) == stored


# -- agreement -----------------------------------------------------------------------------


def test_agreement_treats_ties_as_documented():
    labels = [
        label("p1", 0, 0.9, 0.9),  # AI: A
        label("p2", 0, 0.2, 0.2),  # AI: B
        label("p3", 0, 0.5, 0.5, flags="identical"),  # AI: tie
        label("p4", 0, 0.7, 0.7),  # AI: A
        label("p5", 0, None),  # unscored: no AI label to agree with
    ]
    reviews = [
        verdict("p1", 0, "A"),  # agree
        verdict("p2", 0, "A"),  # disagree
        verdict("p3", 0, "A"),  # on an AI tie
        verdict("p4", 0, "tie"),  # a human tie states no preference
        verdict("p4", 0, "both_bad", reviewer="bob"),
        verdict("p5", 0, "A"),  # ignored: the label is unscored
        verdict("p1", 0, "skip", reviewer="bob"),  # skips are not verdicts
    ]
    a = review.agreement(labels, reviews)
    assert (a.reviews, a.decisive, a.agree) == (5, 2, 1)
    assert (a.ties, a.both_bad, a.ai_ties) == (1, 1, 1)
    assert a.table == {("A", "A"): 1, ("A", "B"): 1}
    assert a.rate == pytest.approx(0.5)
    # human A 2/2, AI A 1/2: pe = 0.5, po = 0.5, kappa 0 (ties play no part)
    assert a.kappa == pytest.approx(0.0)


def test_the_latest_verdict_per_pair_and_reviewer_counts():
    labels = [label("p1", 0, 0.9, 0.9), label("p2", 0, 0.2, 0.2)]
    first = [verdict("p1", 0, "A"), verdict("p2", 0, "A")]
    a = review.agreement(labels, first)
    assert (a.decisive, a.agree) == (2, 1)

    # ann changes her mind on p2: her new verdict replaces the old one in the count
    second = first + [verdict("p2", 0, "B")]
    a = review.agreement(labels, second)
    assert (a.reviews, a.decisive, a.agree, a.rate) == (2, 2, 2, 1.0)
    assert a.kappa == pytest.approx(1.0)

    # a later skip does not undo a verdict; a later tie does make it a tie
    a = review.agreement(labels, second + [verdict("p2", 0, "skip")])
    assert (a.decisive, a.agree) == (2, 2)
    a = review.agreement(labels, second + [verdict("p2", 0, "tie")])
    assert (a.reviews, a.decisive, a.agree, a.ties) == (2, 1, 1, 1)

    # two reviewers on one pair count twice
    a = review.agreement(labels, second + [verdict("p1", 0, "B", reviewer="bob")])
    assert (a.reviews, a.decisive, a.agree) == (3, 3, 2)
    assert a.table == {("A", "A"): 1, ("B", "B"): 1, ("B", "A"): 1}


def test_agreement_by_principle():
    labels = [
        label("p1", 0, 0.9, 0.9, principle="harm"),
        label("p2", 0, 0.9, 0.9, principle="harm"),
        label("p3", 0, 0.1, 0.1, principle="honest"),
        label("p4", 0, 0.1, 0.1, principle="kind"),
    ]
    reviews = [
        verdict("p1", 0, "A"),
        verdict("p2", 0, "B"),
        verdict("p3", 0, "B"),
        verdict("p4", 0, "tie"),  # not decisive: no row for "kind"
    ]
    a = review.agreement(labels, reviews)
    assert a.by_principle == [
        {"principle": "harm", "reviewed": 2, "agree": 1, "rate": 0.5},
        {"principle": "honest", "reviewed": 1, "agree": 1, "rate": 1.0},
    ]


def test_calibration_bins_the_ai_confidence():
    labels = [
        label("low", 0, 0.525, 0.525),  # confidence 0.05: first bin
        label("top", 0, 0.975, 0.975),  # confidence 0.95: last bin
        label("one", 0, 1.0, 1.0),  # confidence 1.0: the last bin, not past it
        label("b", 0, 0.05, 0.05),  # AI: B, confidence 0.9
        label("unreviewed", 0, 0.7, 0.7),
    ]
    reviews = [
        verdict("low", 0, "B"),  # disagree
        verdict("top", 0, "A"),
        verdict("one", 0, "A"),
        verdict("b", 0, "A"),  # disagree
    ]
    cal = review.agreement(labels, reviews).calibration
    assert [c["confidence"] for c in cal] == [
        "0.0–0.2", "0.2–0.4", "0.4–0.6", "0.6–0.8", "0.8–1.0",
    ]  # fmt: skip
    assert [(c["low"], c["high"]) for c in cal] == [
        (0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0),
    ]  # fmt: skip
    assert [c["reviewed"] for c in cal] == [1, 0, 0, 0, 3]
    assert [c["agreement"] for c in cal[:4]] == [0.0, None, None, None]
    assert cal[4]["agreement"] == pytest.approx(2 / 3)


def test_labels_of_equal_confidence_land_in_the_same_calibration_bin():
    for low, high in [(0.2, 0.8), (0.3, 0.7)]:
        labels = [label("p", 0, low, low), label("q", 0, high, high)]
        assert labels[0]["confidence"] == pytest.approx(labels[1]["confidence"])
        reviews = [verdict("p", 0, "B"), verdict("q", 0, "A")]
        cal = review.agreement(labels, reviews).calibration
        assert [c["reviewed"] for c in cal].count(2) == 1, cal


def test_consistency_and_first_position_rates():
    labels = [
        label("c1", 0, 0.9, 0.8),  # consistent; first-shown won in order AB only
        label("c2", 0, 0.2, 0.3),  # consistent; first-shown won in order BA only
        label("c3", 0, 0.7, 0.6),  # consistent
        label("i1", 0, 0.7, 0.4),  # inconsistent: the first-shown response won both times
        label("one", 0, 0.9),  # one order: no consistency to check
        label("same", 0, 0.5, 0.5, flags="identical"),  # identical responses: left out
        label("over", 0, None),
    ]
    a = review.agreement(labels, [])
    assert a.consistency_rate == pytest.approx(0.75)
    assert a.first_position_rate == pytest.approx(5 / 8)
    assert a.position_bias is False
    # the scored labels' soft labels 0.85, 0.25, 0.65, 0.55, 0.9 and 0.5, in tenths closed on
    # the right: 0.25 in 0.2–0.3, 0.5 in 0.4–0.5, 0.55 in 0.5–0.6, 0.65 in 0.6–0.7, and both
    # 0.85 and 0.9 in 0.8–0.9
    assert [b["labels"] for b in a.soft_label_bins] == [0, 0, 1, 0, 1, 1, 1, 0, 2, 0]
    assert [b["bin"] for b in a.soft_label_bins][::3] == [
        "0.0–0.1",
        "0.3–0.4",
        "0.6–0.7",
        "0.9–1.0",
    ]

    a = review.agreement([label("one", 0, 0.9), label("over", 0, None)], [])
    assert (a.consistency_rate, a.first_position_rate, a.position_bias) == (None, None, False)


def test_agreement_of_nothing():
    a = review.agreement([], [])
    assert (a.reviews, a.decisive, a.agree, a.rate, a.kappa) == (0, 0, 0, None, None)
    assert a.table == {} and a.by_principle == [] and a.strata == []
    assert [b["labels"] for b in a.soft_label_bins] == [0] * 10
    assert [c["reviewed"] for c in a.calibration] == [0] * 5
    assert all(c["agreement"] is None for c in a.calibration)


def test_strata_count_reviewed_and_remaining_labels_per_principle():
    labels = [
        label("a1", 0, 0.9, 0.9, principle="harm"),
        label("a1", 1, 0.9, 0.9, principle="harm"),
        label("a2", 0, 0.9, 0.9, principle="harm"),
        label("b1", 0, 0.1, 0.1, principle="honest"),
        label("b2", 0, None, principle="honest"),  # unscored: not a label to review
    ]
    reviews = [
        verdict("a1", 0, "A"),
        verdict("a1", 0, "B", reviewer="bob"),  # one pair, however many reviewers
        verdict("a1", 1, "tie"),  # a tie is a verdict: the pair is reviewed
        verdict("b2", 0, "A"),
    ]
    assert review.agreement(labels, reviews).strata == [
        {"principle": "harm", "labels": 3, "reviewed": 2, "remaining": 1},
        {"principle": "honest", "labels": 1, "reviewed": 0, "remaining": 1},
    ]


# -- position bias -------------------------------------------------------------------------


def first_biased(n: int) -> list[dict]:  # the first-shown response won both orders
    return [label(f"f{i}", 0, 0.8, 0.3) for i in range(n)]


def second_biased(n: int) -> list[dict]:
    return [label(f"s{i}", 0, 0.3, 0.8) for i in range(n)]


def test_position_bias_is_a_sign_test_over_the_inconsistent_pairs():
    assert review.position_biased(first_biased(7)) is True  # 7 > 2.58 * sqrt(7)
    assert review.position_biased(second_biased(8)) is True
    assert review.position_biased(first_biased(6)) is False  # too few to tell (6 < 6.32)
    assert review.position_biased(first_biased(6) + second_biased(6)) is False
    assert review.position_biased(first_biased(7) + second_biased(1)) is False  # 6 < 7.30
    consistent = [label(f"c{i}", 0, 0.9, 0.9) for i in range(50)]
    assert review.position_biased(consistent) is False

    a = review.agreement(first_biased(7) + consistent, [])
    assert a.position_bias is True
    assert a.consistency_rate == pytest.approx(50 / 57)


def test_the_position_evidence_says_what_it_rests_on_and_what_it_would_take():
    consistent = [label(f"c{i}", 0, 0.9, 0.9) for i in range(10)]
    none = review.PositionEvidence.of(consistent)
    assert (none.pairs, none.inconsistent, none.biased) == (10, 0, False)
    assert none.describe().endswith("no sign of position bias.")

    # 3 first-slot wins: the test cannot call it yet; 4 more on the same side would (7 > 6.83)
    early = review.PositionEvidence.of(first_biased(3) + consistent)
    assert (early.first, early.second, early.biased, early.needed) == (3, 0, False, 4)
    assert "3 of 13 pairs" in early.describe()
    assert early.describe().endswith(
        "it would take 4 more inconsistent pairs favouring the same slot."
    )
    assert review.PositionEvidence.of(first_biased(3 + early.needed) + consistent).biased

    # mixed slots need more; the count grows with the evidence against a bias
    mixed = review.PositionEvidence.of(first_biased(5) + second_biased(3))
    # 13 vs 3: 10 < 2.58 * sqrt(16) = 10.32; 14 vs 3: 11 > 2.58 * sqrt(17) = 10.64
    assert (mixed.biased, mixed.needed) == (False, 9)
    assert review.PositionEvidence.of(first_biased(5 + 9) + second_biased(3)).biased
    assert not review.PositionEvidence.of(first_biased(5 + 8) + second_biased(3)).biased

    biased = review.PositionEvidence.of(second_biased(8) + consistent)
    assert biased.biased and biased.needed == 0
    assert "prefers the second-shown answer beyond chance" in biased.describe()
    assert review.PositionEvidence.of([]).describe().startswith("No pair scored in both orders")

    a = review.agreement(first_biased(3) + consistent, [])
    assert a.position == early and a.position_bias is False
    assert review.agreement([label("one", 0, 0.9)], []).position is None  # one order only


# -- against the store ---------------------------------------------------------------------

LABEL_COLUMNS = [
    k for k in label("x", 0, 0.5) if k not in ("response_a", "response_b", "prompt_messages")
]


def seed_labels(store, rows: list[dict]) -> None:
    sql = (
        f"INSERT INTO labels ({', '.join(LABEL_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(LABEL_COLUMNS))})"
    )
    with store.connect() as con:
        for r in rows:
            con.rows(sql, [r[c] for c in LABEL_COLUMNS])


@pytest.fixture
def labelled(store) -> list[dict]:
    rows = [label(f"p{i}", 0, 0.1 + 0.1 * i, 0.15 + 0.1 * i) for i in range(6)]
    rows.append(label("p9", 0, None))  # unscored
    seed_labels(store, rows)
    return rows


def test_record_appends_and_keeps_earlier_verdicts(store, labelled):
    first = review.record(store, LABELS_JOB, "p1", 0, "ann", "A", "BA")
    second = review.record(store, LABELS_JOB, "p1", 0, "ann", "B", "AB")
    assert first != second
    rows = store.reviews(LABELS_JOB)
    assert [(r["id"], r["verdict"], r["display_order"]) for r in rows] == [
        (first, "A", "BA"),
        (second, "B", "AB"),
    ]
    assert {(r["prompt_id"], r["pair"], r["reviewer"]) for r in rows} == {("p1", 0, "ann")}
    assert all(r["created_at"] is not None and r["note"] is None for r in rows)
    assert store.reviews("label-other") == []

    # the re-review is the one that counts
    a = review.agreement(store.labels(LABELS_JOB), rows)
    assert (a.reviews, a.decisive) == (1, 1)
    assert a.table == {("B", labelled[1]["winner"]): 1}


def test_record_stores_a_note_verbatim(store, labelled):
    note = '<script>alert("x")</script> & <b>bold</b>\nsecond line'
    review.record(store, LABELS_JOB, "p2", 0, "  ann  ", "both_bad", "AB", note=note)
    review.record(store, LABELS_JOB, "p3", 0, "ann", "tie", "AB", note="   ")
    rows = store.reviews(LABELS_JOB)
    assert rows[0]["note"] == note
    assert rows[0]["reviewer"] == "ann"  # the name is trimmed
    assert rows[1]["note"] is None  # a blank note is no note


@pytest.mark.parametrize(
    "args, message",
    [
        (("p1", 0, "", "A", "AB"), "a reviewer name is needed"),
        (("p1", 0, "   ", "A", "AB"), "a reviewer name is needed"),
        (("p1", 0, "x" * 101, "A", "AB"), "a reviewer name has at most 100 characters"),
        (
            ("p1", 0, "ann", "C", "AB"),
            "unknown verdict 'C'; use one of A, B, tie, both_bad, skip",
        ),
        (("p1", 0, "ann", "a", "AB"), "unknown verdict 'a'"),
        (("p1", 0, "ann", "A", "XY"), "display order must be AB or BA, not 'XY'"),
        (
            ("p7", 0, "ann", "A", "AB"),
            f"label job {LABELS_JOB} has no label for prompt p7 pair 0",
        ),
        (
            ("p1", 3, "ann", "A", "AB"),
            f"label job {LABELS_JOB} has no label for prompt p1 pair 3",
        ),
    ],
)
def test_record_refuses_bad_verdicts_and_stores_nothing(store, labelled, args, message):
    with pytest.raises(CaiError) as info:
        review.record(store, LABELS_JOB, *args)
    assert str(info.value).startswith(message)
    assert store.reviews(LABELS_JOB) == []


def test_record_refuses_a_note_over_10000_characters(store, labelled):
    with pytest.raises(CaiError, match="a note has at most 10,000 characters"):
        review.record(store, LABELS_JOB, "p1", 0, "ann", "A", "AB", note="x" * 10_001)
    review.record(store, LABELS_JOB, "p1", 0, "ann", "A", "AB", note="x" * 10_000)
    assert len(store.reviews(LABELS_JOB)[0]["note"]) == 10_000


def test_a_label_job_of_another_id_has_no_labels_to_review(store, labelled):
    with pytest.raises(CaiError, match="label job label-other has no label for prompt p1 pair 0"):
        review.record(store, "label-other", "p1", 0, "ann", "A", "AB")


def test_a_session_shows_progress_and_resumes_where_the_reviewer_left_off(store, labelled):
    labels = store.labels(LABELS_JOB)
    assert len(labels) == 7
    todo, progress = review.session(labels, [], "ann", "least_confident", size=4)
    assert (progress.reviewed, progress.total) == (0, 4)
    assert keys(todo) == keys(review.order_queue(labels, "least_confident")[:4])
    assert ("p9", 0) not in keys(todo)  # unscored

    # ann gives a verdict on the first and skips the second; both count as handled
    for row, v in zip(todo[:2], ["A", "skip"], strict=True):
        order = review.display_order(row, "ann")
        review.record(
            store,
            LABELS_JOB,
            row["prompt_id"],
            row["pair"],
            "ann",
            review.to_stored(v, order),
            order,
        )
    reviews = store.reviews(LABELS_JOB)
    again, progress = review.session(labels, reviews, "ann", "least_confident", size=4)
    assert (progress.reviewed, progress.total) == (2, 4)
    assert keys(again) == keys(todo[2:])

    # bob has his own progress
    bobs, progress = review.session(labels, reviews, "bob", "least_confident", size=4)
    assert (progress.reviewed, progress.total) == (0, 4)
    assert keys(bobs) == keys(todo)

    # a session larger than the queue is the whole queue
    rest, progress = review.session(labels, reviews, "ann", "least_confident", size=100)
    assert (progress.reviewed, progress.total) == (2, 6)
    assert len(rest) == 4


def test_a_verdict_given_on_the_swapped_display_is_stored_about_the_stored_responses(
    store, labelled
):
    row = next(r for r in store.labels(LABELS_JOB) if review.display_order(r, "ann") == "BA")
    # ann sees response B first and says the first-shown one (stored B) is better
    review.record(
        store, LABELS_JOB, row["prompt_id"], row["pair"], "ann", review.to_stored("A", "BA"), "BA"
    )
    (stored,) = store.reviews(LABELS_JOB)
    assert (stored["verdict"], stored["display_order"]) == ("B", "BA")
