"""Store queries for sampled answers (`generate` jobs, and the answers pairs jobs sample)."""

from __future__ import annotations

from cai_engine.store.core import StoreCore


class GenerationQueries(StoreCore):
    def generations(self, job_id: str) -> list[dict]:
        with self.connect() as con:
            frame = con.frame(
                "SELECT * FROM generations WHERE job_id = ? ORDER BY prompt_id, sample", [job_id]
            )
        return frame.to_dict("records")
