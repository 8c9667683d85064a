"""Store queries for exports: which rows each export holds, chosen, filtered and counted in SQL.

An export is one query (`ExportQuery`) over the rows of a job. Its `candidates` give every
example it could hold, each with `skip`: NULL for a kept example, else why it was left out,
in the order the filters apply. From the same candidates come the examples (written by
`COPY ... TO` a JSONL or Parquet file, so no export passes through Python lists), the
manifest's counts (SQL aggregates) and, for training and for the engine's list functions
(`cai_engine.export.sft_examples` and friends), the rows themselves. So each export has one
definition, whether it reads a job in the store or rows handed over in a list.

The queries read their input from fixed CTE names: `steps` (a critique job's trace rows) or
`labelled` and `reviewed` (a label job's labels with their pairs, and its human verdicts in
the order they were given). The store fills them from its tables; `examples_from_rows` fills
them from Python rows in an in-memory database.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from cai_engine.models.base import CUT_OFF
from cai_engine.store.core import Conn, StoreCore

# What Python's `str.strip()` strips (every character whose `isspace()` is true), so that an
# "empty" text means in SQL exactly what it meant in Python. DuckDB's `trim` strips spaces only
# (and, given characters, took 20 times as long as this regular expression, which stops at the
# first character it finds that is not one of them).
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
NOT_SPACE = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE) + "]"  # RE2
# A prompt's messages, stored as JSON text, as TRL's conversational turns (a STRUCT list).
TURNS = json.dumps([{"role": "VARCHAR", "content": "VARCHAR"}])

CUT_OFF_SKIP = (
    "cut off at the token limit"  # the manifest's count of texts --drop-truncated left out
)

# -- the sources: a job in the store --------------------------------------------------------

# The joins that bring in what only the rows use: the prompt's messages, and a pair's answers.
# The counts leave them out (they were most of the counts' time, which the Labels page spends on
# every run), keeping the pairs only for the flags the cut-off filter reads.
_PROMPTS = "LEFT JOIN prompts p ON p.set_name = {a}.prompt_set AND p.prompt_id = {a}.prompt_id"
_PAIRS = (
    "LEFT JOIN pairs x ON x.job_id = l.pairs_job AND x.prompt_id = l.prompt_id AND x.pair = l.pair"
)
_STORE_STEPS = """
    SELECT t.prompt_id, t.sample, t.round, t.step, t.principle_id, t.text, t.finish_reason,
           {messages} AS prompt_messages
    FROM traces t
    {joins}
    WHERE t.job_id = $job
"""
_STORE_LABELLED = """
    SELECT l.prompt_id, l.pair, l.principle_id, l.soft_label, l.winner, l.confidence,
           l.consistent, l.label_source, {response_a} AS response_a, {response_b} AS response_b,
           {flags} AS pair_flags, {messages} AS prompt_messages
    FROM labels l
    {joins}
    WHERE l.job_id = $job
"""
_STORE_REVIEWED = """
    SELECT prompt_id, pair, verdict, row_number() OVER (ORDER BY created_at, id) AS seq
    FROM reviews
    WHERE labels_job = $job
"""

# -- the exports ------------------------------------------------------------------------------

# SFT: per trace, its final revision (or, `$all_rounds`, every round's), the prompt's turns then
# the revision as the assistant turn. A trace with no revision yet is one skipped candidate.
_SFT = """
units AS (
    SELECT prompt_id, sample, max(round) FILTER (WHERE step = 'revision') AS last_round
    FROM steps
    GROUP BY prompt_id, sample
),
candidates AS (
    SELECT u.prompt_id, u.sample, s.round, s.principle_id, s.text, s.prompt_messages,
           false AS human,
           s.round IS NULL OR s.round = u.last_round AS lead,
           CASE WHEN s.step IS NULL THEN 'incomplete traces'
                WHEN NOT regexp_matches(s.text, $not_space) THEN 'empty revisions'
                WHEN $drop_truncated AND s.finish_reason = $cut_off THEN $cut_off_skip
           END AS skip
    FROM units u
    LEFT JOIN steps s
           ON s.prompt_id = u.prompt_id AND s.sample = u.sample AND s.step = 'revision'
          AND ($all_rounds OR s.round = u.last_round)
)
"""
_SFT_ROWS = """
SELECT list_concat(coalesce(from_json(prompt_messages, $turns), []),
                   [{'role': 'assistant', 'content': text}]) AS messages,
       prompt_id,
       round::BIGINT AS round,
       principle_id
