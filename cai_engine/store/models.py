"""Store queries for models trained here and their lineage."""

from __future__ import annotations

import json

from cai_engine.store.core import StoreCore
from cai_engine.store.records import records


class ModelQueries(StoreCore):
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
        rows = records(frame)
        for r in rows:
            r["lineage"] = json.loads(r["lineage"])
        return rows

    def model_named(self, name: str) -> dict | None:
        with self.connect() as con:
            row = con.one("SELECT lineage FROM models WHERE name = ?", [name])
        return json.loads(row[0]) if row else None
