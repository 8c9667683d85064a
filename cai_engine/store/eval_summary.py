"""The eval summary's inputs as SQL over an eval job's `eval_answers` and `eval_judgements`:
counts and sums per model, prompt set and metric, and the one column each bootstrap
resamples, never the rows themselves.

A job asks them of its own shards (`over_shards`: an in-memory DuckDB of the job's process
whose two views read the Parquet files where they lie, never the store's file); `eval.summarise`
asks them of the lists it is given (`scratch`). Both run the same SQL, so the numbers a test
works out by hand are the numbers a 100k-prompt job stores. `eval.metrics` turns them into
rates with intervals.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cai_engine.store.core import Conn

# What the summary reads of each table, and as what type (shards of one table may differ in
# a column's type where all of one's values were null). A NaN verdict counts as no verdict.
ANSWER_COLUMNS = {
    "model": "VARCHAR",
    "fingerprint": "VARCHAR",
    "prompt_set": "VARCHAR",
    "prompt_id": "VARCHAR",
    "text": "VARCHAR",
    "completion_tokens": "BIGINT",
    "latency_s": "DOUBLE",
    "finish_reason": "VARCHAR",
    "reused_from": "VARCHAR",
}
JUDGEMENT_COLUMNS = {
    "metric": "VARCHAR",
    "model": "VARCHAR",
    "prompt_set": "VARCHAR",
    "prompt_id": "VARCHAR",
    "item": "BIGINT",
    "value": "DOUBLE",
    "rule": "VARCHAR",
    "consistent": "BOOLEAN",
    "flags": "VARCHAR",
}
_CLEAN = {  # how a column is read: a NaN verdict is no verdict, missing flags are none
    "value": "CASE WHEN isnan(value::DOUBLE) THEN NULL ELSE value::DOUBLE END",
    "flags": "coalesce(flags::VARCHAR, '')",
}


def _select(columns: dict[str, str]) -> str:
    return ", ".join(f"{_CLEAN.get(c, f'{c}::{t}')} AS {c}" for c, t in columns.items())


def _empty(columns: dict[str, str]) -> str:
    return ", ".join(f"NULL::{t} AS {c}" for c, t in columns.items()) + " WHERE false"


@contextmanager
def over_shards(answers: Sequence[Path], judgements: Sequence[Path]) -> Iterator[Conn]:
    """An in-memory DuckDB whose views `eval_answers` and `eval_judgements` read these shard
    files (a job's own), streamed by each query: nothing is loaded."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET threads = 2")  # the summary runs after the models are closed
        for table, files, columns in (
            ("eval_answers", answers, ANSWER_COLUMNS),
            ("eval_judgements", judgements, JUDGEMENT_COLUMNS),
        ):
            if files:  # the files are relations, not SQL text: paths are never interpolated
                con.read_parquet([str(f) for f in files], union_by_name=True).create_view(
                    f"{table}_files"
                )
                con.execute(f"CREATE VIEW {table} AS SELECT {_select(columns)} FROM {table}_files")
            else:
                con.execute(f"CREATE VIEW {table} AS SELECT {_empty(columns)}")
        yield Conn(con)
    finally:
        con.close()


@contextmanager
def scratch(answers: list[dict], judgements: list[dict]) -> Iterator[Conn]:
    """An in-memory DuckDB whose tables `eval_answers` and `eval_judgements` hold these lists
    (rows as a job writes them; columns the summary does not read may be left out)."""
    import duckdb
    import pyarrow as pa

    arrow = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(),
             "BOOLEAN": pa.bool_()}  # fmt: skip
    con = duckdb.connect()
    try:
        for table, rows, columns in (
            ("eval_answers", answers, ANSWER_COLUMNS),
            ("eval_judgements", judgements, JUDGEMENT_COLUMNS),
        ):
            given = pa.table(
                {c: pa.array([r.get(c) for r in rows], type=arrow[t]) for c, t in columns.items()}
            )
            con.register(f"{table}_rows", given)
            con.execute(f"CREATE TABLE {table} AS SELECT {_select(columns)} FROM {table}_rows")
            con.unregister(f"{table}_rows")
        yield Conn(con)
    finally:
        con.close()


# -- the aggregates -------------------------------------------------------------------------

_ANSWER_STATS = """
SELECT model, prompt_set,
       count(*) AS answers,
       coalesce(sum(completion_tokens), 0) AS tokens,
       coalesce(sum(latency_s), 0.0) AS seconds,
       count(*) FILTER (WHERE finish_reason = 'length') AS truncated,
       count(reused_from) AS reused,
       min(fingerprint) AS fingerprint
FROM eval_answers
GROUP BY model, prompt_set
"""