FROM candidates
WHERE skip IS NULL
ORDER BY prompt_id, sample, round
"""

# Preferences from revisions (the Hugging Face recipe): per trace, chosen = the final revision,
# rejected = the initial answer; `principles` lists each round's principle in round order.
_REVISIONS = """
units AS (
    SELECT prompt_id, sample,
           count(*) FILTER (WHERE step = 'initial') AS initials,
           count(*) FILTER (WHERE step = 'revision') AS revisions,
           arg_min(text, round) FILTER (WHERE step = 'initial') AS initial_text,
           arg_min(finish_reason, round) FILTER (WHERE step = 'initial') AS initial_finish,
           arg_min(prompt_messages, round) FILTER (WHERE step = 'initial') AS prompt_messages,
           arg_max(text, round) FILTER (WHERE step = 'revision') AS final_text,
           arg_max(finish_reason, round) FILTER (WHERE step = 'revision') AS final_finish,
           coalesce(string_agg(principle_id, ',' ORDER BY round)
                    FILTER (WHERE step = 'revision' AND principle_id <> ''), '') AS principles
    FROM steps
    GROUP BY prompt_id, sample
),
candidates AS (
    SELECT *, false AS human, true AS lead,
           CASE WHEN initials = 0 OR revisions = 0 THEN 'incomplete traces'
                WHEN NOT regexp_matches(final_text, $not_space)
                     OR NOT regexp_matches(initial_text, $not_space)
                     OR final_text = initial_text THEN 'unchanged or empty'
                WHEN $drop_truncated AND (final_finish = $cut_off OR initial_finish = $cut_off)
                     THEN $cut_off_skip
           END AS skip
    FROM units
)
"""
_REVISIONS_ROWS = """
SELECT coalesce(from_json(prompt_messages, $turns), []) AS prompt,
       [{'role': 'assistant', 'content': final_text}] AS chosen,
       [{'role': 'assistant', 'content': initial_text}] AS rejected,
       prompt_id,
       principles
FROM candidates
WHERE skip IS NULL
ORDER BY prompt_id, sample
"""

# Preferences from AI labels (RL-CAI), a human verdict overriding the AI: the most recent
# verdict on a pair by anyone, a skip being no verdict. A human A/B verdict scores 1.0, a
# human tie or "both bad" 0.5; an AI label scores max(p, 1 - p) of its soft label p. The
# confidence and consistency filters apply to AI labels only; the cut-off filter to every pair.
# An example's `label_source` is 'human' where a verdict overrides, else its label's own:
# 'ai' (a judge) or 'contrastive' (by construction).
_LABELS = """
verdicts AS (
    SELECT prompt_id, pair, arg_max(verdict, seq) AS verdict
    FROM reviewed
    WHERE verdict <> 'skip'
    GROUP BY prompt_id, pair
),
units AS (
    SELECT l.*, v.verdict IS NOT NULL AS human, true AS lead,
           CASE WHEN v.verdict IS NULL THEN l.winner
                WHEN v.verdict IN ('A', 'B') THEN v.verdict
                ELSE 'tie'
           END AS win
    FROM labelled l
    LEFT JOIN verdicts v ON v.prompt_id = l.prompt_id AND v.pair = l.pair
),
candidates AS (
    SELECT *,
           CASE WHEN $drop_truncated AND list_has_any(string_split(coalesce(pair_flags, ''), ','),
                                                      ['a_cut_off', 'b_cut_off'])
                     THEN $cut_off_skip
                WHEN human THEN CASE WHEN $drop_ties AND win = 'tie' THEN 'ties' END
                WHEN soft_label IS NULL THEN 'unscored'
                WHEN $drop_inconsistent AND consistent = false THEN 'inconsistent'
                WHEN confidence < $min_confidence THEN 'below confidence'
                WHEN $drop_ties AND win = 'tie' THEN 'ties'
           END AS skip
    FROM units
)
"""
_LABEL_SOURCE = "CASE WHEN human THEN 'human' ELSE coalesce(label_source, 'ai') END"
_LABELS_ROWS = """
SELECT coalesce(from_json(prompt_messages, $turns), []) AS prompt,
       [{'role': 'assistant',
         'content': CASE WHEN win = 'B' THEN response_b ELSE response_a END}] AS chosen,
       [{'role': 'assistant',
         'content': CASE WHEN win = 'B' THEN response_a ELSE response_b END}] AS rejected,
       CASE WHEN NOT human THEN greatest(soft_label, 1.0::DOUBLE - soft_label)
            WHEN win = 'tie' THEN 0.5::DOUBLE
            ELSE 1.0::DOUBLE
       END AS score,
       {_LABEL_SOURCE} AS label_source,
       principle_id,
       consistent,
       prompt_id,
       pair::BIGINT AS pair
