"""Store queries for label jobs: the feedback model's soft labels."""

from __future__ import annotations

from cai_engine.store.core import StoreCore
from cai_engine.store.records import records


class LabelQueries(StoreCore):
    def labels(self, job_id: str) -> list[dict]:
        """A label job's labels, each with its pair's responses and its prompt's messages."""
        with self.connect() as con:
            frame = con.frame(
                """
                SELECT l.*, x.response_a, x.response_b, x.a_ref, x.b_ref,
                       x.source, x.model AS pair_model, x.flags AS pair_flags,
                       p.messages AS prompt_messages, p.category
                FROM labels l
                LEFT JOIN pairs x
                       ON x.job_id = l.pairs_job AND x.prompt_id = l.prompt_id AND x.pair = l.pair
                LEFT JOIN prompts p ON p.set_name = l.prompt_set AND p.prompt_id = l.prompt_id
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
