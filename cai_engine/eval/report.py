"""Reading an eval back: formatted results, the models' lineage, and answers side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai_engine import jobs
from cai_engine.eval.config import EvalConfig
from cai_engine.eval.metrics import METRICS, is_rate
from cai_engine.eval.refusals import refusal_rule
from cai_engine.models import parse_spec

if TYPE_CHECKING:
    from cai_engine.jobs import Job
    from cai_engine.store import Store


def format_result(r: dict) -> str:
    """One result as text: a rate in percent with its interval, a mean with its interval, or
    a total; always with n."""
    if r["value"] is None:
        return f"– (n = {r['n']})"
    metric = r["metric"]
    if is_rate(metric):
        spec = ".1%"
    else:
        spec = {"seconds_per_answer": ",.3f", "tokens_per_answer": ",.1f"}.get(metric, ",.0f")

    def fmt(x: float) -> str:
        return format(x, spec)

    if r["low"] is None:
        return f"{fmt(r['value'])} (n = {r['n']})"
    return f"{fmt(r['value'])} [{fmt(r['low'])}, {fmt(r['high'])}] (n = {r['n']})"


def results_table(results: list[dict], models: list[str] | None = None) -> list[dict]:
    """Rows of metric -> one formatted cell per model, in METRICS order (revision rounds last)."""
    models = models or list(dict.fromkeys(r["model"] for r in results))
    cell = {(r["model"], r["metric"]): r for r in results}
    order = list(METRICS) + sorted(
        {r["metric"] for r in results} - set(METRICS), key=lambda m: (len(m), m)
    )
    rows = []
    for metric in order:
        present = [m for m in models if (m, metric) in cell]
        if not present:
            continue
        row = {"metric": metric, "set": cell[(present[0], metric)]["eval_set"]}
        for m in models:
            if (m, metric) in cell:
                row[m] = format_result(cell[(m, metric)])
            else:  # the reference has no win rate against itself
                row[m] = "reference" if metric.endswith("win_rate") else ""
        rows.append(row)
    return rows


def model_lineage(store: Store, spec: str) -> dict:
    """Where a model came from: for a model trained here, its job, base, data and constitution
    version; for the others, what the spec names."""
    parsed = parse_spec(spec)
    if parsed.kind != "trained":
        return {"kind": parsed.kind, "model": parsed.model}
    lineage = store.model_named(parsed.model)
    if lineage is None:
        return {"kind": "trained", "model": parsed.model, "note": "not registered in this store"}
    manifest = lineage.get("data_manifest") or {}
    return {
        "kind": lineage.get("kind", "trained"),
        "model": parsed.model,
        "job": lineage.get("job"),
        "base_model": lineage.get("base_model"),
        "data": manifest.get("job") or lineage.get("data"),
        "data_kind": manifest.get("kind"),
        "examples": (manifest.get("counts") or {}).get("examples"),
        "constitution": manifest.get("constitution"),
        "constitution_hash": lineage.get("constitution_hash") or manifest.get("constitution_hash"),
        "feedback_model": manifest.get("feedback_model"),
    }


@dataclass
class PromptComparison:
    prompt_set: str
    prompt_id: str
    prompt: str  # the last user turn
    category: str | None
    answers: dict[str, str]  # model -> answer
    win: dict[str, float | None]  # model -> P(better than the reference); reference: 0.5
    refusal: dict[str, float | None]  # model -> the judge's P(refusal)
    rule: dict[str, str | None]  # model -> the refusal rule that matched
    cut_off: dict[str, bool]  # model -> its answer stopped at the token limit (finish_reason)
    disagreement: float  # the largest spread, across the models, of win or refusal


def side_by_side(
    store: Store, job_id: str, models: list[str], prompt_set: str
) -> list[PromptComparison]:
    """Each prompt of one eval set with every chosen model's answer and verdicts, sorted so the
    prompts where the models disagree most (in win probability or refusal) come first.

    The whole set at once, for tests and scripts; the Eval page reads it a page at a time
    (`store.eval_answer_page`) and one prompt's detail (`prompt_comparison`) from the same
    query, so the two always agree."""
    reference = EvalConfig(**jobs.get_job(store, job_id).config).ref_model
    order, _ = store.eval_answer_page(job_id, models, prompt_set, reference=reference, limit=None)
    details = store.eval_prompt_details(job_id, prompt_set, models, reference=reference)
    return [_comparison(prompt_set, details[r["prompt_id"]]) for r in order]


def prompt_comparison(
    store: Store, job_id: str, models: list[str], prompt_set: str, prompt_id: str, reference: str
) -> PromptComparison | None:
    """One prompt of an eval set with the chosen models' answers and verdicts (None: none of
    them answered it)."""
    detail = store.eval_prompt_detail(job_id, prompt_set, prompt_id, models, reference=reference)
    return _comparison(prompt_set, detail) if detail else None


def _comparison(prompt_set: str, detail: dict) -> PromptComparison:
    answers = detail["models"]
    return PromptComparison(
        prompt_set=prompt_set,
        prompt_id=detail["prompt_id"],
        prompt=detail["prompt_text"] or "",
        category=detail["category"],
        answers={m: a["text"] for m, a in answers.items()},
        win={m: a["win"] for m, a in answers.items()},
        refusal={m: a["refusal"] for m, a in answers.items()},
        # the rule the judge's refusal verdict recorded; unjudged, the rule matched now
        rule={
            m: a["judged_rule"] if a["refusal_judged"] else refusal_rule(a["text"])
            for m, a in answers.items()
        },
        cut_off={m: a["cut_off"] for m, a in answers.items()},
        disagreement=detail["disagreement"],
    )


def model_labels(specs: list[str]) -> dict[str, str]:
    """A short label per model spec that tells every spec apart: a trained model's or a served
    model's spec as it is, a path's last folder, or as many of its last folders as it takes to
    differ from the others (`run-a/checkpoint-500`), else the whole spec."""

    def label(spec: str, depth: int) -> str:
        if not spec.startswith("hf:"):
            return spec
        parts = spec[3:].split("?")[0].rstrip("/").split("/")
        return spec if depth > len(parts) else "/".join(parts[-depth:])

    labels = {}
    for spec in specs:
        others = [s for s in specs if s != spec]
        depth = 1
        while (mine := label(spec, depth)) != spec and any(
            label(o, d) == mine for o in others for d in range(1, depth + 1)
        ):
            depth += 1
        labels[spec] = mine
    return labels


def eval_models(job: Job) -> list[str]:
    """The models an eval job answered with, in its config's order (the reference included)."""
    return EvalConfig(**job.config).answering
