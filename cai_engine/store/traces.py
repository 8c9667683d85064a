"""Store queries for critique jobs' traces (initial answer, then critique and revision per round).

Pages never load a job: `trace_summaries` holds one row per trace (its prompt, rounds,
principles, final answer, flags), refreshed for the traces a batch of shards touches as it is
ingested, so a page of traces, its count and the filter choices are small queries, and a
trace's steps are read only when it is opened.
"""

from __future__ import annotations

import json

from cai_engine.models.base import CUT_OFF
from cai_engine.store.core import Conn, StoreCore
from cai_engine.store.records import none_for_nan
from cai_engine.traces import TraceFilter, edit_size

SUMMARY_DDL = """
CREATE TABLE trace_summaries (        -- one row per trace of a critique job, from its steps
    job_id        VARCHAR NOT NULL,
    prompt_id     VARCHAR NOT NULL,
    sample        INTEGER NOT NULL,
    prompt_set    VARCHAR NOT NULL,
    category      VARCHAR,
    prompt_text   VARCHAR NOT NULL,   -- the last user turn
    steps         INTEGER NOT NULL,   -- step rows so far
    max_round     INTEGER NOT NULL,   -- the last round the trace has a step of
    rounds_done   INTEGER NOT NULL,   -- revisions written
    principles    VARCHAR[] NOT NULL, -- the principle of each round critiqued, in order
    changed       BOOLEAN NOT NULL,   -- the latest answer differs from the initial one
    final_text    VARCHAR,            -- the latest answer (initial or revision)
    cut_off       BOOLEAN NOT NULL,   -- some step stopped at the token limit
    flags         VARCHAR[] NOT NULL, -- the steps' flags (empty, skipped), sorted
    PRIMARY KEY (job_id, prompt_id, sample)
)
"""

_ANSWER = "t.step <> 'critique'"
# One row per trace, aggregated from its steps, then joined to its prompt (a join after the
# aggregate probes once per trace, not once per step). {touched} is where
# `refresh_trace_summaries` narrows `t` to the traces a batch touched. The principles are the
# critiques' (round, principle) pairs sorted, which costs less than an ordered aggregate, and
# only steps with flags are split into them (most have none).
_SUMMARY_SELECT = f"""
SELECT s.job_id, s.prompt_id, s.sample, s.prompt_set, p.category, coalesce(p.text, ''),
       s.steps, s.max_round, s.rounds_done, s.principles, s.changed, s.final_text, s.cut_off,
       s.flags
FROM (
    SELECT any_value(t.job_id) AS job_id, t.prompt_id, t.sample,
           any_value(t.prompt_set) AS prompt_set,
           count(*) AS steps,
           max(t.round) AS max_round,
           count(*) FILTER (WHERE t.step = 'revision') AS rounds_done,
           coalesce(list_transform(
               list_sort(list({{'r': t.round, 'p': t.principle_id}})
                         FILTER (WHERE t.step = 'critique')),
               lambda x: x.p), []) AS principles,
           coalesce(count(*) FILTER (WHERE {_ANSWER}) > 1
                    AND arg_max(t.text, t.round) FILTER (WHERE {_ANSWER})
                        <> arg_min(t.text, t.round) FILTER (WHERE {_ANSWER}), false) AS changed,
           arg_max(t.text, t.round) FILTER (WHERE {_ANSWER}) AS final_text,
           bool_or(t.finish_reason = ?) AS cut_off,
           coalesce(list_sort(list_filter(
               list_distinct(flatten(list(string_split(t.flags, ','))
                                     FILTER (WHERE t.flags <> ''))),
               lambda f: f <> '')), []) AS flags
    FROM traces t {{touched}}
    WHERE t.job_id = ?
    GROUP BY t.prompt_id, t.sample
) s
LEFT JOIN prompts p ON p.set_name = s.prompt_set AND p.prompt_id = s.prompt_id
"""


def refresh_trace_summaries(con: Conn, job_id: str, shards: list[str] | None = None) -> None:
    """Rebuild the summaries of job `job_id`'s traces: all of them, or (given `shards`, the
    Parquet files just ingested) only the traces those shards added steps to.

    A job with no summaries yet (its first ingest: every trace it has came in this batch)
    gets all of them by a plain INSERT, without reading the shards' keys back or merging
    into rows that cannot be there."""
    first = not con.scalar(
        "SELECT EXISTS (SELECT 1 FROM trace_summaries WHERE job_id = ?)", [job_id]
    )
    touched = ""
    params: list = [CUT_OFF]
    if shards is not None and not first:
        touched = (
            "SEMI JOIN (SELECT DISTINCT prompt_id, sample FROM read_parquet(?)) k"
            " ON k.prompt_id = t.prompt_id AND k.sample = t.sample"
        )
        params.append(shards)
    select = _SUMMARY_SELECT.replace("{touched}", touched)
    verb = "INSERT" if first else "INSERT OR REPLACE"
    con.rows(f"{verb} INTO trace_summaries {select}", [*params, job_id])


