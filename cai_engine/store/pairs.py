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

    def pair_page(
        self, job_id: str, *, after: tuple[str, int] | None = None, limit: int = 256
    ) -> list[dict]:
        """The next `limit` pairs of a pairs job after (prompt id, pair) `after`, as `pairs`
        returns them: keyset pages, so a label job reads a job of any size a page at a time."""
        keyset, keys = ("", []) if after is None else (" AND (x.prompt_id, x.pair) > (?, ?)", after)
        with self.connect() as con:
            frame = con.frame(
                f"""
                SELECT x.*, p.messages AS prompt_messages, p.category
                FROM pairs x
                LEFT JOIN prompts p ON p.set_name = x.prompt_set AND p.prompt_id = x.prompt_id
                WHERE x.job_id = ?{keyset}
                ORDER BY x.prompt_id, x.pair
                LIMIT ?
                """,
                [job_id, *keys, limit],
            )
        return records(frame)

    def count_pairs(self, job_id: str) -> int:
        with self.connect() as con:
            return int(con.scalar("SELECT count(*) FROM pairs WHERE job_id = ?", [job_id]))
