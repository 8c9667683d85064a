"""Counts the rows each `Store` query returns while a page runs: the pages' scale tests use it
to fail when any call reads more than a page (issue 13: pages query, never load)."""

from __future__ import annotations

import inspect

from cai_engine.store import Store

# queries that return (rows, count) or (row, progress): their rows are the first item
PAIRED = ("next_review",)


def rows_in(result) -> int | None:
    """How many rows a query's result holds: a list's or set's length; a dict of records
    (keyed by id) its length; any other dict is one record; None when it is not rows."""
    if isinstance(result, list | set):
        return len(result)
    if isinstance(result, dict):
        records = result and all(isinstance(v, dict) for v in result.values())
        return len(result) if records else 1
    return None


class RowCounter:
    """Wraps every public query method of `Store` (the class, so a page's cached store is
    covered too) and records `(name, rows)` for each call; with `page`, only the calls made
    from that page file (not the test's own)."""

    def __init__(self, monkeypatch, page: str | None = None):
        self.page = str(page) if page else None
        self.calls: list[tuple[str, int]] = []
        for name in dir(Store):
            method = inspect.getattr_static(Store, name)
            if name.startswith("_") or not inspect.isfunction(method):
                continue  # static and class methods, properties, attributes
            monkeypatch.setattr(Store, name, self._wrap(name, method))

    def _wrap(self, name, method):
        def counted(*args, **kwargs):
            result = method(*args, **kwargs)
            if self.page and self.page not in {f.filename for f in inspect.stack()[1:]}:
                return result
            paired = name.endswith("_page") or name in PAIRED
            n = rows_in(result[0] if paired and isinstance(result, tuple) else result)
            if n is not None:
                self.calls.append((name, n))
            return result

        return counted

    def most(self) -> tuple[str, int]:
        return max(self.calls, key=lambda c: c[1])

    def names(self) -> set[str]:
        return {n for n, _ in self.calls}
