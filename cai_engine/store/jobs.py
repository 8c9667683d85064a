"""Store queries for jobs and for ingesting the Parquet shards that jobs write."""

from __future__ import annotations

import json
from pathlib import Path

from cai_engine.errors import NotFoundError
from cai_engine.store.core import StoreCore
from cai_engine.store.traces import refresh_trace_summaries

_JOB_COLUMNS = "id, kind, label, config, status, pid, run_dir, attempts, created_at, started_at, finished_at, error"
_UPDATABLE = {"status", "pid", "attempts", "started_at", "finished_at", "error"}

# Tables that job shards may be ingested into; each has a primary key on its natural key, so
# ingesting a shard twice adds nothing. Names are interpolated into SQL, so only these pass.
INGESTIBLE_TABLES = frozenset(
    {
        "ticks",
        "generations",
        "traces",
        "pairs",
        "labels",
        "eval_answers",
        "eval_judgements",
        "eval_results",
    }
)


class JobQueries(StoreCore):
    def insert_job(
        self, job_id: str, kind: str, config: dict, run_dir: str, label: str | None
    ) -> None:
        with self.connect() as con:
            con.rows(
                "INSERT INTO jobs (id, kind, label, config, status, run_dir)"
                " VALUES (?, ?, ?, ?, 'queued', ?)",
                [job_id, kind, label, json.dumps(config, sort_keys=True), run_dir],
            )

    def update_job(self, job_id: str, **fields) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update job column(s) {sorted(unknown)}")
        if not fields:
            return
        names = sorted(fields)
        assignments = ", ".join(f"{n} = ?" for n in names)  # names are from _UPDATABLE only
        with self.connect() as con:
            con.rows(
                f"UPDATE jobs SET {assignments} WHERE id = ?", [fields[n] for n in names] + [job_id]
            )

    def job_row(self, job_id: str) -> tuple:
        with self.connect() as con:
            row = con.one(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", [job_id])
        if row is None:
            raise NotFoundError(f"no job '{job_id}'; `cai jobs list` shows the jobs there are")
        return row

    def job_rows(
        self,
        *,
        kind: str | None = None,
        statuses: list[str] | None = None,
        limit: int | None = None,
    ) -> list[tuple]:
        with self.connect() as con:
            return con.rows(
                f"SELECT {_JOB_COLUMNS} FROM jobs"
                " WHERE (? IS NULL OR kind = ?)"
                "   AND (? IS NULL OR list_contains(?, status))"
                " ORDER BY created_at DESC, id DESC"
                " LIMIT ?",
                [kind, kind, statuses, statuses, limit],
            )

    # -- shard ingestion ------------------------------------------------------------------

    def ingested_paths(self, job_id: str) -> set[str]:
        with self.connect() as con:
            return {
                r[0]
                for r in con.rows("SELECT path FROM ingested_shards WHERE job_id = ?", [job_id])
            }

    def ingest_shards(self, job_id: str, table: str, paths: list[Path]) -> int:
        """Insert the rows of complete shards into `table`, in one unit of work.

        Idempotent: rows are inserted with INSERT OR IGNORE on the table's natural key, and
        each shard is recorded so later calls skip it. Returns the rows newly inserted.
        """
        if table not in INGESTIBLE_TABLES:
            raise ValueError(f"'{table}' is not an ingestible table")
        if not paths:
            return 0
        added = 0
        with self.transaction() as con:
            for path in paths:
                rel = str(Path(path).resolve().relative_to(self.home))
                before = con.scalar(f"SELECT count(*) FROM {table}")
                con.rows(
                    f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM read_parquet(?)",
                    [str(path)],
                )
                after = con.scalar(f"SELECT count(*) FROM {table}")
                rows = con.scalar("SELECT count(*) FROM read_parquet(?)", [str(path)])
                con.rows(
                    "INSERT OR IGNORE INTO ingested_shards (path, job_id, tbl, rows) VALUES (?, ?, ?, ?)",
                    [rel, job_id, table, rows],
                )
                added += after - before
            if table == "traces":  # the touched traces' summaries, in the same unit of work
                refresh_trace_summaries(con, job_id, [str(p) for p in paths])
        return added

    def ticks(self, job_id: str) -> list[tuple[int, int]]:
        with self.connect() as con:
            return con.rows("SELECT i, value FROM ticks WHERE job_id = ? ORDER BY i", [job_id])
