"""Store queries for prompt sets and their prompts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cai_engine.errors import NotFoundError
from cai_engine.prompts import Prompt
from cai_engine.store.core import StoreCore


@dataclass(frozen=True)
class PromptSetSummary:
    name: str
    description: str | None
    source: str
    prompts: int
    train: int
    test: int
    categories: int
    created_at: object


class PromptQueries(StoreCore):
    def prompt_set_exists(self, name: str) -> bool:
        with self.connect() as con:
            return con.scalar("SELECT count(*) FROM prompt_sets WHERE name = ?", [name]) > 0

    def add_prompts(
        self,
        name: str,
        prompts: list[Prompt],
        *,
        description: str = "",
        source: str = "",
        split_seed: int,
        test_fraction: float,
    ) -> int:
        """Create the set if needed and add `prompts`; existing ids are left alone. Returns rows added."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "prompt_id": [p.prompt_id for p in prompts],
                "text": [p.text for p in prompts],
                "messages": [json.dumps(p.messages, ensure_ascii=False) for p in prompts],
                "content": ["\n".join(m["content"] for m in p.messages) for p in prompts],
                "category": [p.category for p in prompts],
                "split": [p.split for p in prompts],
            }
        )
        with self.transaction() as con:
            con.register("incoming", frame)
            try:
                return self._insert_prompts(
                    con, name, "incoming", [], description, source, split_seed, test_fraction
                )
            finally:
                con.unregister("incoming")

    def add_prompt_file(
        self,
        name: str,
        path: str | Path,
        *,
        description: str = "",
        source: str = "",
        split_seed: int,
        test_fraction: float,
    ) -> int:
        """Like `add_prompts`, from a Parquet file of prompt rows (`PromptStaging` writes it),
        in one transaction: a failure changes nothing. Returns rows added."""
        with self.transaction() as con:
            # DuckDB would take gigabytes for a million rows; bounded, it spills. The setting
            # is the whole process's, but its other units of work wait for this one (core.py).
            limit = con.scalar("SELECT current_setting('memory_limit')")
            con.rows("SET memory_limit = ?", [IMPORT_MEMORY])
            try:
                return self._insert_prompts(
                    con,
                    name,
                    "read_parquet(?)",
                    [str(path)],
                    description,
                    source,
                    split_seed,
                    test_fraction,
                )
            finally:
                con.rows("SET memory_limit = ?", [limit])

    @staticmethod
    def _insert_prompts(
        con, name, relation, params, description, source, split_seed, test_fraction
    ) -> int:
        # `relation` is "incoming" or "read_parquet(?)", never user input
        con.rows(
            "INSERT INTO prompt_sets (name, description, source, split_seed, test_fraction)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            [name, description or None, source, split_seed, test_fraction],
        )
        before = con.scalar("SELECT count(*) FROM prompts WHERE set_name = ?", [name])
        con.rows(
            "INSERT INTO prompts (set_name, prompt_id, text, messages, content, category, split)"
            f" SELECT ?, prompt_id, text, messages, content, category, split FROM {relation}"
            " ON CONFLICT (set_name, prompt_id) DO NOTHING",
            [name, *params],
        )
        after = con.scalar("SELECT count(*) FROM prompts WHERE set_name = ?", [name])
        return after - before

    def list_prompt_sets(self) -> list[PromptSetSummary]:
        with self.connect() as con:
            # Counted per set first, then joined: grouping the join by every set column was
            # 4x slower at 300,000 prompts (the Traces and Prompts pages ask on every run).
            rows = con.rows(
                """
                WITH counts AS (
                    SELECT set_name, count(*) AS n,
                           count(*) FILTER (WHERE split = 'train') AS train,
                           count(*) FILTER (WHERE split = 'test') AS test,
                           count(DISTINCT category) AS categories
                    FROM prompts
                    GROUP BY set_name
                )
                SELECT s.name, s.description, s.source, coalesce(c.n, 0),
                       coalesce(c.train, 0), coalesce(c.test, 0), coalesce(c.categories, 0),
                       s.created_at
                FROM prompt_sets s
                LEFT JOIN counts c ON c.set_name = s.name
                ORDER BY s.name
                """
            )
        return [PromptSetSummary(*r) for r in rows]

    def get_prompts(
        self,
        name: str,
        *,
        split: str | None = None,
        category: str | None = None,
        search: str | None = None,
        limit: int | None = None,
    ) -> list[Prompt]:
        """Prompts of set `name`, filtered; `search` matches any turn, case-insensitively."""
        if not self.prompt_set_exists(name):
            known = ", ".join(s.name for s in self.list_prompt_sets()) or "none yet"
            raise NotFoundError(f"no prompt set named '{name}'; known: {known}")
        with self.connect() as con:
            rows = con.rows(
                """
                SELECT prompt_id, messages, category, split
                FROM prompts
                WHERE set_name = ?
                  AND (? IS NULL OR split = ?)
                  AND (? IS NULL OR category = ?)
                  AND (? IS NULL OR contains(lower(content), lower(?)))
                ORDER BY prompt_id
                LIMIT ?
                """,
                [name, split, split, category, category, search, search, limit],
            )
        return [Prompt(pid, json.loads(msgs), cat, sp) for pid, msgs, cat, sp in rows]

    def prompt_page(
        self,
        name: str,
        *,
        split: str | None = None,
        after: str | None = None,
        limit: int = 1000,
    ) -> list[Prompt]:
        """Up to `limit` prompts of set `name` (and `split`) in id order, after id `after`:
        keyset pages, so a stage reads a big set a page at a time, each page its own unit of
        work."""
        with self.connect() as con:
            rows = con.rows(
                """
                SELECT prompt_id, messages, category, split
                FROM prompts
                WHERE set_name = ?
                  AND (? IS NULL OR split = ?)
                  AND (? IS NULL OR prompt_id > ?)
                ORDER BY prompt_id
                LIMIT ?
                """,
                [name, split, split, after, after, limit],
            )
        return [Prompt(pid, json.loads(msgs), cat, sp) for pid, msgs, cat, sp in rows]

    def count_prompts(self, name: str, *, split: str | None = None) -> int:
        """How many prompts set `name` (and `split`) holds; an unknown set is an error."""
        if not self.prompt_set_exists(name):
            known = ", ".join(s.name for s in self.list_prompt_sets()) or "none yet"
            raise NotFoundError(f"no prompt set named '{name}'; known: {known}")
        with self.connect() as con:
            return int(
                con.scalar(
                    "SELECT count(*) FROM prompts WHERE set_name = ? AND (? IS NULL OR split = ?)",
                    [name, split, split],
                )
            )

    def prompt_categories(self, name: str) -> list[tuple[str | None, int, int]]:
        """`(category, train count, test count)` for set `name`, largest first."""
        with self.connect() as con:
            return con.rows(
                """
                SELECT category,
                       count(*) FILTER (WHERE split = 'train'),
                       count(*) FILTER (WHERE split = 'test')
                FROM prompts
                WHERE set_name = ?
                GROUP BY category
                ORDER BY count(*) DESC, category
                """,
                [name],
            )


