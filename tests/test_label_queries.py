"""The Labels page's queries: a page of labels, its count and filters, one label's detail, the
next pair to review and the agreement numbers, asked of DuckDB instead of computed over a
loaded job. Each answer is checked against a plain-Python reading of the same rows
(`Store.labels`, `Store.reviews`), on a label job written and ingested as a real one is."""

from __future__ import annotations

from collections import Counter, defaultdict

import pandas as pd
import pytest

from bench import synthetic
from cai_engine import review
from cai_engine.errors import CaiError
from cai_engine.pairs import cut_off_sides
from cai_engine.review import LabelFilter
from cai_engine.store import Store

LABELS = 300
REVIEWS = 150


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("labels") / "home")
    made = synthetic.label_job(store, LABELS, REVIEWS, shards=4)
    assert made["rows"] == 2 * LABELS  # the pairs and their labels
    assert made["reviews"] == REVIEWS
    return store, made["job"], store.labels(made["job"]), store.reviews(made["job"])


def key(r) -> tuple[str, int]:
    return (r["prompt_id"], int(r["pair"]))


def keeps(f: LabelFilter, row: dict, reviews: list[dict]) -> bool:
    """What `f` means, in Python, for one row of `Store.labels`."""
    if f.principle and row["principle_id"] != f.principle:
        return False
    if f.inconsistent and row["consistent"] is not False:
        return False
    conf = row["confidence"]
    if f.min_confidence is not None and (conf is None or conf < f.min_confidence):
        return False
    if f.max_confidence is not None and (conf is None or conf > f.max_confidence):
        return False
    if f.cut_off is not None and bool(cut_off_sides(row["pair_flags"])) != f.cut_off:
        return False
    if f.reviewed is not None:
        given = {
            key(r)
            for r in reviews
            if r["verdict"] != "skip" and (f.reviewer is None or r["reviewer"] == f.reviewer)
        }
        if (key(row) in given) != f.reviewed:
            return False
    needle = f.needle.lower()
    prompt = "\n".join(m["content"] for m in row["prompt_messages"])
    texts = (prompt, row["response_a"], row["response_b"])
    return not needle or any(needle in t.lower() for t in texts)


def filters(everything) -> list[LabelFilter]:
    principles = sorted({r["principle_id"] for r in everything})
    word = everything[5]["response_b"].split()[7]  # a word of some answer
    prompt_word = everything[9]["prompt_messages"][-1]["content"].split()[3]
    return [
        LabelFilter(),
        LabelFilter(principle=principles[0]),
        LabelFilter(inconsistent=True),
        LabelFilter(principle=principles[1], inconsistent=True),
        LabelFilter(cut_off=True),
        LabelFilter(cut_off=False),
        LabelFilter(min_confidence=0.2, max_confidence=0.4),
        LabelFilter(min_confidence=0.5),
        LabelFilter(reviewed=True),
        LabelFilter(reviewed=False),
        LabelFilter(reviewed=True, reviewer="ann"),
        LabelFilter(reviewed=False, reviewer="bob"),
        LabelFilter(search=word),
        LabelFilter(search=word.upper(), cut_off=False),
        LabelFilter(search=prompt_word),
        LabelFilter(search=f"  {word} "),  # surrounding spaces are not searched for
    ]


def test_every_filter_pages_the_labels_the_python_filter_keeps_in_order(job):
    store, job_id, everything, reviews = job
    with store.session():  # one opening for the many small pages, as a page run has
        for where in filters(everything):
            expected = sorted(key(r) for r in everything if keeps(where, r, reviews))
            got, after = [], None
            while True:
                page, total = store.label_page(job_id, where, after=after, limit=7)
                assert total == len(expected), where
                assert len(page) <= 7
                got += [key(r) for r in page]
                if len(page) < 7:
                    break
                after = got[-1]
            assert got == expected, where
    assert 0 < len(expected) < LABELS  # the filters above keep some labels, not all


def test_the_filters_are_not_all_trivial(job):
    store, job_id, everything, reviews = job
    counts = [store.label_page(job_id, f, limit=1)[1] for f in filters(everything)]
    assert counts[0] == LABELS
    assert all(0 < n < LABELS for n in counts[1:]), counts