def revision_changes(steps: list[dict]) -> list[tuple[float, bool]]:
    """For one trace's steps in order: each revision's (edit size, changed) against the answer
    before it, as the critique stage records them."""
    out, previous = [], None
    for s in steps:
        if s["step"] == "revision" and previous is not None:
            out.append((edit_size(previous, s["text"]), s["text"] != previous))
        if s["step"] in ("initial", "revision"):
            previous = s["text"]
    return out


def backfill_edit_sizes(con: Conn) -> None:
    """Give revisions written before edit sizes were stored theirs (a one-off migration)."""
    import pandas as pd

    rows = con.rows(
        "SELECT job_id, prompt_id, sample, round, step, text FROM traces"
        " WHERE step <> 'critique' ORDER BY job_id, prompt_id, sample, round, step = 'revision'"
    )
    updates, trace, key = [], [], None
    for job_id, prompt_id, sample, round_, step, text in [*rows, (None,) * 6]:
        if (job_id, prompt_id, sample) != key and trace:
            revisions = [s for s in trace if s["step"] == "revision"]
            for s, (size, changed) in zip(revisions, revision_changes(trace), strict=False):
                updates.append((*key, s["round"], size, changed))
            trace = []
        key = (job_id, prompt_id, sample)
        trace.append({"step": step, "round": round_, "text": text})
    if not updates:
        return
    frame = pd.DataFrame(
        updates, columns=["job_id", "prompt_id", "sample", "round", "edit_size", "changed"]
    )
    con.register("edit_sizes", frame)
    try:
        con.rows(
            "UPDATE traces SET edit_size = e.edit_size, changed = e.changed FROM edit_sizes e"
            " WHERE traces.job_id = e.job_id AND traces.prompt_id = e.prompt_id"
            " AND traces.sample = e.sample AND traces.round = e.round"
            " AND traces.step = 'revision'"
        )
    finally:
        con.unregister("edit_sizes")


def _where(job_id: str, f: TraceFilter) -> tuple[str, list]:
    """The WHERE clause over `trace_summaries s` that `f` asks for, and its parameters."""
    sql, params = ["s.job_id = ?"], [job_id]
    if f.round is not None:
        sql.append("s.max_round >= ?")
        params.append(f.round)
    if f.principle and f.round is not None:
        sql.append("s.principles[?] = ?")  # the principle drawn in that round
        params += [f.round, f.principle]
    elif f.principle:
        sql.append("list_contains(s.principles, ?)")
        params.append(f.principle)
    if f.category:
        sql.append("s.category = ?")
        params.append(f.category)
    if f.cut_off is not None:
        sql.append("s.cut_off = ?")
        params.append(f.cut_off)
    needle = f.needle
    if needle:  # contains(), not LIKE: no character in the needle is a pattern
        sql.append(
            "(contains(lower(s.prompt_text), ?) OR (s.prompt_id, s.sample) IN ("
            " SELECT prompt_id, sample FROM traces WHERE job_id = ? AND contains(lower(text), ?)))"
        )
        params += [needle, job_id, needle]
    return " AND ".join(sql), params


_PAGE_COLUMNS = (
    "prompt_id, sample, category, prompt_text, steps, rounds_done, principles, changed,"
    " final_text, cut_off, flags"
)


