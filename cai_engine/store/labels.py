"""Store queries for label jobs: the feedback model's soft labels.

Pages never load a job: the "All labels" table reads one page of labels (`label_page`, keyset
pages in (prompt id, pair) order, filters in SQL), its filter choices and counts
(`label_facets`), and a label's responses and reasoning only when it is opened
(`label_detail`).
"""

from __future__ import annotations

import json

from cai_engine.review import LabelFilter
from cai_engine.store.core import Conn, StoreCore
from cai_engine.store.records import records

_JOINS = """
LEFT JOIN pairs x ON x.job_id = l.pairs_job AND x.prompt_id = l.prompt_id AND x.pair = l.pair
LEFT JOIN prompts p ON p.set_name = l.prompt_set AND p.prompt_id = l.prompt_id
"""

# A pair's answers cut off at the token limit, from its flags (a_cut_off, b_cut_off).
_CUT_SIDES = (
    "list_filter(['A', 'B'], lambda s: list_contains(string_split(coalesce(x.flags, ''), ','),"
    " lower(s) || '_cut_off'))"
)

_PAGE_COLUMNS = {  # name in the row: SQL over `l` (labels), `x` (pairs), `p` (prompts)
    "prompt_id": "l.prompt_id",
    "pair": "l.pair",
    "prompt_text": "coalesce(p.text, '')",
    "principle_id": "l.principle_id",
    "p_a_ab": "l.p_a_ab",
    "p_a_ba": "l.p_a_ba",
    "soft_label": "l.soft_label",
    "winner": "l.winner",
    "confidence": "l.confidence",
    "consistent": "l.consistent",
    "cut_off": _CUT_SIDES,
    "flags": "l.flags",
}


_PAGE_ROWS = f"""
SELECT {", ".join(f"{expr} AS {name}" for name, expr in _PAGE_COLUMNS.items())}
FROM (SELECT * FROM labels WHERE job_id = $job AND prompt_id IN (SELECT unnest($ids))) l
LEFT JOIN (SELECT job_id, prompt_id, pair, flags FROM pairs
           WHERE prompt_id IN (SELECT unnest($ids))) x
       ON x.job_id = l.pairs_job AND x.prompt_id = l.prompt_id AND x.pair = l.pair
LEFT JOIN (SELECT set_name, prompt_id, text FROM prompts
           WHERE prompt_id IN (SELECT unnest($ids))) p
       ON p.set_name = l.prompt_set AND p.prompt_id = l.prompt_id
WHERE (l.prompt_id, l.pair) IN (SELECT unnest($keys_prompt), unnest($keys_pair))
ORDER BY l.prompt_id, l.pair
"""


def _page_params(job_id: str, page: list[tuple]) -> dict:
    return {
        "job": job_id,
        "ids": sorted({prompt_id for prompt_id, _ in page}),
        "keys_prompt": [prompt_id for prompt_id, _ in page],
        "keys_pair": [int(pair) for _, pair in page],
    }


# The pairs of the label job's own pairs job: each filter on a pair reads those alone.
_JOB_PAIRS = (
    "SELECT job_id, prompt_id, pair FROM pairs"
    " WHERE job_id IN (SELECT DISTINCT pairs_job FROM labels WHERE job_id = ?)"
)


def _where(job_id: str, f: LabelFilter) -> tuple[str, list]:
    """The WHERE clause over `labels l` that `f` asks for, and its parameters."""
    sql, params = ["l.job_id = ?"], [job_id]
    if f.principle:
        sql.append("l.principle_id = ?")
        params.append(f.principle)
    if f.inconsistent:
        sql.append("l.consistent = false")
    if f.min_confidence is not None:
        sql.append("l.confidence >= ?")
        params.append(f.min_confidence)
    if f.max_confidence is not None:
        sql.append("l.confidence <= ?")
        params.append(f.max_confidence)
    if f.cut_off is not None:  # pair flags are a fixed set: identical, empty, a/b_cut_off
        sql.append(
            f"(l.pairs_job, l.prompt_id, l.pair) {'IN' if f.cut_off else 'NOT IN'} ({_JOB_PAIRS}"
            " AND (contains(flags, 'a_cut_off') OR contains(flags, 'b_cut_off')))"
        )
        params.append(job_id)
    if f.reviewed is not None:
        by = " AND reviewer = ?" if f.reviewer is not None else ""
        sql.append(
            f"(l.prompt_id, l.pair) {'IN' if f.reviewed else 'NOT IN'} ("
            f" SELECT prompt_id, pair FROM reviews"
            f" WHERE labels_job = ? AND verdict <> 'skip'{by})"
        )
        params += [job_id, *([f.reviewer] if f.reviewer is not None else [])]
    needle = f.needle
    if needle:  # RE2 in literal mode ('l'), case-insensitive ('i'): no character is a pattern
        sql.append(
            "((l.prompt_set, l.prompt_id) IN (SELECT set_name, prompt_id FROM prompts"
            "  WHERE regexp_matches(content, ?, 'il'))"
            f" OR (l.pairs_job, l.prompt_id, l.pair) IN ({_JOB_PAIRS}"
            "  AND (regexp_matches(response_a, ?, 'il') OR regexp_matches(response_b, ?, 'il'))))"
        )
        params += [needle, job_id, needle, needle]
    return " AND ".join(sql), params


