"""Store queries for jobs and for ingesting the Parquet shards that jobs write."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from cai_engine.errors import NotFoundError
from cai_engine.search import search_needle
from cai_engine.store.core import StoreCore
from cai_engine.store.traces import refresh_trace_summaries

_JOB_COLUMNS = "id, kind, label, config, status, pid, run_dir, attempts, created_at, started_at, finished_at, error"
_UPDATABLE = {"status", "pid", "attempts", "started_at", "finished_at", "error"}
# The jobs a list shows, newest first; named parameters $kinds and $statuses (NULL: any) and
# $needle ('' : any), a phrase of the id or label as plain text (see `cai_engine.search`).
_JOB_FILTER = """
WHERE ($kinds IS NULL OR list_contains($kinds, kind))
  AND ($statuses IS NULL OR list_contains($statuses, status))
  AND ($needle = '' OR contains(lower(id), $needle)
       OR contains(lower(coalesce(label, '')), $needle))
"""

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
        "judge_check_items",
        "judge_checks",
        "judge_check_uses",
    }
)


def _most_first(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


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
        kind: str | list[str] | None = None,
        statuses: list[str] | None = None,
        limit: int | None = None,
    ) -> list[tuple]:
        """The newest `limit` jobs (all: None) of `kind` (one, or any of a list) in `statuses`."""
        return self.job_page(kind=kind, statuses=statuses, limit=limit, count=False)[0]

    def job_page(
        self,
        *,
        kind: str | list[str] | None = None,
        statuses: list[str] | None = None,
        search: str | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int | None = 50,
        count: bool = True,
    ) -> tuple[list[tuple], int | None]:
        """One page of jobs, newest first, and how many match in all (None unless `count`).

        Args:
            kind (`str` or `list[str]`, *optional*):
                Only jobs of this kind, or of any of these kinds.
            statuses (`list[str]`, *optional*):
                Only jobs in one of these statuses.
            search (`str`, *optional*):
                A phrase of the id or label, as plain text (no character is a pattern), at
                most `SEARCH_MAX` characters (else a CaiError).
            after (`tuple`, *optional*):
                The (created_at, id) of the last job of the page shown: the next page starts
                after it (keyset paging, so a deep page costs what the first does).
        """
        kinds = [kind] if isinstance(kind, str) else kind
        params = {
            "kinds": None if kinds is None else list(kinds),
            "statuses": None if statuses is None else list(statuses),
            "needle": search_needle(search, "search the jobs"),
        }
        keyset = "" if after is None else " AND (created_at, id) < ($after_at, $after_id)"
        keys = {} if after is None else {"after_at": after[0], "after_id": after[1]}
        with self.connect() as con:
            rows = con.rows(
                f"SELECT {_JOB_COLUMNS} FROM jobs {_JOB_FILTER}{keyset}"
                " ORDER BY created_at DESC, id DESC LIMIT $limit",
                params | keys | {"limit": limit},
            )
            total = (
                con.scalar(f"SELECT count(*) FROM jobs {_JOB_FILTER}", params) if count else None
            )
        return rows, None if total is None else int(total)

    def job_counts(self) -> dict:
        """How many jobs there are: in all, by status and by kind (each most first)."""
        with self.connect() as con:
            rows = con.rows("SELECT kind, status, count(*) FROM jobs GROUP BY kind, status")
        by_status: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        for kind, status, n in rows:
            by_status[status] = by_status.get(status, 0) + int(n)
            by_kind[kind] = by_kind.get(kind, 0) + int(n)
        return {
            "total": sum(by_status.values()),
            "status": _most_first(by_status),
            "kind": _most_first(by_kind),
        }

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

        A batch of new rows (the usual case) is first inserted with a plain INSERT, which
        checks each key once where INSERT OR IGNORE checks it twice (about half the insert's
        time); a key the table already has makes DuckDB refuse that, and the whole unit of
        work is then rolled back and done again with INSERT OR IGNORE. Either way the same
        rows end up stored.
        """
        import duckdb

        if table not in INGESTIBLE_TABLES:
            raise ValueError(f"'{table}' is not an ingestible table")
        if not paths:
            return 0
        try:
            return self._ingest(job_id, table, paths, "INSERT")
        except duckdb.ConstraintException:  # some key is there already (or twice in the batch)
            return self._ingest(job_id, table, paths, "INSERT OR IGNORE")

    def _ingest(self, job_id: str, table: str, paths: list[Path], insert: str) -> int:
        added = 0
        with self.transaction() as con:
            for path in paths:
                rel = str(Path(path).resolve().relative_to(self.home))
                before = con.scalar(f"SELECT count(*) FROM {table}")
                con.rows(
                    f"{insert} INTO {table} BY NAME SELECT * FROM read_parquet(?)",
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
