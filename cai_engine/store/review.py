"""Store queries for human spot-checks of AI labels (append-only: re-reviews are kept): the
review queue and the agreement numbers, asked of DuckDB instead of computed over a loaded job.

The queue's order and the agreement are SQL over two tables, `labels` and `reviews`. The
store runs it on its own tables; `review.order_queue`, `review.session` and
`review.agreement` run the very same SQL over an in-memory DuckDB holding the lists they are
given (`scratch`), so each has one implementation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from cai_engine import review
from cai_engine.store.core import Conn, StoreCore
from cai_engine.store.labels import label_detail
from cai_engine.store.records import records

# -- the queue ------------------------------------------------------------------------------

# A label's place in the seeded shuffle: DuckDB's hash of (seed, prompt id, pair), so the order
# depends on the seed and the label alone, never on the order rows were written or read.
_RANDOM_KEY = "hash($seed::BIGINT, prompt_id::VARCHAR, pair::BIGINT)"
_ORDERS = {  # ties end on the random key, then the label's key: every order is total
    "random": "rk, prompt_id, pair",
    "stratified": "stratum, principle_id, rk, prompt_id, pair",  # round-robin over principles
    "least_confident": "confidence, rk, prompt_id, pair",
    "inconsistent": "coalesce(consistent, true), confidence, rk, prompt_id, pair",  # false first
}


def _queue_sql(strategy: str) -> str:
    """CTEs ending in `queue(prompt_id, pair, position, done)`: the first $size scored labels
    of job $job in `strategy`'s order, and whether $reviewer has given each a verdict (a skip
    counts: the reviewer has seen the pair)."""
    review.check_strategy(strategy)
    order = _ORDERS[strategy]
    if strategy == "stratified":
        # Round-robin: a label's stratum is its rank by random key within its principle. The
        # first $size of the queue lie within each principle's first $size, so take those
        # (a top-N per principle) rather than rank every label of the job.
        top = f"""
        firsts AS (
            SELECT principle_id,
                   arg_min({{'prompt_id': prompt_id, 'pair': pair, 'rk': rk}},
                           {{'rk': rk, 'prompt_id': prompt_id, 'pair': pair}}, $size) AS firsts
            FROM keyed
            GROUP BY principle_id
        ),
        top AS (
            SELECT * FROM (
                SELECT principle_id, unnest(firsts, recursive := true),
                       generate_subscripts(firsts, 1) AS stratum
                FROM firsts
            )
            ORDER BY {order} LIMIT $size
        )"""
    else:
        top = f"top AS (SELECT * FROM keyed ORDER BY {order} LIMIT $size)"
    return f"""
        WITH keyed AS (
            SELECT prompt_id, pair, principle_id, confidence, consistent, {_RANDOM_KEY} AS rk
            FROM labels
            WHERE job_id = $job AND soft_label IS NOT NULL
        ),
        {top},
        queue AS (
            SELECT prompt_id, pair,
                   row_number() OVER (ORDER BY {order}) AS position,
                   (prompt_id, pair) IN (
                       SELECT prompt_id, pair FROM reviews
                       WHERE labels_job = $job AND reviewer = $reviewer
                   ) AS done
            FROM top
        )
    """


def _queue_params(job_id: str, reviewer: str, size: int, seed: int) -> dict:
    return {"job": job_id, "reviewer": reviewer or "", "size": max(0, int(size)), "seed": seed}


def session_queue(
    con: Conn, job_id: str, reviewer: str, strategy: str, size: int, seed: int = 0
) -> list[tuple[str, int, bool]]:
    """(prompt id, pair, done) of a reviewer's session in queue order: its first `size` pairs."""
    rows = con.rows(
        _queue_sql(strategy) + "SELECT prompt_id, pair, done FROM queue ORDER BY position",
        _queue_params(job_id, reviewer, size, seed),
    )
    return [(p, int(n), bool(d)) for p, n, d in rows]


# -- agreement ------------------------------------------------------------------------------

