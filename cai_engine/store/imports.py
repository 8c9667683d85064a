"""Store queries for imported preference data (`cai import`): where each imported pairs job
came from, who gave each imported label job's labels, and what an annotated-pairs export
reads (a label job's pairs and its people's latest verdicts)."""

from __future__ import annotations

import json

from cai_engine.store.core import StoreCore

_IMPORT_COLUMNS = (
    "pairs_job",
    "file",
    "format",
    "sha256",
    "rows",
    "pairs",
    "skipped",
    "prompt_set",
    "metadata",
    "created_at",
)
_ANNOTATOR_COLUMNS = ("labels_job", "pairs_job", "annotator_id", "name", "description", "type")


class ImportQueries(StoreCore):
    def record_import(self, record: dict, annotators: list[dict]) -> None:
        """Record an imported file (its pairs job, source, counts) and the annotator behind
        each of its label jobs, in one unit of work."""
        with self.transaction() as con:
            con.rows(
                "INSERT INTO imports (pairs_job, file, format, sha256, rows, pairs, skipped,"
                " prompt_set, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    record["pairs_job"],
                    record["file"],
                    record["format"],
                    record["sha256"],
                    int(record["rows"]),
                    int(record["pairs"]),
                    int(record["skipped"]),
                    record["prompt_set"],
                    json.dumps(record.get("metadata"), ensure_ascii=False)
                    if record.get("metadata") is not None
                    else None,
                ],
            )
            for a in annotators:
                con.rows(
                    "INSERT INTO import_annotators (labels_job, pairs_job, annotator_id, name,"
                    " description, type) VALUES (?, ?, ?, ?, ?, ?)",
                    [a[c] for c in _ANNOTATOR_COLUMNS],
                )

    def import_record(self, pairs_job: str) -> dict | None:
        """Where an imported pairs job came from (None for pairs made here)."""
        with self.connect() as con:
            row = con.rows(
                f"SELECT {', '.join(_IMPORT_COLUMNS)} FROM imports WHERE pairs_job = ?",
                [pairs_job],
            )
        if not row:
            return None
        out = dict(zip(_IMPORT_COLUMNS, row[0], strict=True))
        out["metadata"] = json.loads(out["metadata"]) if out["metadata"] else None
        return out

    def import_annotator(self, labels_job: str) -> dict | None:
        """Who gave an imported label job's labels (None for labels made here)."""
        with self.connect() as con:
            row = con.rows(
                f"SELECT {', '.join(_ANNOTATOR_COLUMNS)} FROM import_annotators"
                " WHERE labels_job = ?",
                [labels_job],
            )
        return dict(zip(_ANNOTATOR_COLUMNS, row[0], strict=True)) if row else None

    def import_annotators(self, pairs_job: str) -> list[dict]:
        """The annotators (label jobs) an imported pairs job came with, in import order."""
        with self.connect() as con:
            rows = con.rows(
                f"SELECT {', '.join(_ANNOTATOR_COLUMNS)} FROM import_annotators"
                " WHERE pairs_job = ? ORDER BY labels_job",
                [pairs_job],
            )
        return [dict(zip(_ANNOTATOR_COLUMNS, r, strict=True)) for r in rows]

    def latest_verdicts(self, labels_job: str) -> list[dict]:
        """Each (pair, reviewer)'s latest verdict other than skip on label job `labels_job`
        (verdicts are appended; `created_at, id` is the order they were given in)."""
        with self.connect() as con:
            rows = con.rows(
                """
                SELECT prompt_id, pair, reviewer, arg_max(verdict, (created_at, id))
                FROM reviews
                WHERE labels_job = ? AND verdict <> 'skip'
                GROUP BY prompt_id, pair, reviewer
                ORDER BY reviewer, prompt_id, pair
                """,
                [labels_job],
            )
        names = ("prompt_id", "pair", "reviewer", "verdict")
        return [dict(zip(names, r, strict=True)) for r in rows]
