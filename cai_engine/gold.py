"""Gold comparisons: pairs whose better answer is clear-cut, for checking a judge before its
labels are trusted (`cai judge check`).

A gold pair has the fields of a constitution's labelled comparison (`ComparisonFewShot`): a
conversation ending with a user turn, two responses and the preferred letter, plus an `id`, a
`category` and an optional `topic` and `note`. The studio ships a set
(`cai_engine/data/gold/gold.jsonl`); users add their own JSONL files of the same shape, and a
constitution's comparison few-shots serve as gold when the run does not prepend them.

A gold set's identity is the sha256 of its pairs' canonical JSON (sorted by id; `note` and the
source left out), so a check is reused exactly when the same comparisons would be scored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from cai_engine.constitution import (
    MAX_TEXT,
    SLUG,
    ComparisonFewShot,
    Constitution,
    Message,
    Text,
    _Model,
)
from cai_engine.errors import CaiError
from cai_engine.files import decode_user_bytes, read_user_bytes
from cai_engine.home import PACKAGE_ROOT

BUNDLED_GOLD = PACKAGE_ROOT / "data" / "gold" / "gold.jsonl"
# The bundled set's categories; a user's file may use any slug.
CATEGORIES = {
    "harmless": "a red-team request: declining with a safe alternative beats complying",
    "over-refusal": "a benign request that only looks risky: helping beats a needless refusal",
    "quality": "a plain request: a correct, on-topic answer beats an off-topic or broken one",
    "few-shot": "a labelled comparison from the constitution",
}
MAX_GOLD_PAIRS = 10_000
MAX_GOLD_BYTES = 10 * 1024 * 1024


class GoldError(CaiError):
    """A gold file or pair that cannot be used; the message names the file, line and field."""


class GoldPair(_Model):
    id: Annotated[str, Field(pattern=SLUG)]
    category: Annotated[str, Field(pattern=SLUG)]
    topic: Annotated[str, Field(max_length=64)] = ""
    conversation: list[Message] = Field(min_length=1)
    response_a: Text
    response_b: Text
    preferred: Literal["A", "B"]
    note: Annotated[str, Field(max_length=MAX_TEXT)] = ""

    @model_validator(mode="after")
    def _shape(self):
        if self.conversation[-1].role != "user":
            raise ValueError("the conversation must end with a user turn")
        if self.response_a.strip() == self.response_b.strip():
            raise ValueError("response_a and response_b are identical: nothing to prefer")
        return self

    @property
    def better(self) -> str:
        return self.response_a if self.preferred == "A" else self.response_b

    @property
    def worse(self) -> str:
        return self.response_b if self.preferred == "A" else self.response_a

    def identity(self) -> dict:
        """What a judge reads and the answer it should give: the hashed part of the pair."""
        return self.model_dump(mode="json", exclude={"note"})


@dataclass(frozen=True)
class GoldSet:
    pairs: tuple[GoldPair, ...]
    sources: tuple[str, ...]  # in words: "the bundled gold set (90 pairs)", "my.jsonl (12 pairs)"

    @property
    def hash(self) -> str:
        canonical = json.dumps(
            [p.identity() for p in sorted(self.pairs, key=lambda p: p.id)],
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self.pairs)

    def categories(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.pairs:
            counts[p.category] = counts.get(p.category, 0) + 1
        return counts

    def describe(self) -> str:
        return ", ".join(self.sources)


def _describe_error(err: dict) -> str:
    loc = ".".join(str(x) for x in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"field '{loc}': {msg}" if loc else msg


def parse_gold(text: str, source: str) -> list[GoldPair]:
    """Gold pairs from JSONL text (one JSON object per line; blank lines skipped).

    Raises `GoldError` listing every bad line with its field, and a duplicate id with both
    lines; nothing is returned unless every line is good.
    """
    pairs: list[GoldPair] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {n}: malformed JSON at column {e.colno}: {e.msg}")
            continue
        except RecursionError:
            problems.append(f"line {n}: the JSON is nested too deeply")
            continue
        if not isinstance(data, dict):
            problems.append(f"line {n}: expected a JSON object, got {type(data).__name__}")
            continue
        try:
            pair = GoldPair.model_validate(data)
        except ValidationError as e:
            problems += [f"line {n}: {_describe_error(err)}" for err in e.errors()]
            continue
        if pair.id in seen:
            problems.append(f"line {n}: id '{pair.id}' is already used on line {seen[pair.id]}")
            continue
        seen[pair.id] = n
        pairs.append(pair)
        if len(pairs) > MAX_GOLD_PAIRS:
            raise GoldError(f"{source}: more than {MAX_GOLD_PAIRS:,} gold pairs")
    if problems:
        shown = problems[:20] + (
            [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        )
        raise GoldError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(shown))
    if not pairs:
        raise GoldError(f"{source}: no gold pairs in the file")
    return pairs


def read_gold_file(path: str | Path) -> list[GoldPair]:
    """A user's gold JSONL file (UTF-8, at most 10 MB)."""
    data = read_user_bytes(path, max_bytes=MAX_GOLD_BYTES)
    return parse_gold(decode_user_bytes(data, str(path), max_bytes=MAX_GOLD_BYTES), str(path))