def test_a_page_row_says_what_the_table_shows(job):
    store, job_id, everything, _ = job
    by_key = {key(r): r for r in everything}
    page, _ = store.label_page(job_id, limit=LABELS)
    assert len(page) == LABELS
    for row in page:
        r = by_key[key(row)]
        assert row["prompt_text"] == r["prompt_messages"][-1]["content"]
        for name in ("principle_id", "p_a_ab", "p_a_ba", "soft_label", "winner", "flags"):
            assert row[name] == r[name], name
        assert (row["confidence"], row["consistent"]) == (r["confidence"], r["consistent"])
        assert row["cut_off"] == cut_off_sides(r["pair_flags"])
    assert {tuple(r["cut_off"]) for r in page} >= {(), ("A",), ("B",)}


def test_the_detail_is_the_label_as_the_whole_job_read_gives_it(job):
    store, job_id, everything, _ = job
    for r in everything[::37]:
        assert store.label_detail(job_id, r["prompt_id"], r["pair"]) == r
    assert store.label_detail(job_id, "nope", 0) is None


def test_the_facets_count_labels_scored_and_reviewed(job):
    store, job_id, everything, reviews = job
    facets = store.label_facets(job_id)
    assert facets == {
        "labels": LABELS,
        "scored": sum(r["soft_label"] is not None for r in everything),
        "reviewed": len({key(r) for r in reviews if r["verdict"] != "skip"}),
        "principles": sorted({r["principle_id"] for r in everything}),
    }
    assert facets["scored"] < LABELS  # the synthetic job has unscored (overflow) labels
    assert store.label_facets("label-none") == {
        "labels": 0,
        "scored": 0,
        "reviewed": 0,
        "principles": [],
    }


# -- search ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "needle", ["%", "_", "w1%w2", "w_1", ".*", "[w]", "w\\d", "(", "\\", "'; DROP TABLE labels"]
)
def test_search_is_plain_text_whatever_characters_it_holds(job, needle):
    store, job_id, everything, reviews = job
    where = LabelFilter(search=needle)
    _, total = store.label_page(job_id, where)
    assert total == sum(keeps(where, r, reviews) for r in everything) == 0
    assert store.label_facets(job_id)["labels"] == LABELS  # and nothing was harmed


def test_a_regex_or_like_pattern_matches_only_itself(job):
    """The synthetic texts are words w0 .. w4999 and prompts "<n>: <words>": patterns that
    would match them as a regex or a LIKE pattern find nothing, the literal text is found."""
    store, job_id, everything, _ = job
    for pattern in ("w.1", "w%1", "w_1", "w[0-9]", "^w"):
        assert store.label_page(job_id, LabelFilter(search=pattern))[1] == 0, pattern
    prompt = everything[4]["prompt_messages"][-1]["content"]  # "<n>: w.. w.."
    literal = LabelFilter(search=prompt[:12].upper())
    _, total = store.label_page(job_id, literal)
    assert total == sum(keeps(literal, r, []) for r in everything) >= 1


def test_a_search_of_pages_of_text_is_refused_before_it_runs():
    with pytest.raises(CaiError, match=r"search: 10,000 characters; search for at most 200"):
        LabelFilter(search="x" * 10_000)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"min_confidence": -0.1}, "min_confidence: -0.1 is not a confidence; use 0 to 1"),
        ({"max_confidence": 1.5}, "max_confidence: 1.5 is not a confidence; use 0 to 1"),
        ({"min_confidence": 0.6, "max_confidence": 0.4}, "min_confidence 0.6 is above max"),
        ({"reviewer": "ann"}, "reviewer: a reviewer narrows reviewed=True or False"),
    ],
)
def test_a_filter_that_cannot_be_run_says_which_field_is_wrong(fields, message):
    with pytest.raises(CaiError, match=message):
        LabelFilter(**fields)


# -- the review queue -----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", sorted(review.STRATEGIES))
def test_next_review_walks_the_session_the_list_queue_gives(job, strategy):
    """A reviewer's session of 6, pair by pair from the store, is the first 6 of the queue
    `order_queue` gives for the same labels (one order, SQL over either)."""
    store, job_id, everything, reviews = job
    reviewer = f"walker-{strategy}"
    expected = [key(r) for r in review.order_queue(everything, strategy, seed=4)[:6]]
    seen = []
    try:
        for done in range(6):
            row, progress = store.next_review(job_id, reviewer, strategy, 6, seed=4)
            assert (progress.reviewed, progress.total) == (done, 6)
            assert row["soft_label"] is not None
            assert row["response_a"] and row["prompt_messages"]  # what the review screen shows
            seen.append(key(row))
            verdict = "skip" if done == 2 else "A"  # a skip moves the session on too
            store.add_review(job_id, row["prompt_id"], row["pair"], reviewer, verdict, "AB")
        assert store.next_review(job_id, reviewer, strategy, 6, seed=4) == (
            None,
            review.Progress(6, 6),
        )
        assert seen == expected
        # a larger session goes on where this one stopped
        row, progress = store.next_review(job_id, reviewer, strategy, 7, seed=4)
        assert (key(row), progress) == (
            key(review.order_queue(everything, strategy, seed=4)[6]),
            review.Progress(6, 7),
        )
    finally:
        with store.connect() as con:
            con.rows("DELETE FROM reviews WHERE reviewer = ?", [reviewer])