# -- staging a prompt import ------------------------------------------------------------------

IMPORT_MEMORY = "256MB"  # DuckDB's memory while an import stages or inserts its rows
STAGED_COLUMNS = ("seq", "src", "prompt_id", "text", "messages", "content", "category", "split")


class PromptStaging:
    """A scratch DuckDB file (never the store) that a prompt import fills chunk by chunk.

    An import of a million rows must not hold them in Python, nor hold the store's lock while
    it parses the file: rows go here first, a chunk at a time, in file order (`seq`).
    Duplicates and clashing ids are then found in SQL, and the first row of each id is
    written to one Parquet file that the store inserts in one short transaction.
    """

    def __init__(self, folder: str | Path):
        import duckdb

        self.folder = Path(folder)
        self._con = duckdb.connect(str(self.folder / "staging.duckdb"))
        self._con.execute("SET memory_limit = ?", [IMPORT_MEMORY])  # beyond it, spills to disk
        self._con.execute("SET preserve_insertion_order = false")
        self._con.execute(
            "CREATE TABLE staged (seq BIGINT, src VARCHAR, prompt_id VARCHAR, text VARCHAR,"
            " messages VARCHAR, content VARCHAR, category VARCHAR, split VARCHAR)"
        )
        self.rows = 0

    def add(self, rows: list[tuple]) -> None:
        """Stage `rows`: tuples in the order of `STAGED_COLUMNS`."""
        import pyarrow as pa

        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        chunk = pa.table(
            {
                name: pa.array(values, type=pa.int64() if name == "seq" else pa.string())
                for name, values in zip(STAGED_COLUMNS, columns, strict=True)
            }
        )
        self._con.register("chunk", chunk)
        try:
            self._con.execute("INSERT INTO staged SELECT * FROM chunk")
        finally:
            self._con.unregister("chunk")
        self.rows += len(rows)

    def settle(self) -> tuple[int, int, list[tuple[int, str, str, str]]]:
        """Mark each id's first row; returns (distinct prompts, exact duplicates dropped, and
        the rows that reuse an earlier row's id for a different prompt as (seq, where, id,
        where the id was first used)), in file order."""
        con = self._con
        con.execute(
            "CREATE OR REPLACE TABLE firsts AS"
            " SELECT prompt_id, min(seq) AS seq FROM staged GROUP BY prompt_id"
        )
        unique = con.execute("SELECT count(*) FROM firsts").fetchone()[0]
        later = """
            FROM staged s
            JOIN firsts f ON f.prompt_id = s.prompt_id AND f.seq < s.seq
            JOIN staged o ON o.seq = f.seq
        """
        duplicates = con.execute(
            f"SELECT count(*) {later} WHERE s.messages = o.messages"
        ).fetchone()[0]
        clashes = con.execute(
            f"SELECT s.seq, s.src, s.prompt_id, o.src {later}"
            " WHERE s.messages <> o.messages ORDER BY s.seq"
        ).fetchall()
        return int(unique), int(duplicates), clashes

    def prompts(self) -> list[Prompt]:
        """Each id's first row as a `Prompt`, in file order (for small sources and tests)."""
        rows = self._con.execute(
            "SELECT s.prompt_id, s.messages, s.category, s.split"
            " FROM staged s SEMI JOIN firsts f ON f.seq = s.seq ORDER BY s.seq"
        ).fetchall()
        return [Prompt(pid, json.loads(msgs), cat, sp) for pid, msgs, cat, sp in rows]

    def write_parquet(self) -> Path:
        """Each id's first row, as one Parquet file for `add_prompt_file`."""
        path = self.folder / "prompts.parquet"
        self._con.execute(
            "COPY (SELECT s.prompt_id, s.text, s.messages, s.content, s.category, s.split"
            " FROM staged s SEMI JOIN firsts f ON f.seq = s.seq) TO ? (FORMAT parquet)",
            [str(path)],
        )
        return path

    def close(self) -> None:
        self._con.close()