# Per verdict metric, model and prompt set. A comparison's value is the soft preference for
# the model (hard win above 0.5, tie at 0.5); a refusal verdict's is the judge's P(refusal).
# Order consistency leaves out identical pairs (both orders are 0.5 by construction).
_VERDICT_STATS = """
SELECT metric, model, prompt_set,
       count(*) AS verdicts,
       count(value) AS judged,
       coalesce(sum(value), 0.0) AS value_sum,
       count(*) FILTER (WHERE value > 0.5) AS above,
       count(*) FILTER (WHERE value = 0.5) AS ties,
       count(*) FILTER (WHERE value < 0.5) AS below,
       count(*) FILTER (WHERE value IS NOT NULL AND consistent IS NOT NULL
                        AND NOT contains(flags, 'identical')) AS both_orders,
       count(*) FILTER (WHERE value IS NOT NULL AND consistent
                        AND NOT contains(flags, 'identical')) AS consistent,
       count(rule) AS rule_hits,
       count(*) FILTER (WHERE value IS NOT NULL
                        AND (value > 0.5) = (rule IS NOT NULL)) AS agree_with_rules
FROM eval_judgements
WHERE metric <> 'revision'
GROUP BY metric, model, prompt_set
"""

_RULE_HITS = """
SELECT model, prompt_set, rule, count(*)
FROM eval_judgements
WHERE metric = 'refusal' AND rule IS NOT NULL
GROUP BY model, prompt_set, rule
"""

# Revision verdicts: `model` is the critique job, `item` = sample * 1000 + round.
_ROUNDS = """
SELECT item % 1000 AS round,
       count(value) AS judged,
       coalesce(sum(value), 0.0) AS value_sum,
       count(*) FILTER (WHERE value > 0.5) AS above
FROM eval_judgements
WHERE metric = 'revision' AND model = ?
GROUP BY round
ORDER BY round
"""

# The values a bootstrap resamples, in a fixed order (the prompts' order, as a job judges them)
_VERDICT_VALUES = """
SELECT value FROM eval_judgements
WHERE metric = ? AND model = ? AND prompt_set = ? AND value IS NOT NULL
ORDER BY prompt_id, item
"""
_ANSWER_CHARS = """
SELECT length(text) FROM eval_answers
WHERE model = ? AND prompt_set = ?
ORDER BY prompt_id
"""
_ANSWER_COSTS = """
SELECT completion_tokens, latency_s FROM eval_answers
WHERE model = ?
ORDER BY list_position(?, prompt_set), prompt_id
"""


def _named(con: Conn, sql: str, params: list | None = None) -> list[dict]:
    cur = con.raw.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def answer_stats(con: Conn) -> dict[tuple[str, str], dict]:
    """(model, prompt set) -> answers, tokens, seconds, truncated, reused, fingerprint."""
    return {(r.pop("model"), r.pop("prompt_set")): r for r in _named(con, _ANSWER_STATS)}


def verdict_stats(con: Conn) -> dict[tuple[str, str, str], dict]:
    """(metric, model, prompt set) -> verdicts, judged (with a value), value_sum, above /
    ties / below 0.5, both_orders, consistent, rule_hits, agree_with_rules; and under
    "rules" of each refusal entry, rule name -> how many verdicts matched it."""
    stats = {
        (r.pop("metric"), r.pop("model"), r.pop("prompt_set")): r
        for r in _named(con, _VERDICT_STATS)
    }
    for model, prompt_set, rule, n in con.rows(_RULE_HITS):
        stats[("refusal", model, prompt_set)].setdefault("rules", {})[rule] = int(n)
    return stats


def round_stats(con: Conn, critique_job: str) -> list[dict]:
    """Per round k of a critique job's revision verdicts: judged, value_sum, above (0.5)."""
    return _named(con, _ROUNDS, [critique_job])


def verdict_values(con: Conn, metric: str, model: str, prompt_set: str) -> list[float]:
    """The values of one metric's verdicts on a model's answers to a set, in prompt order."""
    return [r[0] for r in con.rows(_VERDICT_VALUES, [metric, model, prompt_set])]


def answer_chars(con: Conn, model: str, prompt_set: str) -> list[int]:
    """The length (characters) of each of a model's answers to a set, in prompt order."""
    return [r[0] for r in con.rows(_ANSWER_CHARS, [model, prompt_set])]


def answer_costs(con: Conn, model: str, sets: list[str]) -> tuple[list[int], list[float]]:
    """A model's tokens and seconds per answer, set by set in the order of `sets`."""
    rows = con.rows(_ANSWER_COSTS, [model, list(sets)])
    return [r[0] for r in rows], [r[1] for r in rows]
