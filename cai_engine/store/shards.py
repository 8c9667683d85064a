"""Queries over a job's own shard files, for the job itself: what earlier attempts left.

A job never holds the store while it works (DESIGN §4), and a resuming job must not read every
row its shards hold back into Python either: a 100k-prompt critique job's shards hold
hundreds of thousands of rows. `ShardIndex` asks an in-memory DuckDB of the job's own process
(never the store's file) about the Parquet files where they lie. It keeps one row per key
(the key's columns and how many shard rows have it), so a stage asks which of a chunk's items
are done, and reads back the rows of only those it still needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ShardIndex:
    """The keys (and their row counts) of one table's shards, queried chunk by chunk.

    Args:
        files (`Sequence[Path]`):
            The complete shard files of the table, in any order.
        key (`Sequence[str]`):
            The columns that name one unit of work, e.g. ("prompt_id", "sample"). They are
            column names from the stage's code, never user input.
    """

    def __init__(self, files: Sequence[str | Path], key: Sequence[str]):
        import duckdb

        self.files = [str(f) for f in files]
        self.key = tuple(key)
        self._cols = ", ".join(self.key)
        self._con = duckdb.connect()  # in memory: this process's own
        self._con.execute("SET threads = 1")  # a job's cores are for its model
        self.rows = 0  # shard rows in all
        self.keys = 0  # distinct keys
        if not self.files:
            return
        self._con.execute(
            f"CREATE TABLE done AS SELECT {self._cols}, count(*) AS n"
            f" FROM {self._source()} GROUP BY ALL",
            [self.files],
        )
        self.keys, self.rows = self._con.execute(
            "SELECT count(*), coalesce(sum(n), 0) FROM done"
        ).fetchone()
        self.keys, self.rows = int(self.keys), int(self.rows)

    @staticmethod
    def _source() -> str:
        # shards of one table may differ in a column's type where all of one's values were null
        return "read_parquet(?, union_by_name = true)"

    def total(self, *columns: str) -> int:
        """The sum of `columns` over every shard row (e.g. the tokens spent so far)."""
        if not self.files or not columns:
            return 0
        expr = " + ".join(f"coalesce(sum({c}), 0)" for c in columns)
        return int(
            self._con.execute(f"SELECT {expr} FROM {self._source()}", [self.files]).fetchone()[0]
        )

    def done_among(self, column: str, values: Sequence) -> dict[tuple, int]:
        """The keys whose `column` is one of `values`, with how many shard rows each has."""
        if not self.files or not values:
            return {}
        found = self._con.execute(
            f"SELECT {self._cols}, n FROM done WHERE list_contains(?, {column})",
            [list(values)],
        ).fetchall()
        return {tuple(r[:-1]): int(r[-1]) for r in found}

    def rows_for(self, column: str, values: Sequence) -> list[dict]:
        """Every shard row whose `column` is one of `values` (reads the files, filtered there)."""
        if not self.files or not values:
            return []
        cur = self._con.execute(
            f"SELECT * FROM {self._source()} WHERE list_contains(?, {column})",
            [self.files, list(values)],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def aggregate(self, select: str) -> tuple:
        """One row of aggregates over every shard row; `select` is the stage's own SQL (its
        column names and functions only, no values)."""
        if not self.files:
            return ()
        return self._con.execute(f"SELECT {select} FROM {self._source()}", [self.files]).fetchone()

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> ShardIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
