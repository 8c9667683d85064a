"""Text search as the pages and the CLI run it: a plain phrase, matched case-insensitively in
SQL with `contains(lower(column), needle)`, so no character of it is a pattern (`%`, `_`, `.*`
are themselves), and bounded in length, so a pasted page of text is an error, not a slow scan.
"""

from __future__ import annotations

from cai_engine.errors import CaiError
from cai_engine.traces import SEARCH_MAX


def search_needle(search: str | None, what: str = "search") -> str:
    """The lower-cased, stripped phrase to look for ('' for none); a CaiError naming `what`
    when it is longer than `SEARCH_MAX` characters."""
    text = (search or "").strip()
    if len(text) > SEARCH_MAX:
        raise CaiError(
            f"{what}: {len(text):,} characters; search for at most {SEARCH_MAX} "
            "(a phrase from the text, not the text)"
        )
    return text.lower()
