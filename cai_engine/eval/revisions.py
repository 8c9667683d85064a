"""Revision progress of a critique job: per round k, how often the judge prefers round k's
answer over round k-1's (round 0 is the initial answer).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai_engine.eval.stats import Rate, wilson
from cai_engine.labels import label_pairs
from cai_engine.pairs import pair_flags

if TYPE_CHECKING:
    from cai_engine.store import Store


@dataclass
class RoundProgress:
    round: int
    pairs: int  # traces with both this round's revision and the answer before it
    preferred: Rate  # how often the judge prefers round k's answer over round k-1's (soft)
    wins: Rate  # hard wins: the judge's soft preference for round k is above 0.5


# what revision progress reads of a critique job's answer steps (never its critiques)
ANSWER_COLUMNS = ("job_id", "prompt_set", "prompt_id", "sample", "round", "step", "text", "model")


def critique_answer_pages(store: Store, job_id: str, page: int = 256) -> Iterator[list[dict]]:
    """A critique job's initial answers and revisions, a page of whole traces at a time (in
    (prompt id, sample) order), each row cut to what revision progress reads (`ANSWER_COLUMNS`
    and the prompt's messages, one list per prompt): the critiques are never read."""
    after, messages = None, {}
    while rows := store.trace_rows_page(job_id, after=after, limit=page, answers_only=True):
        out = []
        for r in rows:
            if r["prompt_id"] not in messages:
                messages = {r["prompt_id"]: r["prompt_messages"]}  # rows come a prompt at a time
            out.append(
                {
                    **{c: r[c] for c in ANSWER_COLUMNS},
                    "prompt_messages": messages[r["prompt_id"]],
                }
            )
        yield out
        after = (rows[-1]["prompt_id"], rows[-1]["sample"])


def revision_pairs(rows: list[dict]) -> list[dict]:
    """From a critique job's trace rows (with `prompt_messages`): for every round k >= 1, the
    pair (round k's revision as A, the answer before it as B). `item` = sample * 1000 + k."""

    answers: dict[tuple[str, int], dict[int, str]] = {}
    info: dict[str, dict] = {}
    for r in rows:
        if r["step"] in ("initial", "revision"):
            answers.setdefault((r["prompt_id"], int(r["sample"])), {})[int(r["round"])] = r["text"]
            info[r["prompt_id"]] = r
    pairs = []
    for (prompt_id, sample), by_round in sorted(answers.items()):
        for k in sorted(by_round):
            if k == 0 or k - 1 not in by_round:
                continue
            new, old = by_round[k], by_round[k - 1]
            item = sample * 1000 + k
            pairs.append(
                {
                    "job_id": info[prompt_id].get("job_id", ""),
                    "prompt_set": info[prompt_id].get("prompt_set", ""),
                    "prompt_id": prompt_id,
                    "pair": item,  # a principle drawn per comparison
                    "item": item,
                    "round": k,
                    "response_a": new,
                    "response_b": old,
                    "flags": pair_flags(new, old),
                    "prompt_messages": info[prompt_id]["prompt_messages"],
                }
            )
    return pairs


def summarise_rounds(rounds: list[int], soft: list[float | None]) -> list[RoundProgress]:
    out = []
    for k in sorted(set(rounds)):
        values = [s for r, s in zip(rounds, soft, strict=True) if r == k and s is not None]
        out.append(
            RoundProgress(
                round=k,
                pairs=len(values),
                preferred=wilson(sum(values), len(values)),
                wins=wilson(sum(v > 0.5 for v in values), len(values)),
            )
        )
    return out


def revision_progress(rows: list[dict], constitution, constitution_hash: str, judge, config):
    """Per round k, how often the feedback model prefers round k's answer over round k-1's
    (round 0 is the initial answer), judged under the constitution's preference questions in
    both orders. Reproduces the paper's "harmlessness rises with each revision" check.

    `rows` are a critique job's trace rows (with `prompt_messages`); `config` is a
    `feedback.LabelConfig` (few-shots, orders, seed). Returns one RoundProgress per round.
    """

    pairs = revision_pairs(rows)
    labels = label_pairs(pairs, constitution, constitution_hash, judge, config)
    return summarise_rounds([p["round"] for p in pairs], [lab["soft_label"] for lab in labels])