FROM candidates
WHERE skip IS NULL
ORDER BY prompt_id, pair
""".replace("{_LABEL_SOURCE}", _LABEL_SOURCE)


@dataclass(frozen=True)
class ExportQuery:
    """One export: its candidates (after its sources), its rows, and its filters' values."""

    kind: str  # "sft", "revisions" or "labels"
    candidates: str  # CTEs ending in `candidates`: one row per candidate, with `skip`, `human`
    # (from a human verdict) and `lead` (true for one candidate of each unit, to count units)
    rows: str  # SELECT of the examples from `candidates`, in export order
    skips: tuple[str, ...]  # why candidates are left out, in the manifest's order
    params: dict = field(default_factory=dict)
    # SQL over `candidates` naming where a kept example's label came from (counted by it)
    label_source: str = "NULL::VARCHAR"

    @property
    def source(self) -> str:
        return "labels" if self.kind == "labels" else "traces"


def _common(drop_truncated: bool) -> dict:
    return {
        "not_space": NOT_SPACE,
        "turns": TURNS,
        "cut_off": CUT_OFF,
        "cut_off_skip": CUT_OFF_SKIP,
        "drop_truncated": bool(drop_truncated),
    }


def sft_query(all_rounds: bool = False, drop_truncated: bool = False) -> ExportQuery:
    skips = ("incomplete traces", "empty revisions") + ((CUT_OFF_SKIP,) if drop_truncated else ())
    params = _common(drop_truncated) | {"all_rounds": bool(all_rounds)}
    return ExportQuery("sft", _SFT, _SFT_ROWS, skips, params)


def revisions_query(drop_truncated: bool = False) -> ExportQuery:
    skips = ("incomplete traces", "unchanged or empty") + (
        (CUT_OFF_SKIP,) if drop_truncated else ()
    )
    return ExportQuery("revisions", _REVISIONS, _REVISIONS_ROWS, skips, _common(drop_truncated))


def labels_query(
    drop_ties: bool = False,
    drop_inconsistent: bool = False,
    min_confidence: float = 0.0,
    drop_truncated: bool = False,
) -> ExportQuery:
    skips = ("unscored", "ties", "inconsistent", "below confidence") + (
        (CUT_OFF_SKIP,) if drop_truncated else ()
    )
    params = _common(drop_truncated) | {
        "drop_ties": bool(drop_ties),
        "drop_inconsistent": bool(drop_inconsistent),
        "min_confidence": float(min_confidence),
    }
    return ExportQuery("labels", _LABELS, _LABELS_ROWS, skips, params, _LABEL_SOURCE)


_NAMED = re.compile(r"\$([a-z_]+)")


def _statement(query: ExportQuery, sources: str, tail: str, extra: dict) -> tuple[str, dict]:
    """The full statement and the named parameters it uses (DuckDB refuses unused ones)."""
    sql = f"WITH {sources},\n{query.candidates}\n{tail}"
    given = query.params | extra
    return sql, {name: given[name] for name in dict.fromkeys(_NAMED.findall(sql))}


