"""Store queries for human spot-checks of AI labels (append-only: re-reviews are kept)."""

from __future__ import annotations

import time
import uuid

from cai_engine.store.core import StoreCore
from cai_engine.store.records import records


class ReviewQueries(StoreCore):
    def add_review(
        self,
        labels_job: str,
        prompt_id: str,
        pair: int,
        reviewer: str,
        verdict: str,
        display_order: str,
        note: str | None = None,
    ) -> str:
        """Append a human verdict; earlier verdicts are kept. Returns the review's id."""
        # time-ordered, so `ORDER BY created_at, id` is the order verdicts were given
        review_id = f"{time.time_ns():016x}{uuid.uuid4().hex[:16]}"
        with self.connect() as con:
            con.rows(
                "INSERT INTO reviews"
                " (id, labels_job, prompt_id, pair, reviewer, verdict, display_order, note)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [review_id, labels_job, prompt_id, pair, reviewer, verdict, display_order, note],
            )
        return review_id

    def reviews(self, labels_job: str) -> list[dict]:
        """Every verdict on a label job's pairs, oldest first (re-reviews included)."""
        with self.connect() as con:
            frame = con.frame(
                "SELECT * FROM reviews WHERE labels_job = ? ORDER BY created_at, id",
                [labels_job],
            )
        return records(frame)