def label_detail(con: Conn, job_id: str, prompt_id: str, pair: int) -> dict | None:
    """One label with its pair's responses and refs and its prompt's messages, on `con`."""
    cursor = con.raw.execute(  # a row, not a frame: pandas costs more than the query
        f"""
        SELECT l.*, x.response_a, x.response_b, x.a_ref, x.b_ref,
               x.source, x.model AS pair_model, x.flags AS pair_flags, x.external_id,
               p.messages AS prompt_messages, p.category
        FROM labels l {_JOINS}
        WHERE l.job_id = ? AND l.prompt_id = ? AND l.pair = ?
        """,
        [job_id, prompt_id, int(pair)],
    )
    names = [d[0] for d in cursor.description]
    row = cursor.fetchone()
    cursor.fetchall()  # run to completion (see `Conn`)
    if row is None:
        return None
    out = dict(zip(names, row, strict=True))
    out["prompt_messages"] = json.loads(out["prompt_messages"]) if out["prompt_messages"] else []
    return out


class LabelQueries(StoreCore):
    def labels(self, job_id: str) -> list[dict]:
        """A label job's labels, each with its pair's responses and its prompt's messages
        (a whole job: for exports and training, never for a page)."""
        with self.connect() as con:
            frame = con.frame(
                f"""
                SELECT l.*, x.response_a, x.response_b, x.a_ref, x.b_ref,
                       x.source, x.model AS pair_model, x.flags AS pair_flags, x.external_id,
                       p.messages AS prompt_messages, p.category
                FROM labels l {_JOINS}
                WHERE l.job_id = ?
                ORDER BY l.prompt_id, l.pair
                """,
                [job_id],
            )
        return records(frame)

    def label_exists(self, labels_job: str, prompt_id: str, pair: int) -> bool:
        with self.connect() as con:
            return bool(
                con.scalar(
                    "SELECT count(*) FROM labels WHERE job_id = ? AND prompt_id = ? AND pair = ?",
                    [labels_job, prompt_id, pair],
                )
            )

    def label_page(
        self,
        job_id: str,
        where: LabelFilter | None = None,
        *,
        after: tuple[str, int] | None = None,
        limit: int = 50,
    ) -> tuple[list[dict], int]:
        """One page of a job's labels that match `where`, in (prompt id, pair) order, with the
        columns the "All labels" table shows, and how many match in all. Keyset pages: the
        next page starts `after` the last (prompt id, pair) of the page shown."""
        sql, params = _where(job_id, where or LabelFilter())
        keyset, keys = ("", []) if after is None else ("WHERE (prompt_id, pair) > (?, ?)", after)
        with self.connect() as con:
            # 1) how many match, and the page's keys: one pass over the filter, however costly
            total, page = con.one(
                f"""
                WITH hits AS MATERIALIZED (SELECT l.prompt_id, l.pair FROM labels l WHERE {sql})
                SELECT (SELECT count(*) FROM hits),
                       (SELECT list((prompt_id, pair) ORDER BY prompt_id, pair)
                        FROM (SELECT * FROM hits {keyset}
                              ORDER BY prompt_id, pair LIMIT ?))
                """,
                [*params, *keys, limit],
            )
            page = [tuple(k.values()) if isinstance(k, dict) else tuple(k) for k in page or []]
            # 2) their columns: each table's scan keeps only the page's prompts, so a page
            # reads a page's rows rather than joining whole tables
            rows = con.rows(_PAGE_ROWS, _page_params(job_id, page)) if page else []
        names = list(_PAGE_COLUMNS)
        out = [dict(zip(names, r, strict=True)) for r in rows]
        for r in out:
            r["pair"] = int(r["pair"])
        return out, int(total)

    def label_detail(self, job_id: str, prompt_id: str, pair: int) -> dict | None:
        """One label, as `labels` gives each: both responses, their refs, the reasoning
        texts, the prompt's messages, the pair's flags, the constitution and its hash."""
        with self.connect() as con:
            return label_detail(con, job_id, prompt_id, pair)

    def label_facets(self, job_id: str) -> dict:
        """What a job's label filters can offer and its counts: its principles, its labels,
        those scored (reviewable), and the pairs with a human verdict other than skip."""
        with self.connect() as con:
            total, scored = con.one(
                "SELECT count(*), count(soft_label) FROM labels WHERE job_id = ?", [job_id]
            )
            principles = con.rows(
                "SELECT DISTINCT principle_id FROM labels WHERE job_id = ? ORDER BY 1", [job_id]
            )
            reviewed = con.scalar(
                "SELECT count(*) FROM (SELECT DISTINCT prompt_id, pair FROM reviews"
                " WHERE labels_job = ? AND verdict <> 'skip')",
                [job_id],
            )
        return {
            "labels": int(total),
            "scored": int(scored),
            "reviewed": int(reviewed),
            "principles": [p for (p,) in principles],
        }

    def construction_agreement(self, job_id: str):
        """How often a judge's labels agree with the pairs' known better side: over the scored
        labels of label job `job_id` (by a judge) whose pairs have a preferred side (contrastive
        pairs: by construction; imported pairs: the dataset's label), those where the judge
        named a winner, and those where it was the preferred side. None when none of its pairs
        has one, or its labels are themselves by construction or from the dataset."""
        from cai_engine.contrastive import ConstructionAgreement

        with self.connect() as con:
            pairs, decisive, agree, source = con.one(
                """
                SELECT count(*),
                       count(*) FILTER (WHERE l.winner IN ('A', 'B')),
                       count(*) FILTER (WHERE l.winner = x.preferred),
                       any_value(x.source)
                FROM labels l
                JOIN pairs x
                  ON x.job_id = l.pairs_job AND x.prompt_id = l.prompt_id AND x.pair = l.pair
                WHERE l.job_id = ?
                  AND l.label_source = 'ai'
                  AND l.soft_label IS NOT NULL
                  AND x.preferred IS NOT NULL
                """,
                [job_id],
            )
        if not pairs:
            return None
        return ConstructionAgreement(int(pairs), int(decisive), int(agree), source)
