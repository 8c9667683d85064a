"""Store queries for critique jobs' traces (initial answer, then critique and revision per round)."""

from __future__ import annotations

import json

from cai_engine.store.core import StoreCore
from cai_engine.store.records import none_for_nan


class TraceQueries(StoreCore):
    def traces(self, job_id: str) -> list[dict]:
        """A critique job's trace rows in order, with each prompt's messages and category."""
        with self.connect() as con:
            frame = con.frame(
                """
                SELECT t.*, p.messages AS prompt_messages, p.category
                FROM traces t
                LEFT JOIN prompts p ON p.set_name = t.prompt_set AND p.prompt_id = t.prompt_id
                WHERE t.job_id = ?
                ORDER BY t.prompt_id, t.sample, t.round,
                         CASE t.step WHEN 'initial' THEN 0 WHEN 'critique' THEN 1 ELSE 2 END
                """,
                [job_id],
            )
        rows = [{k: none_for_nan(v) for k, v in r.items()} for r in frame.to_dict("records")]
        for r in rows:
            r["prompt_messages"] = json.loads(r["prompt_messages"]) if r["prompt_messages"] else []
        return rows