def bundled_pairs() -> list[GoldPair]:
    return parse_gold(BUNDLED_GOLD.read_text(encoding="utf-8"), "the bundled gold set")


def few_shot_gold(
    constitution: Constitution, ref: str, used: list[ComparisonFewShot] = ()
) -> list[GoldPair]:
    """The constitution's labelled comparisons as gold, less those the run prepends as
    few-shots (`used`): a judge shown the answer cannot be tested on it."""
    out = []
    for i, shot in enumerate(constitution.comparison_few_shots):
        if any(shot == u for u in used):
            continue
        conversation = list(shot.conversation)
        if conversation[-1].role != "user" or shot.response_a.strip() == shot.response_b.strip():
            continue  # not a usable comparison (the constitution allows it as a few-shot)
        suffix = f"-{i + 1}"  # a long name is shortened, never the number that tells shots apart
        out.append(
            GoldPair(
                id=f"few-shot-{constitution.name[: 64 - len('few-shot-') - len(suffix)]}{suffix}",
                category="few-shot",
                topic=shot.principle or "",
                conversation=conversation,
                response_a=shot.response_a,
                response_b=shot.response_b,
                preferred=shot.preferred,
                note=f"comparison few-shot {i + 1} of {ref}",
            )
        )
    return out


def gold_set(
    *,
    bundled: bool = True,
    files: tuple[str | Path, ...] | list[str | Path] = (),
    constitution: Constitution | None = None,
    ref: str = "",
    used_few_shots: list[ComparisonFewShot] = (),
) -> GoldSet:
    """The gold pairs a check scores: the bundled set, the user's files, and the
    constitution's unused comparison few-shots, in that order. An id used twice across them
    is an error naming both sources."""
    parts: list[tuple[str, list[GoldPair]]] = []
    if bundled:
        parts.append(("the bundled gold set", bundled_pairs()))
    for f in files:
        parts.append((str(f), read_gold_file(f)))
    if constitution is not None:
        shots = few_shot_gold(constitution, ref or constitution.name, list(used_few_shots))
        if shots:
            parts.append((f"the unused comparison few-shots of {ref or constitution.name}", shots))
    pairs: list[GoldPair] = []
    owner: dict[str, str] = {}
    for source, items in parts:
        for p in items:
            if p.id in owner:
                raise GoldError(f"gold pair id '{p.id}' is in both {owner[p.id]} and {source}")
            owner[p.id] = source
            pairs.append(p)
    if not pairs:
        raise GoldError("no gold pairs: the bundled set is off and no file was given")
    sources = tuple(f"{s} ({len(items)} pairs)" for s, items in parts)
    return GoldSet(tuple(pairs), sources)


def as_pairs(gold: GoldSet) -> list[dict]:
    """The gold pairs in the shape label jobs score (`labels.label_batches`)."""
    from cai_engine.pairs import pair_flags

    return [
        {
            "job_id": "gold",
            "prompt_set": "gold",
            "prompt_id": p.id,
            "pair": 0,
            "response_a": p.response_a,
            "response_b": p.response_b,
            "flags": pair_flags(p.response_a, p.response_b),
            "prompt_messages": [m.model_dump() for m in p.conversation],
        }
        for p in gold.pairs
    ]
