"""Store queries for pairs jobs: two answers to one prompt."""

from __future__ import annotations

from cai_engine.store.core import StoreCore
from cai_engine.store.records import records


class PairQueries(StoreCore):
    def pairs(self, job_id: str) -> list[dict]:
        """A pairs job's pairs in order, with each prompt's messages and category."""
        with self.connect() as con:
            frame = con.frame(
                """
                SELECT x.*, p.messages AS prompt_messages, p.category
                FROM pairs x
                LEFT JOIN prompts p ON p.set_name = x.prompt_set AND p.prompt_id = x.prompt_id
                WHERE x.job_id = ?
                ORDER BY x.prompt_id, x.pair
                """,
                [job_id],
            )
        return records(frame)
