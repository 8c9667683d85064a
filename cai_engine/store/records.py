"""Turning DuckDB result frames into the plain records the engine and the studio use."""

from __future__ import annotations

import json


def none_for_nan(value):
    """pandas turns a missing value beside present ones into NaN; callers expect None."""
    return None if isinstance(value, float) and value != value else value


def records(frame) -> list[dict]:
    """A query's frame as dicts: NaN as None, JSON messages parsed, counters as ints."""
    rows = [{k: none_for_nan(v) for k, v in r.items()} for r in frame.to_dict("records")]
    for r in rows:
        if "prompt_messages" in r:
            r["prompt_messages"] = json.loads(r["prompt_messages"]) if r["prompt_messages"] else []
        for key in ("pair", "few_shots", "prompt_tokens", "cot_tokens", "truncated_turns"):
            if r.get(key) is not None:
                r[key] = int(r[key])
        if "consistent" in r and r["consistent"] is not None:
            r["consistent"] = bool(r["consistent"])
    return rows