def test_the_queue_orders_as_each_strategy_says(job):
    store, job_id, everything, _ = job
    scored = [r for r in everything if r["soft_label"] is not None]
    least = review.order_queue(everything, "least_confident")
    assert [r["confidence"] for r in least] == sorted(r["confidence"] for r in scored)
    inconsistent = review.order_queue(everything, "inconsistent")
    n = sum(r["consistent"] is False for r in scored)
    assert 0 < n < len(scored)
    assert all(r["consistent"] is False for r in inconsistent[:n])
    assert [r["confidence"] for r in inconsistent[:n]] == sorted(
        r["confidence"] for r in inconsistent[:n]
    )
    stratified = review.order_queue(everything, "stratified", seed=1)
    principles = sorted({r["principle_id"] for r in scored})
    assert [r["principle_id"] for r in stratified[: len(principles)]] == principles
    random_ = [key(r) for r in review.order_queue(everything, "random", seed=1)]
    assert random_ != sorted(random_)
    assert random_ != [key(r) for r in review.order_queue(everything, "random", seed=2)]
    assert sorted(random_) == sorted(key(r) for r in scored)  # unscored labels never queued


def test_a_session_larger_than_the_job_is_every_scored_label(job):
    store, job_id, everything, _ = job
    scored = sum(r["soft_label"] is not None for r in everything)
    row, progress = store.next_review(job_id, "nobody", "random", LABELS * 2)
    assert progress == review.Progress(0, scored) and row is not None
    with pytest.raises(CaiError, match="unknown strategy 'hardest'"):
        store.next_review(job_id, "nobody", "hardest", 5)


# -- agreement ------------------------------------------------------------------------------


def python_agreement(labels: list[dict], reviews: list[dict]) -> dict:
    """The agreement as the studio computed it in Python before it asked DuckDB (kept here as
    the reference: the numbers must not change)."""
    scored = [r for r in labels if r["soft_label"] is not None]
    by_key = {key(r): r for r in scored}
    latest = {}
    for r in reviews:
        if r["verdict"] != "skip":
            latest[(r["prompt_id"], int(r["pair"]), r["reviewer"])] = r
    table, per_principle, bins = Counter(), defaultdict(lambda: [0, 0]), [[0, 0] for _ in range(5)]
    counted = ties = both_bad = ai_ties = 0
    for (prompt_id, pair, _), rev in latest.items():
        label = by_key.get((prompt_id, pair))
        if label is None:
            continue
        counted += 1
        if rev["verdict"] == "tie":
            ties += 1
        elif rev["verdict"] == "both_bad":
            both_bad += 1
        elif label["winner"] == "tie":
            ai_ties += 1
        else:
            table[(rev["verdict"], label["winner"])] += 1
            hit = int(rev["verdict"] == label["winner"])
            per_principle[label["principle_id"]][0] += 1
            per_principle[label["principle_id"]][1] += hit
            b = min(int(label["confidence"] * 5 + 1e-9), 4)
            bins[b][0] += 1
            bins[b][1] += hit
    both = [r for r in scored if r["p_a_ba"] is not None and "identical" not in r["flags"]]
    decided = [r for r in both if r["p_a_ab"] != 0.5 and r["p_a_ba"] != 0.5]
    seen = {k[:2] for k in latest}
    strata = defaultdict(lambda: [0, 0])
    for r in scored:
        strata[r["principle_id"]][0] += 1
        strata[r["principle_id"]][1] += key(r) in seen
    return {
        "counts": (counted, ties, both_bad, ai_ties),
        "table": dict(table),
        "by_principle": {p: tuple(v) for p, v in per_principle.items()},
        "bins": bins,
        "consistency": sum(bool(r["consistent"]) for r in both) / len(both),
        "first": (sum(r["p_a_ab"] > 0.5 for r in both) + sum(r["p_a_ba"] < 0.5 for r in both))
        / (2 * len(both)),
        "position": review.PositionEvidence.of(decided),
        "strata": {p: tuple(v) for p, v in strata.items()},
        "soft": [float(r["soft_label"]) for r in scored],
    }


