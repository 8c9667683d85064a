"""The exports as they were written in Python before they moved into SQL (commit 4fbe3eb's
`cai_engine/export.py`), kept verbatim as the reference the SQL exports are checked against:
the same rows, in the same order, with the same counts."""

from __future__ import annotations

from collections import defaultdict

from cai_engine.export import CUT_OFF_SKIP, PrefFilters
from cai_engine.pairs import cut_off_sides
from cai_engine.review import human_verdicts
from cai_engine.traces import step_cut_off


def _traces_by_key(rows: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[(r["prompt_id"], r["sample"])].append(r)
    return out


def sft_examples(
    rows: list[dict], all_rounds: bool = False, drop_truncated: bool = False
) -> tuple[list[dict], dict[str, int]]:
    """`drop_truncated` leaves out revisions that stopped at the token limit, mid-text."""
    examples, skipped = [], {"incomplete traces": 0, "empty revisions": 0}
    if drop_truncated:
        skipped[CUT_OFF_SKIP] = 0
    for trace in _traces_by_key(rows).values():
        revisions = [r for r in trace if r["step"] == "revision"]
        if not revisions:
            skipped["incomplete traces"] += 1
            continue
        chosen = revisions if all_rounds else [max(revisions, key=lambda r: r["round"])]
        for r in chosen:
            if not r["text"].strip():
                skipped["empty revisions"] += 1
                continue
            if drop_truncated and step_cut_off(r):
                skipped[CUT_OFF_SKIP] += 1
                continue
            examples.append(
                {
                    "messages": r["prompt_messages"]
                    + [{"role": "assistant", "content": r["text"]}],
                    "prompt_id": r["prompt_id"],
                    "round": int(r["round"]),
                    "principle_id": r["principle_id"],
                }
            )
    return examples, skipped


def prefs_from_revisions(
    rows: list[dict], drop_truncated: bool = False
) -> tuple[list[dict], dict[str, int]]:
    """`drop_truncated` leaves out traces whose initial answer or final revision was cut off."""
    examples, skipped = [], {"incomplete traces": 0, "unchanged or empty": 0}
    if drop_truncated:
        skipped[CUT_OFF_SKIP] = 0
    for trace in _traces_by_key(rows).values():
        initial = next((r for r in trace if r["step"] == "initial"), None)
        revisions = [r for r in trace if r["step"] == "revision"]
        if initial is None or not revisions:
            skipped["incomplete traces"] += 1
            continue
        final = max(revisions, key=lambda r: r["round"])
        if (
            not final["text"].strip()
            or not initial["text"].strip()
            or final["text"] == initial["text"]
        ):
            skipped["unchanged or empty"] += 1
            continue
        if drop_truncated and (step_cut_off(final) or step_cut_off(initial)):
            skipped[CUT_OFF_SKIP] += 1
            continue
        examples.append(
            {
                "prompt": initial["prompt_messages"],
                "chosen": [{"role": "assistant", "content": final["text"]}],
                "rejected": [{"role": "assistant", "content": initial["text"]}],
                "prompt_id": initial["prompt_id"],
                "principles": ",".join(r["principle_id"] for r in revisions if r["principle_id"]),
            }
        )
    return examples, skipped


def prefs_from_labels(
    labels: list[dict], reviews: list[dict], filters: PrefFilters | None = None
) -> tuple[list[dict], dict[str, int]]:
    """TRL preference rows from AI labels, with human verdicts overriding the AI.

    `score` is the probability that `chosen` is the better response: max(p, 1 - p) of the
    AI's soft label p, or 1.0 for a human A/B verdict. A tie (an AI soft label of exactly
    0.5, or a human "tie" or "both bad") is kept with score 0.5 and response A as `chosen`,
    which a soft-label loss reads as "equally good"; `drop_ties` leaves ties out. The
    confidence and consistency filters apply to AI labels only: a human verdict is kept.
    """

    filters = filters or PrefFilters()
    human = human_verdicts(reviews)
    examples = []
    skipped = {"unscored": 0, "ties": 0, "inconsistent": 0, "below confidence": 0}
    if filters.drop_truncated:
        skipped[CUT_OFF_SKIP] = 0
    for r in labels:
        if filters.drop_truncated and cut_off_sides(r.get("pair_flags")):
            skipped[CUT_OFF_SKIP] += 1
            continue
        verdict = human.get((r["prompt_id"], int(r["pair"])))
        if verdict is not None:
            source = "human"
            winner = verdict["verdict"] if verdict["verdict"] in ("A", "B") else "tie"
            score = 1.0 if winner != "tie" else 0.5
        else:
            if r["soft_label"] is None:
                skipped["unscored"] += 1
                continue
            if filters.drop_inconsistent and r["consistent"] is False:
                skipped["inconsistent"] += 1
                continue
            if r["confidence"] < filters.min_confidence:
                skipped["below confidence"] += 1
                continue
            source, winner = "ai", r["winner"]
            score = max(r["soft_label"], 1.0 - r["soft_label"])
        if winner == "tie" and filters.drop_ties:
            skipped["ties"] += 1
            continue
        chosen, rejected = (
            (r["response_b"], r["response_a"])
            if winner == "B"
            else (r["response_a"], r["response_b"])
        )
        examples.append(
            {
                "prompt": r["prompt_messages"],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "score": float(score),
                "label_source": source,
                "principle_id": r["principle_id"],
                "consistent": r["consistent"],
                "prompt_id": r["prompt_id"],
                "pair": int(r["pair"]),
            }
        )
    return examples, skipped