# 1) Each (pair, reviewer)'s latest verdict other than skip on a scored label of job $job
# (verdicts are appended; `created_at, id` is the order they were given in), counted by
# (human, AI, principle, calibration bin), with how many distinct pairs each group brings
# (a pair counts in the group of its first reviewer by name). $eps keeps confidences exactly
# on a bin edge (0.6 from p = 0.2 or 0.8) in one bin despite float error.
_VERDICTS = """
    WITH given AS (
        SELECT prompt_id, pair, reviewer, verdict,
               row_number() OVER (ORDER BY created_at, id) AS seq
        FROM reviews
        WHERE labels_job = $job AND verdict <> 'skip'
    ),
    latest AS (
        SELECT prompt_id, pair, reviewer, arg_max(verdict, seq) AS verdict
        FROM given
        GROUP BY prompt_id, pair, reviewer
    ),
    counted AS (
        SELECT v.verdict, l.winner, l.principle_id,
               least(floor(l.confidence * $bins + $eps), $bins - 1)::INTEGER AS bin,
               row_number() OVER (PARTITION BY v.prompt_id, v.pair ORDER BY v.reviewer) = 1
                   AS first_of_pair
        FROM latest v
        JOIN labels l ON l.job_id = $job AND l.prompt_id = v.prompt_id AND l.pair = v.pair
        WHERE l.soft_label IS NOT NULL
    )
    SELECT verdict, winner, principle_id, bin, count(*), count(*) FILTER (WHERE first_of_pair)
    FROM counted
    GROUP BY ALL
"""

# 2) One pass over the job's scored labels: how many per principle, whether each was scored
# in both orders (identical answers left out), whether its orders agree and on which side of
# 0.5 each order fell, and the soft labels' histogram (`histogram` bins are closed on the
# right: a value counts under the first edge it does not exceed).
_LABELS = """
    SELECT principle_id,
           p_a_ba IS NOT NULL AND NOT contains(coalesce(flags, ''), 'identical') AS both_orders,
           coalesce(consistent, false),
           sign(p_a_ab - 0.5)::INTEGER,
           coalesce(sign(p_a_ba - 0.5)::INTEGER, 0),
           count(*),
           histogram(soft_label, $edges)
    FROM labels
    WHERE job_id = $job AND soft_label IS NOT NULL
    GROUP BY ALL
"""


def agreement_of(con: Conn, job_id: str) -> review.Agreement:
    """Agreement between human verdicts and job `job_id`'s AI labels, from the tables on `con`
    (the store's, or a `scratch` database of lists); see `cai_engine.review` for ties."""
    n_bins = len(review.CALIBRATION_BINS) - 1
    verdicts = con.rows(_VERDICTS, {"job": job_id, "bins": n_bins, "eps": 1e-9})
    soft = review.SOFT_LABEL_BINS
    labels = con.rows(_LABELS, {"job": job_id, "edges": list(soft[1:])})

    # 1) verdicts: a human tie or both-bad states no preference, nor does the AI's tie; the
    # rest are decisive
    table: dict[tuple[str, str], int] = {}
    per_principle: dict[str, list[int]] = {}  # [decisive, agree]
    bins = [[0, 0] for _ in range(n_bins)]
    reviewed: dict[str, int] = {}  # pairs with a verdict, per principle
    ties = both_bad = ai_ties = 0
    for human, ai, principle, b, n, pairs in verdicts:
        reviewed[principle] = reviewed.get(principle, 0) + pairs
        if human == "tie":
            ties += n
        elif human == "both_bad":
            both_bad += n
        elif ai == "tie":
            ai_ties += n
        else:
            table[(human, ai)] = table.get((human, ai), 0) + n
            hit = n if human == ai else 0
            counts = per_principle.setdefault(principle, [0, 0])
            counts[0] += n
            counts[1] += hit
            bins[b][0] += n
            bins[b][1] += hit
    decisive = sum(table.values())
    agree = table.get(("A", "A"), 0) + table.get(("B", "B"), 0)
    result = review.Agreement(
        reviews=sum(row[4] for row in verdicts),
        decisive=decisive,
        agree=agree,
        rate=agree / decisive if decisive else None,
        kappa=review.cohen_kappa(table),
        table=table,
        ties=ties,
        both_bad=both_bad,
        ai_ties=ai_ties,
    )
    result.by_principle = [
        {"principle": p, "reviewed": n, "agree": k, "rate": k / n}
        for p, (n, k) in sorted(per_principle.items())
    ]
    cal = review.CALIBRATION_BINS
    result.calibration = [
        {
            "confidence": f"{lo:.1f}–{hi:.1f}",
            "low": lo,
            "high": hi,
            "reviewed": n,
            "agreement": k / n if n else None,
        }
        for lo, hi, (n, k) in zip(cal[:-1], cal[1:], bins, strict=True)
    ]

    # 2) the labels: position consistency over those scored in both orders (the sign test
    # counts those decided in each order), the soft-label histogram, per-principle strata
    both = consistent = firsts = decided = first = second = 0
    histogram = dict.fromkeys(soft[1:], 0)
    per_label: dict[str, int] = {}  # scored labels, per principle
    for principle, both_orders, agrees, ab, ba, n, counts in labels:
        per_label[principle] = per_label.get(principle, 0) + n
        for edge, k in counts.items():  # soft labels lie in [0, 1]: no value is past 1.0
            histogram[edge] = histogram.get(edge, 0) + k
        if not both_orders:
            continue
        both += n
        consistent += n if agrees else 0
        firsts += n * ((ab > 0) + (ba < 0))  # the first-shown answer won order AB, order BA
        decided += n if ab and ba else 0
        first += n if ab > 0 > ba else 0
        second += n if ab < 0 < ba else 0
    if both:
        result.consistency_rate = consistent / both
        result.first_position_rate = firsts / (2 * both)
        result.position = review.PositionEvidence.from_counts(decided, first, second)
        result.position_bias = result.position.biased
    result.soft_label_bins = [
        {"bin": f"{lo:.1f}–{hi:.1f}", "low": lo, "high": hi, "labels": histogram[hi]}
        for lo, hi in zip(soft[:-1], soft[1:], strict=True)
    ]
    result.strata = [
        {"principle": p, "labels": n, "reviewed": reviewed.get(p, 0),
         "remaining": n - reviewed.get(p, 0)}
        for p, n in sorted(per_label.items())
    ]  # fmt: skip
    return result


