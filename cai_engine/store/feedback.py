"""Store queries for RL-CAI: pairs, AI labels and human reviews."""

from __future__ import annotations

import json
import time
import uuid

from cai_engine.store.jobs import _none_for_nan

VERDICTS = ("A", "B", "tie", "both_bad", "skip")


def _records(frame) -> list[dict]:
    rows = [{k: _none_for_nan(v) for k, v in r.items()} for r in frame.to_dict("records")]
    for r in rows:
        if "prompt_messages" in r:
            r["prompt_messages"] = json.loads(r["prompt_messages"]) if r["prompt_messages"] else []
        for key in ("pair", "few_shots", "prompt_tokens", "cot_tokens", "truncated_turns"):
            if r.get(key) is not None:
                r[key] = int(r[key])
        if "consistent" in r and r["consistent"] is not None:
            r["consistent"] = bool(r["consistent"])
    return rows


class FeedbackQueries:
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
        return _records(frame)

    def labels(self, job_id: str) -> list[dict]:
        """A label job's labels, each with its pair's responses and its prompt's messages."""
        with self.connect() as con:
            frame = con.frame(
                """
                SELECT l.*, x.response_a, x.response_b, x.a_ref, x.b_ref,
                       x.source, x.model AS pair_model,
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
        return _records(frame)

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
        return _records(frame)

    def label_exists(self, labels_job: str, prompt_id: str, pair: int) -> bool:
        with self.connect() as con:
            return bool(
                con.scalar(
                    "SELECT count(*) FROM labels WHERE job_id = ? AND prompt_id = ? AND pair = ?",
                    [labels_job, prompt_id, pair],
                )
            )


class ModelQueries:
    def register_model(self, name: str, kind: str, job_id: str, path: str, lineage: dict) -> None:
        with self.connect() as con:
            con.rows(
                "INSERT INTO models (name, kind, job_id, path, base_model, data,"
                " constitution_hash, lineage) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    name,
                    kind,
                    job_id,
                    path,
                    lineage.get("base_model", ""),
                    lineage.get("data"),
                    lineage.get("constitution_hash"),
                    json.dumps(lineage, default=str),
                ],
            )

    def trained_models(self) -> list[dict]:
        """Registered models, newest first, each with its lineage."""
        with self.connect() as con:
            frame = con.frame("SELECT * FROM models ORDER BY created_at DESC, name")
        rows = _records(frame)
        for r in rows:
            r["lineage"] = json.loads(r["lineage"])
        return rows

    def model_named(self, name: str) -> dict | None:
        with self.connect() as con:
            row = con.one("SELECT lineage FROM models WHERE name = ?", [name])
        return json.loads(row[0]) if row else None