class TraceQueries(StoreCore):
    def traces(self, job_id: str) -> list[dict]:
        """A critique job's trace rows in order, with each prompt's messages and category
        (a whole job: for exports and stages, never for a page)."""
        return self._trace_rows("t.job_id = ?", [job_id])

    def trace_steps(self, job_id: str, prompt_id: str, sample: int) -> list[dict]:
        """One trace's step rows in order, with its prompt's messages and category."""
        return self._trace_rows(
            "t.job_id = ? AND t.prompt_id = ? AND t.sample = ?", [job_id, prompt_id, sample]
        )

    def _trace_rows(self, where: str, params: list) -> list[dict]:
        with self.connect() as con:
            frame = con.frame(
                f"""
                SELECT t.*, p.messages AS prompt_messages, p.category
                FROM traces t
                LEFT JOIN prompts p ON p.set_name = t.prompt_set AND p.prompt_id = t.prompt_id
                WHERE {where}
                ORDER BY t.prompt_id, t.sample, t.round,
                         CASE t.step WHEN 'initial' THEN 0 WHEN 'critique' THEN 1 ELSE 2 END
                """,
                params,
            )
        rows = [{k: none_for_nan(v) for k, v in r.items()} for r in frame.to_dict("records")]
        for r in rows:
            r["prompt_messages"] = json.loads(r["prompt_messages"]) if r["prompt_messages"] else []
        return rows

    def trace_page(
        self,
        job_id: str,
        where: TraceFilter | None = None,
        *,
        after: tuple[str, int] | None = None,
        limit: int = 50,
    ) -> tuple[list[dict], int]:
        """One page of a job's traces that match `where`, in (prompt id, sample) order, and how
        many match in all. Keyset pages: the next page starts `after` the last (prompt id,
        sample) of the page shown, so a page deep in the job costs what the first one does."""
        sql, params = _where(job_id, where or TraceFilter())
        keyset, keys = (
            ("", []) if after is None else (" AND (s.prompt_id, s.sample) > (?, ?)", after)
        )
        with self.connect() as con:
            rows = con.rows(
                f"SELECT {_PAGE_COLUMNS} FROM trace_summaries s WHERE {sql}{keyset}"
                " ORDER BY s.prompt_id, s.sample LIMIT ?",
                [*params, *keys, limit],
            )
            total = con.scalar(f"SELECT count(*) FROM trace_summaries s WHERE {sql}", params)
        names = [c.strip() for c in _PAGE_COLUMNS.split(",")]
        return [dict(zip(names, r, strict=True)) for r in rows], int(total)

    def trace_facets(self, job_id: str) -> dict:
        """What a job's trace filters can offer: its trace count, categories and last round."""
        with self.connect() as con:
            total, max_round, categories = con.one(
                "SELECT count(*), coalesce(max(max_round), 0),"
                " list_sort(list_distinct(list(category)))"
                " FROM trace_summaries WHERE job_id = ?",
                [job_id],
            )
        return {"traces": int(total), "max_round": int(max_round), "categories": categories or []}

    def trace_export_counts(self, job_id: str) -> dict[str, int]:
        """How many of a job's traces exist, have a revision, and changed their answer."""
        with self.connect() as con:
            traces, revised, changed = con.one(
                "SELECT count(*), count(*) FILTER (WHERE rounds_done > 0),"
                " count(*) FILTER (WHERE changed) FROM trace_summaries WHERE job_id = ?",
                [job_id],
            )
        return {"traces": int(traces), "revised": int(revised), "changed": int(changed)}

    def trace_principle_stats(self, job_id: str) -> list[dict]:
        """Per principle of a job: how often it was drawn, its revisions, how many changed the
        answer, and their mean edit size (the share of words changed)."""
        with self.connect() as con:
            rows = con.rows(
                """
                SELECT principle_id,
                       count(*) FILTER (WHERE step = 'critique'),
                       count(edit_size) FILTER (WHERE step = 'revision'),
                       count(*) FILTER (WHERE step = 'revision' AND changed),
                       avg(edit_size) FILTER (WHERE step = 'revision')
                FROM traces
                WHERE job_id = ? AND principle_id IS NOT NULL
                GROUP BY principle_id
                """,
                [job_id],
            )
        out = [
            {
                "principle": p,
                "drawn": int(drawn),
                "revisions": int(revisions),
                "changed": int(changed),
                "changed_rate": changed / revisions if revisions else 0.0,
                "mean_edit_size": float(mean) if revisions else 0.0,
            }
            for p, drawn, revisions, changed, mean in rows
            if drawn
        ]
        return sorted(out, key=lambda r: (-r["drawn"], r["principle"]))

    # -- streaming a whole job to a stage, a page of traces at a time -----------------------

    def trace_rows_page(
        self,
        job_id: str,
        *,
        after: tuple[str, int] | None = None,
        limit: int = 256,
        answers_only: bool = False,
    ) -> list[dict]:
        """The step rows (as `traces` returns them) of the next `limit` traces of a job after
        the trace `after` (prompt id, sample), in (prompt id, sample) order: a stage reads a
        job of any size a page of whole traces at a time. `answers_only` leaves out critiques
        (a stage that compares answers does not read them)."""
        keyset, keys = (
            ("", []) if after is None else (" AND (s.prompt_id, s.sample) > (?, ?)", after)
        )
        return self._trace_rows(
            "t.job_id = ?"
            + (" AND t.step <> 'critique'" if answers_only else "")
            + " AND (t.prompt_id, t.sample) IN (SELECT s.prompt_id, s.sample"
            f" FROM trace_summaries s WHERE s.job_id = ?{keyset}"
            " ORDER BY s.prompt_id, s.sample LIMIT ?)",
            [job_id, job_id, *keys, limit],
        )

    def count_revised_traces(self, job_id: str, prompts: int | None = None) -> int:
        """How many traces of a job have an initial answer and a revision (what a pairs job
        pairs), among the traces of its first `prompts` prompt ids when given."""
        with self.connect() as con:
            return int(
                con.scalar(
                    """
                    WITH kept AS (
                        SELECT DISTINCT prompt_id FROM traces WHERE job_id = ?
                        ORDER BY prompt_id LIMIT ?
                    )
                    SELECT count(*) FROM (
                        SELECT prompt_id, sample FROM traces
                        WHERE job_id = ? AND prompt_id IN (SELECT prompt_id FROM kept)
                        GROUP BY prompt_id, sample
                        HAVING bool_or(step = 'initial') AND bool_or(step = 'revision')
                    )
                    """,
                    [job_id, prompts, job_id],
                )
            )