# -- lists as tables ------------------------------------------------------------------------

_SCRATCH_LABELS = {  # column: (DuckDB type, value from a label row)
    "prompt_id": ("VARCHAR", lambda r: r["prompt_id"]),
    "pair": ("INTEGER", lambda r: int(r["pair"])),
    "principle_id": ("VARCHAR", lambda r: r.get("principle_id")),
    "p_a_ab": ("DOUBLE", lambda r: _float(r.get("p_a_ab"))),
    "p_a_ba": ("DOUBLE", lambda r: _float(r.get("p_a_ba"))),
    "soft_label": ("DOUBLE", lambda r: _float(r.get("soft_label"))),
    "winner": ("VARCHAR", lambda r: r.get("winner")),
    "confidence": ("DOUBLE", lambda r: _float(r.get("confidence"))),
    "consistent": (
        "BOOLEAN",
        lambda r: None if r.get("consistent") is None else bool(r["consistent"]),
    ),
    "flags": ("VARCHAR", lambda r: r.get("flags")),
}
_SCRATCH_REVIEWS = ("prompt_id", "pair", "reviewer", "verdict")


def _float(value) -> float | None:
    return None if value is None else float(value)


@contextmanager
def scratch(labels: list[dict], reviews: list[dict]) -> Iterator[Conn]:
    """An in-memory DuckDB whose `labels` and `reviews` tables hold these lists, as job
    `review.SCRATCH_JOB`'s; reviews keep their list order (oldest first) as the order given."""
    import duckdb
    import pyarrow as pa

    con = duckdb.connect()
    try:
        columns = {name: [value(r) for r in labels] for name, (_, value) in _SCRATCH_LABELS.items()}
        types = {name: kind for name, (kind, _) in _SCRATCH_LABELS.items()}
        con.register("label_rows", pa.table(columns))
        casts = ", ".join(f"{name}::{kind} AS {name}" for name, kind in types.items())
        con.execute(f"CREATE TABLE labels AS SELECT ?::VARCHAR AS job_id, {casts} FROM label_rows",
                    [review.SCRATCH_JOB])  # fmt: skip
        given = {name: [r[name] for r in reviews] for name in _SCRATCH_REVIEWS}
        given["pair"] = [int(p) for p in given["pair"]]
        given["seq"] = list(range(len(reviews)))
        con.register("review_rows", pa.table(given))
        con.execute(
            "CREATE TABLE reviews AS SELECT ?::VARCHAR AS labels_job, prompt_id::VARCHAR AS"
            " prompt_id, pair::INTEGER AS pair, reviewer::VARCHAR AS reviewer, verdict::VARCHAR"
            " AS verdict, seq::BIGINT AS created_at, lpad(seq::VARCHAR, 12, '0') AS id"
            " FROM review_rows",
            [review.SCRATCH_JOB],
        )
        yield Conn(con)
    finally:
        con.close()


