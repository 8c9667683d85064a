"""Reading critique traces: one trace per (prompt, sample), its steps, word diffs, statistics.

These are the views the Traces page and the CLI show; they work on the rows of the `traces`
table (see `store.traces`), so they are plain functions and easy to test.
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from dataclasses import dataclass, field

from cai_engine.errors import CaiError
from cai_engine.models.base import CUT_OFF

_WORDS = re.compile(r"\S+|\s+")


@dataclass
class Trace:
    prompt_id: str
    sample: int
    category: str | None
    prompt: list[dict]
    steps: list[dict] = field(default_factory=list)  # rows in step order

    @property
    def answers(self) -> list[dict]:
        """The initial answer, then each round's revision."""
        return [s for s in self.steps if s["step"] in ("initial", "revision")]

    @property
    def principles(self) -> list[str]:
        return [s["principle_id"] for s in self.steps if s["step"] == "critique"]

    @property
    def rounds_done(self) -> int:
        return sum(1 for s in self.steps if s["step"] == "revision")

    @property
    def changed(self) -> bool:
        answers = self.answers
        return len(answers) > 1 and answers[-1]["text"] != answers[0]["text"]

    @property
    def prompt_text(self) -> str:
        return next((m["content"] for m in reversed(self.prompt) if m["role"] == "user"), "")

    @property
    def flags(self) -> set[str]:
        """The steps' flags (empty, skipped), and `cut_off` when a step hit the token limit."""
        found = {f for s in self.steps for f in (s.get("flags") or "").split(",") if f}
        return found | ({"cut_off"} if self.cut_off else set())

    @property
    def cut_off(self) -> bool:
        """Some step of the trace stopped at the token limit, mid-text."""
        return any(step_cut_off(s) for s in self.steps)


def step_cut_off(step: dict) -> bool:
    """The step's text stopped at the token limit (finish reason `length`), mid-sentence."""
    return step.get("finish_reason") == CUT_OFF


def group_traces(rows: list[dict]) -> list[Trace]:
    order = {"initial": 0, "critique": 1, "revision": 2}
    grouped: dict[tuple, Trace] = {}
    for r in sorted(
        rows, key=lambda r: (r["prompt_id"], r["sample"], r["round"], order[r["step"]])
    ):
        key = (r["prompt_id"], r["sample"])
        if key not in grouped:
            grouped[key] = Trace(
                r["prompt_id"], int(r["sample"]), r.get("category"), r.get("prompt_messages") or []
            )
        grouped[key].steps.append(r)
    return list(grouped.values())


SEARCH_MAX = 200  # characters of a search; a longer one is an error, not a slow scan


@dataclass(frozen=True)
class TraceFilter:
    """Which traces a page shows: those that reached `round` (and drew `principle` there, or
    anywhere when no round is given), in `category`, mentioning `search` (case-insensitive,
    as plain text: no character is a pattern) in the prompt or any step; with `cut_off` True
    only those with a step cut off at the token limit, with False only those without."""

    principle: str | None = None
    round: int | None = None
    category: str | None = None
    search: str | None = None
    cut_off: bool | None = None

    def __post_init__(self):
        if self.search and len(self.search.strip()) > SEARCH_MAX:
            raise CaiError(
                f"search: {len(self.search.strip()):,} characters; search for at most "
                f"{SEARCH_MAX} (a phrase from the text, not the text)"
            )

    @property
    def needle(self) -> str:
        return (self.search or "").strip().lower()

    def matches(self, t: Trace) -> bool:
        if self.round is not None and t.rounds_done < self.round:
            if not any(s["round"] == self.round for s in t.steps):
                return False
        if self.principle:
            drawn = [
                s["principle_id"]
                for s in t.steps
                if s["step"] == "critique" and (self.round is None or s["round"] == self.round)
            ]
            if self.principle not in drawn:
                return False
        if self.category and t.category != self.category:
            return False
        if self.cut_off is not None and t.cut_off != self.cut_off:
            return False
        needle = self.needle
        return not needle or (
            needle in t.prompt_text.lower() or any(needle in s["text"].lower() for s in t.steps)
        )


def filter_traces(
    traces: list[Trace],
    *,
    principle: str | None = None,
    round_: int | None = None,
    category: str | None = None,
    search: str | None = None,
    cut_off: bool | None = None,
) -> list[Trace]:
    """The traces that `TraceFilter` keeps (the store's `trace_page` asks the same in SQL)."""
    where = TraceFilter(principle, round_, category, search, cut_off)
    return [t for t in traces if where.matches(t)]


def word_diff(old: str, new: str) -> list[tuple[str, str]]:
    """(op, text) pieces turning `old` into `new` word by word; op is equal, delete or insert."""
    a, b = _WORDS.findall(old), _WORDS.findall(new)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("equal", "".join(a[i1:i2])))
        else:
            if i2 > i1:
                out.append(("delete", "".join(a[i1:i2])))
            if j2 > j1:
                out.append(("insert", "".join(b[j1:j2])))
    return out


def edit_size(old: str, new: str) -> float:
    """Share of words changed, from 0 (identical) to 1 (nothing in common); whitespace is
    not a word, so two texts that share only their spacing count as disjoint."""
    a, b = old.split(), new.split()
    if not a and not b:
        return 0.0
    return 1.0 - difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()


def principle_stats(traces: list[Trace]) -> list[dict]:
    """Per principle: how often it was drawn, how often its revision changed the answer, and
    the mean edit size of its revisions."""
    drawn: dict[str, int] = defaultdict(int)
    changed: dict[str, int] = defaultdict(int)
    sizes: dict[str, list[float]] = defaultdict(list)
    for t in traces:
        previous = next((s["text"] for s in t.steps if s["step"] == "initial"), None)
        for s in t.steps:
            if s["step"] == "critique":
                drawn[s["principle_id"]] += 1
            elif s["step"] == "revision" and previous is not None:
                size = edit_size(previous, s["text"])
                sizes[s["principle_id"]].append(size)
                changed[s["principle_id"]] += s["text"] != previous
                previous = s["text"]
    return sorted(
        (
            {
                "principle": p,
                "drawn": drawn[p],
                "revisions": len(sizes[p]),
                "changed": changed[p],
                "changed_rate": changed[p] / len(sizes[p]) if sizes[p] else 0.0,
                "mean_edit_size": sum(sizes[p]) / len(sizes[p]) if sizes[p] else 0.0,
            }
            for p in drawn
        ),
        key=lambda r: (-r["drawn"], r["principle"]),
    )