def _store_sources(query: ExportQuery, rows: bool = True) -> str:
    """The CTEs that read the job from the store: for its rows, or (`rows=False`) its counts."""
    null = "NULL::VARCHAR"
    messages = "p.messages" if rows else null
    if query.source == "traces":
        joins = _PROMPTS.format(a="t") if rows else ""
        table = _STORE_STEPS.format(messages=messages, joins=joins)
        # NOT MATERIALIZED: `steps` is read twice, each time scanned with only the columns
        # it needs, rather than copied whole (texts and all) into a temporary
        return f"steps AS NOT MATERIALIZED ({table})"
    pairs = rows or query.params["drop_truncated"]
    joins = ([_PAIRS] if pairs else []) + ([_PROMPTS.format(a="l")] if rows else [])
    table = _STORE_LABELLED.format(
        response_a="x.response_a" if rows else null,
        response_b="x.response_b" if rows else null,
        flags="x.flags" if pairs else null,
        messages=messages,
        joins="\n    ".join(joins),
    )
    return f"labelled AS ({table}), reviewed AS ({_STORE_REVIEWED})"


_COUNTS = """
SELECT skip, {label_source}, count(*), count(*) FILTER (WHERE human),
       count(*) FILTER (WHERE lead)
FROM candidates
GROUP BY ALL
"""


def _counts_sql(query: ExportQuery) -> str:
    return _COUNTS.format(label_source=query.label_source)  # the query's own SQL, no values


def _counts(query: ExportQuery, rows: list[tuple]) -> dict:
    """{"units", "examples", "human", <each skip reason>} from `_COUNTS`'s rows, and for
    labels "by_source": the examples kept per label source (human, ai, contrastive)."""
    out = {"units": 0, "examples": 0, "human": 0} | dict.fromkeys(query.skips, 0)
    by_source: dict[str, int] = {}
    for skip, source, n, human, units in rows:
        out["units"] += int(units)
        if skip is None:
            out["examples"] += int(n)
            out["human"] += int(human)
            if source is not None:
                by_source[source] = by_source.get(source, 0) + int(n)
        else:
            out[skip] += int(n)
    if query.kind == "labels":
        out["by_source"] = dict(sorted(by_source.items()))
    return out


def _fetch_dicts(con: Conn, sql: str, params: dict) -> list[dict]:
    cursor = con.raw.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


COPY_FORMATS = {"jsonl": "json", "parquet": "parquet"}  # our format -> DuckDB's COPY format


class ExportQueries(StoreCore):
    def export_counts(self, query: ExportQuery, job_id: str) -> dict:
        """How many units (traces or labels) the job has, how many examples the export would
        hold (`human`: of them, from a human verdict; for labels, `by_source`: of them, per
        label source), and how many were left out, and why."""
        sources = _store_sources(query, rows=False)
        sql, params = _statement(query, sources, _counts_sql(query), {"job": job_id})
        with self.connect() as con:
            return _counts(query, con.rows(sql, params))

    def export_examples(self, query: ExportQuery, job_id: str) -> list[dict]:
        """The export's examples as dicts (for training, whose data fits in memory)."""
        sql, params = _statement(query, _store_sources(query), query.rows, {"job": job_id})
        with self.connect() as con:
            return _fetch_dicts(con, sql, params)

    def copy_export(self, query: ExportQuery, job_id: str, path: Path, fmt: str) -> int:
        """Write the export's examples to `path` with COPY (`fmt`: "jsonl", newline-delimited
        JSON, or "parquet"), streamed by DuckDB; returns the rows written."""
        copy = COPY_FORMATS[fmt]  # a fixed name, never the caller's text
        sql, params = _statement(query, _store_sources(query), query.rows, {"job": job_id})
        options = "FORMAT json, ARRAY false" if copy == "json" else "FORMAT parquet"
        with self.connect() as con:
            # COPY takes the statement's parameters and the file name as parameters too
            (written,) = con.one(f"COPY ({sql}) TO $path ({options})", params | {"path": str(path)})
        return int(written)

    def trace_lineage(self, job_id: str) -> dict | None:
        """Where a critique job's first trace row (in trace order) came from, for a manifest."""
        with self.connect() as con:
            row = con.one(
                """
                SELECT constitution, constitution_hash, model, prompt_set
                FROM traces
                WHERE job_id = ?
                ORDER BY prompt_id, sample, round,
                         CASE step WHEN 'initial' THEN 0 WHEN 'critique' THEN 1 ELSE 2 END
                LIMIT 1
                """,
                [job_id],
            )
        names = ("constitution", "constitution_hash", "model", "prompt_set")
        return dict(zip(names, row, strict=True)) if row else None

    def label_lineage(self, job_id: str) -> dict | None:
        """Where a label job's first label (in (prompt id, pair) order) came from."""
        with self.connect() as con:
            row = con.one(
                """
                SELECT l.pairs_job, l.constitution, l.constitution_hash, l.model,
                       x.model AS pair_model, l.mode, l.prompt_set
                FROM labels l
                LEFT JOIN pairs x
                       ON x.job_id = l.pairs_job AND x.prompt_id = l.prompt_id AND x.pair = l.pair
                WHERE l.job_id = ?
                ORDER BY l.prompt_id, l.pair
                LIMIT 1
                """,
                [job_id],
            )
        names = ("pairs_job", "constitution", "constitution_hash", "model", "pair_model")
        names += ("mode", "prompt_set")
        return dict(zip(names, row, strict=True)) if row else None


