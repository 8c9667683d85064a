"""Store queries for prompt sets and their prompts."""

from __future__ import annotations

import json
from dataclasses import dataclass

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
            con.rows(
                "INSERT INTO prompt_sets (name, description, source, split_seed, test_fraction)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                [name, description or None, source, split_seed, test_fraction],
            )
            before = con.scalar("SELECT count(*) FROM prompts WHERE set_name = ?", [name])
            con.register("incoming", frame)
            con.rows(
                "INSERT INTO prompts (set_name, prompt_id, text, messages, content, category, split)"
                " SELECT ?, prompt_id, text, messages, content, category, split FROM incoming"
                " ON CONFLICT (set_name, prompt_id) DO NOTHING",
                [name],
            )
            con.unregister("incoming")
            after = con.scalar("SELECT count(*) FROM prompts WHERE set_name = ?", [name])
        return after - before

    def list_prompt_sets(self) -> list[PromptSetSummary]:
        with self.connect() as con:
            rows = con.rows(
                """
                SELECT s.name, s.description, s.source,
                       count(p.prompt_id),
                       count(p.prompt_id) FILTER (WHERE p.split = 'train'),
                       count(p.prompt_id) FILTER (WHERE p.split = 'test'),
                       count(DISTINCT p.category),
                       s.created_at
                FROM prompt_sets s
                LEFT JOIN prompts p ON p.set_name = s.name
                GROUP BY ALL
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