class ReviewQueries(StoreCore):
    def add_review(
        self,
        labels_job: str,
        prompt_id: str,
        pair: int,
        reviewer: str,
        verdict: str,
        display_order: str,
        note: str | None = None,
    ) -> str:
        """Append a human verdict; earlier verdicts are kept. Returns the review's id."""
        # time-ordered, so `ORDER BY created_at, id` is the order verdicts were given
        review_id = f"{time.time_ns():016x}{uuid.uuid4().hex[:16]}"
        with self.connect() as con:
            con.rows(
                "INSERT INTO reviews"
                " (id, labels_job, prompt_id, pair, reviewer, verdict, display_order, note)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [review_id, labels_job, prompt_id, pair, reviewer, verdict, display_order, note],
            )
        return review_id

    def add_reviews(self, labels_job: str, verdicts: list[dict]) -> list[str]:
        """Append many verdicts at once, in list order (each a dict of `prompt_id`, `pair`,
        `reviewer`, `verdict`, `display_order` and optionally `note`), unchecked: for imports
        of verdicts given elsewhere. Returns their ids."""
        import pyarrow as pa

        stamp = time.time_ns()
        salt = uuid.uuid4().hex[:8]
        ids = [f"{stamp:016x}{i:08x}{salt}" for i in range(len(verdicts))]
        columns = {
            "id": ids,
            "prompt_id": [v["prompt_id"] for v in verdicts],
            "pair": [int(v["pair"]) for v in verdicts],
            "reviewer": [v["reviewer"] for v in verdicts],
            "verdict": [v["verdict"] for v in verdicts],
            "display_order": [v["display_order"] for v in verdicts],
            "note": pa.array([v.get("note") for v in verdicts], pa.string()),
        }
        with self.transaction() as con:
            con.register("new_reviews", pa.table(columns))
            try:
                con.rows(
                    "INSERT INTO reviews"
                    " (id, labels_job, prompt_id, pair, reviewer, verdict, display_order, note)"
                    " SELECT id, ?, prompt_id, pair, reviewer, verdict, display_order, note"
                    " FROM new_reviews",
                    [labels_job],
                )
            finally:
                con.unregister("new_reviews")
        return ids

    def reviews(self, labels_job: str) -> list[dict]:
        """Every verdict on a label job's pairs, oldest first (re-reviews included; a whole
        job's: for exports, never for a page)."""
        with self.connect() as con:
            frame = con.frame(
                "SELECT * FROM reviews WHERE labels_job = ? ORDER BY created_at, id",
                [labels_job],
            )
        return records(frame)

    def next_review(
        self, labels_job: str, reviewer: str, strategy: str, size: int, seed: int = 0
    ) -> tuple[dict | None, review.Progress]:
        """The next pair `reviewer` has to review in a session of the first `size` pairs of the
        `strategy` queue (as `Store.label_detail` gives it; None when the session is done), and
        the session's progress. Reads one label, however big the job."""
        params = _queue_params(labels_job, reviewer, size, seed)
        with self.connect() as con:
            total, done, prompt_id, pair = con.one(
                _queue_sql(strategy) + "SELECT count(*), count(*) FILTER (WHERE done),"
                " arg_min(prompt_id, position) FILTER (WHERE NOT done),"
                " arg_min(pair, position) FILTER (WHERE NOT done)"
                " FROM queue",
                params,
            )
            row = None if prompt_id is None else label_detail(con, labels_job, prompt_id, pair)
        return row, review.Progress(int(done), int(total))

    def agreement(self, labels_job: str) -> review.Agreement:
        """How a label job's human verdicts agree with its AI labels (`review.agreement`'s
        numbers, asked of the store's tables)."""
        with self.connect() as con:
            return agreement_of(con, labels_job)
