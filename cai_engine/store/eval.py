"""Store queries for evaluation jobs: answers (and their reuse), judgements and results."""

from __future__ import annotations

import json

from cai_engine.store.core import StoreCore
from cai_engine.store.records import records


class EvalQueries(StoreCore):
    def eval_answers(self, job_id: str) -> list[dict]:
        """An eval job's answers, each with its prompt's text and messages."""
        with self.connect() as con:
            frame = con.frame(
                """
                SELECT a.*, p.text AS prompt_text, p.messages AS prompt_messages, p.category
                FROM eval_answers a
                LEFT JOIN prompts p ON p.set_name = a.prompt_set AND p.prompt_id = a.prompt_id
                WHERE a.job_id = ?
                ORDER BY a.prompt_set, a.prompt_id, a.model
                """,
                [job_id],
            )
        return records(frame)

    def reusable_answers(
        self, model: str, fingerprint: str, sampling: str, prompt_set: str, job_id: str
    ) -> list[dict]:
        """Answers other eval jobs already have for this model (the same weights), prompt set
        and sampling (with its seed): the earliest answer per prompt."""
        with self.connect() as con:
            frame = con.frame(
                """
                SELECT * FROM eval_answers
                WHERE model = ? AND fingerprint = ? AND sampling = ? AND prompt_set = ?
                  AND job_id <> ?
                QUALIFY row_number() OVER (PARTITION BY prompt_id ORDER BY job_id) = 1
                """,
                [model, fingerprint, sampling, prompt_set, job_id],
            )
        return records(frame)

    def eval_judgements(self, job_id: str) -> list[dict]:
        with self.connect() as con:
            frame = con.frame(
                "SELECT * FROM eval_judgements WHERE job_id = ?"
                " ORDER BY metric, model, prompt_set, prompt_id, item",
                [job_id],
            )
        rows = records(frame)
        for r in rows:
            r["item"] = int(r["item"])
        return rows

    def eval_results(self, job_id: str | None = None) -> list[dict]:
        """Summary metrics of one eval job, or of all of them (newest job first)."""
        with self.connect() as con:
            frame = con.frame(
                "SELECT r.* FROM eval_results r JOIN jobs j ON j.id = r.job_id"
                " WHERE (? IS NULL OR r.job_id = ?)"
                " ORDER BY j.created_at DESC, r.job_id, r.model, r.metric",
                [job_id, job_id],
            )
        rows = records(frame)
        for r in rows:
            r["n"] = int(r["n"])
            r["detail"] = json.loads(r["detail"])
        return rows