def test_the_agreement_asked_of_the_store_is_the_python_one(job):
    store, job_id, everything, reviews = job
    a = store.agreement(job_id)
    ref = python_agreement(everything, reviews)
    assert (a.reviews, a.ties, a.both_bad, a.ai_ties) == ref["counts"]
    assert a.table == ref["table"]
    assert a.decisive == sum(ref["table"].values()) > 50
    assert a.agree == ref["table"].get(("A", "A"), 0) + ref["table"].get(("B", "B"), 0)
    assert a.kappa == review.cohen_kappa(ref["table"])
    assert {p["principle"]: (p["reviewed"], p["agree"]) for p in a.by_principle} == ref[
        "by_principle"
    ]
    assert [
        [c["reviewed"], round((c["agreement"] or 0) * c["reviewed"])] for c in a.calibration
    ] == ref["bins"]
    assert a.consistency_rate == ref["consistency"]
    assert a.first_position_rate == ref["first"]
    assert a.position == ref["position"] and a.position.pairs > 0
    assert {s["principle"]: (s["labels"], s["reviewed"]) for s in a.strata} == ref["strata"]
    assert all(s["remaining"] == s["labels"] - s["reviewed"] for s in a.strata)
    edges = list(review.SOFT_LABEL_BINS)
    hist = pd.cut(pd.Series(ref["soft"]), bins=edges, include_lowest=True).value_counts(sort=False)
    assert [b["labels"] for b in a.soft_label_bins] == list(hist.values)
    # and the lists' agreement (the same SQL over an in-memory copy) is the store's
    assert review.agreement(everything, reviews) == a


def test_soft_labels_on_a_bin_edge_count_where_a_histogram_closed_on_the_right_puts_them():
    from tests.test_review import label

    values = [0.0, 0.1, 0.2, 0.3, 0.30000000000000004, 0.5, 0.7, 0.9, 0.95, 1.0]
    labels = [label(f"p{i}", 0, v) for i, v in enumerate(values)]
    bins = review.agreement(labels, []).soft_label_bins
    expected = pd.cut(pd.Series(values), bins=list(review.SOFT_LABEL_BINS), include_lowest=True)
    assert [b["labels"] for b in bins] == list(expected.value_counts(sort=False).values)
    # 0.0 and 0.1 in the first bin, 0.2 in the second, 0.3 (twice over: float error) in the
    # third, ... 1.0 with 0.95 in the last
    assert [b["labels"] for b in bins] == [2, 1, 1, 1, 1, 0, 1, 0, 1, 2]


def test_the_store_agreement_on_hand_made_rows_is_the_hand_computed_one(store):
    """`test_review`'s documented-ties case, written into a store and asked of it."""
    from tests.test_review import LABELS_JOB, label, seed_labels

    seed_labels(
        store,
        [
            label("p1", 0, 0.9, 0.9),  # AI: A
            label("p2", 0, 0.2, 0.2),  # AI: B
            label("p3", 0, 0.5, 0.5, flags="identical"),  # AI: tie
            label("p4", 0, 0.7, 0.7),  # AI: A
            label("p5", 0, None),  # unscored
        ],
    )
    for prompt_id, verdict, reviewer in [
        ("p1", "A", "ann"),  # agree
        ("p2", "B", "ann"),  # agree, then ann changes her mind below
        ("p3", "A", "ann"),  # on an AI tie
        ("p4", "tie", "ann"),
        ("p4", "both_bad", "bob"),
        ("p5", "A", "ann"),  # the label is unscored: not counted
        ("p1", "skip", "bob"),  # a skip is not a verdict
        ("p2", "A", "ann"),  # the latest counts: disagree
    ]:
        store.add_review(LABELS_JOB, prompt_id, 0, reviewer, verdict, "AB")
    a = store.agreement(LABELS_JOB)
    assert (a.reviews, a.decisive, a.agree) == (5, 2, 1)
    assert (a.ties, a.both_bad, a.ai_ties) == (1, 1, 1)
    assert a.table == {("A", "A"): 1, ("A", "B"): 1}
    assert a.rate == pytest.approx(0.5)
    assert a.kappa == pytest.approx(0.0)  # human A 2/2, AI A 1/2: pe = po = 0.5
    assert [(s["principle"], s["labels"], s["reviewed"]) for s in a.strata] == [("harm", 4, 4)]
    assert a == review.agreement(store.labels(LABELS_JOB), store.reviews(LABELS_JOB))