# -- the same queries over rows handed over in Python lists -----------------------------------


def _steps_table(rows: list[dict]):
    import pyarrow as pa

    return pa.table(
        {
            "prompt_id": pa.array([r["prompt_id"] for r in rows], pa.string()),
            "sample": pa.array([int(r["sample"]) for r in rows], pa.int64()),
            "round": pa.array([int(r["round"]) for r in rows], pa.int64()),
            "step": pa.array([r["step"] for r in rows], pa.string()),
            "principle_id": pa.array([r.get("principle_id") for r in rows], pa.string()),
            "text": pa.array([r["text"] for r in rows], pa.string()),
            "finish_reason": pa.array([r.get("finish_reason") for r in rows], pa.string()),
            "prompt_messages": pa.array(
                [json.dumps(r.get("prompt_messages") or [], ensure_ascii=False) for r in rows],
                pa.string(),
            ),
        }
    )


def _labels_table(rows: list[dict]):
    import pyarrow as pa

    def column(key, kind):
        return pa.array([r.get(key) for r in rows], kind)

    return pa.table(
        {
            "prompt_id": column("prompt_id", pa.string()),
            "pair": pa.array([int(r["pair"]) for r in rows], pa.int64()),
            "principle_id": column("principle_id", pa.string()),
            "soft_label": column("soft_label", pa.float64()),
            "winner": column("winner", pa.string()),
            "confidence": column("confidence", pa.float64()),
            "consistent": column("consistent", pa.bool_()),
            "label_source": column("label_source", pa.string()),
            "response_a": column("response_a", pa.string()),
            "response_b": column("response_b", pa.string()),
            "pair_flags": column("pair_flags", pa.string()),
            "prompt_messages": pa.array(
                [json.dumps(r.get("prompt_messages") or [], ensure_ascii=False) for r in rows],
                pa.string(),
            ),
        }
    )


def _reviews_table(rows: list[dict]):
    import pyarrow as pa

    return pa.table(
        {
            "prompt_id": pa.array([r["prompt_id"] for r in rows], pa.string()),
            "pair": pa.array([int(r["pair"]) for r in rows], pa.int64()),
            "verdict": pa.array([r["verdict"] for r in rows], pa.string()),
            "seq": pa.array(range(len(rows)), pa.int64()),  # the order given: oldest first
        }
    )


def examples_from_rows(
    query: ExportQuery,
    steps: list[dict] | None = None,
    labels: list[dict] | None = None,
    reviews: list[dict] | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """The export's examples and counts from rows in Python lists (as `Store.traces`, or
    `Store.labels` and `Store.reviews`, return them), by the same SQL, in a database in
    memory. `reviews` come oldest first: the last verdict on a pair counts."""
    import duckdb

    con = duckdb.connect()
    try:
        if query.source == "traces":
            con.register("steps_in", _steps_table(steps or []))
            sources = "steps AS (SELECT * FROM steps_in)"
        else:
            con.register("labelled_in", _labels_table(labels or []))
            con.register("reviewed_in", _reviews_table(reviews or []))
            sources = (
                "labelled AS (SELECT * FROM labelled_in), reviewed AS (SELECT * FROM reviewed_in)"
            )
        wrapped = Conn(con)
        sql, params = _statement(query, sources, query.rows, {})
        examples = _fetch_dicts(wrapped, sql, params)
        sql, params = _statement(query, sources, _counts_sql(query), {})
        counts = _counts(query, wrapped.rows(sql, params))
    finally:
        con.close()
    return examples, counts
