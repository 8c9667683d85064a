"""Exports: training data in TRL's formats, each with a manifest saying where it came from.

- SFT: `{"messages": [...]}`, the prompt's turns then the final revision as the assistant
  turn (`all_rounds`: one example per round's revision, as the paper trained on).
- Preferences from revisions (the Hugging Face recipe's shortcut): `{"prompt": [...],
  "chosen": [final revision], "rejected": [initial answer]}`.
Formats: `jsonl` (data.jsonl), `parquet` (data.parquet) or `hf` (a `datasets` folder made
with `save_to_disk`). `manifest.json` records the job, the constitution version hash, the
model, the counts and the command that made it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.home import resolve_home
from cai_engine.pairs import cut_off_sides
from cai_engine.review import human_verdicts
from cai_engine.traces import step_cut_off

if TYPE_CHECKING:
    from cai_engine.jobs import Job
    from cai_engine.store import Store


FORMATS = ("jsonl", "parquet", "hf")


@dataclass
class ExportResult:
    out: Path
    kind: str
    examples: int
    skipped: dict[str, int] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in self.skipped.items() if n)
        return f"{self.examples} {self.kind} examples in {self.out}" + (
            f" (skipped: {skipped})" if skipped else ""
        )


def _traces_by_key(rows: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[(r["prompt_id"], r["sample"])].append(r)
    return out


def _job_rows(
    store: Store, job_id: str, kind: str, what: str, needs: str
) -> tuple[object, list[dict]]:
    """A finished-or-running job of `kind`, ingested, and its rows (traces or labels)."""

    job = jobs.get_job(store, job_id)
    if job.kind != kind:
        raise CaiError(f"job {job_id} is a {job.kind} job; {needs} a {kind} job")
    jobs.ingest(store, job)
    rows = store.traces(job_id) if kind == "critique" else store.labels(job_id)
    if not rows:
        raise CaiError(f"{kind} job {job_id} has no {what} yet ({job.status})")
    return job, rows


def _critique_rows(store: Store, job_id: str) -> tuple[object, list[dict]]:
    return _job_rows(store, job_id, "critique", "traces", "this export needs")


CUT_OFF_SKIP = (
    "cut off at the token limit"  # the manifest's count of texts --drop-truncated left out
)


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


def _check_replaceable(out: Path, home: Path | None) -> None:
    """--force replaces an earlier export, and nothing else: a folder holding only what an
    export writes, with its manifest, and never the data home or a folder around it."""

    home = resolve_home(home)
    target = out.resolve()
    if target == home or target in home.parents:
        raise CaiError(f"{out} is (or holds) the data home {home}; --force will not replace it")
    names = {p.name for p in out.iterdir()}
    if "manifest.json" not in names or not names <= EXPORT_FILES:
        raise CaiError(
            f"{out} is not an export folder (no manifest.json, or files an export does not "
            "write); --force replaces only an earlier export, so choose another --out"
        )


EXPORT_FILES = {"manifest.json", "data.jsonl", "data.parquet", "dataset"}


def write_examples(
    examples: list[dict],
    out: Path,
    fmt: str,
    manifest: dict,
    force: bool = False,
    home: Path | None = None,
) -> list[str]:
    if fmt not in FORMATS:
        raise CaiError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise CaiError(f"{out} is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise CaiError(
                f"{out} already exists and is not empty; choose another --out or pass --force"
            )
        _check_replaceable(out, home)
        shutil.rmtree(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if fmt == "jsonl":
        with open(tmp / "data.jsonl", "w", encoding="utf-8") as f:
            for e in examples:
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
        files = ["data.jsonl"]
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(examples), tmp / "data.parquet")
        files = ["data.parquet"]
    else:
        import datasets

        datasets.Dataset.from_list(examples).save_to_disk(str(tmp / "dataset"))
        files = ["dataset/"]
    (tmp / "manifest.json").write_text(
        json.dumps({**manifest, "files": files, "format": fmt}, indent=2)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)  # the export appears whole or not at all
    return files


def _manifest(
    kind: str,
    job: Job,
    rows: list[dict],
    examples: list[dict],
    skipped: dict,
    command: str,
    **extra,
) -> dict:
    first = rows[0]
    return {
        "kind": kind,
        "job": job.id,
        "constitution": first["constitution"],
        "constitution_hash": first["constitution_hash"],
        "model": first["model"],
        "prompt_set": first["prompt_set"],
        "counts": {
            "examples": len(examples),
            "traces": len(_traces_by_key(rows)),
            **{f"skipped {k}": v for k, v in skipped.items()},
        },
        "command": command,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def _none_left(job_id: str, what: str, skipped: dict[str, int]) -> CaiError:
    dropped = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
    return CaiError(
        f"critique job {job_id} has no {what}" + (f" (left out: {dropped})" if dropped else "")
    )


def export_sft(
    store: Store,
    job_id: str,
    out: Path,
    *,
    all_rounds=False,
    drop_truncated=False,
    fmt="jsonl",
    command="",
    force=False,
) -> ExportResult:
    job, rows = _critique_rows(store, job_id)
    examples, skipped = sft_examples(rows, all_rounds, drop_truncated)
    if not examples:
        raise _none_left(job_id, "finished revisions to export", skipped)
    manifest = _manifest(
        "sft",
        job,
        rows,
        examples,
        skipped,
        command,
        all_rounds=all_rounds,
        drop_truncated=drop_truncated,
    )
    write_examples(examples, Path(out), fmt, manifest, force, home=store.home)
    return ExportResult(Path(out), "sft", len(examples), skipped, manifest)


def export_prefs_from_revisions(
    store: Store,
    job_id: str,
    out: Path,
    *,
    drop_truncated=False,
    fmt="jsonl",
    command="",
    force=False,
) -> ExportResult:
    job, rows = _critique_rows(store, job_id)
    examples, skipped = prefs_from_revisions(rows, drop_truncated)
    if not examples:
        raise _none_left(job_id, "revised traces to turn into preferences", skipped)
    manifest = _manifest(
        "prefs",
        job,
        rows,
        examples,
        skipped,
        command,
        source="revisions",
        chosen="final revision",
        rejected="initial answer",
        drop_truncated=drop_truncated,
    )
    write_examples(examples, Path(out), fmt, manifest, force, home=store.home)
    return ExportResult(Path(out), "prefs", len(examples), skipped, manifest)


def offers(store: Store, job_id: str) -> dict[str, str | None]:
    """What a critique job has to download now, from its trace summaries (nothing loaded):
    for `sft` and `prefs`, None when there is material, else why there is not."""
    job = jobs.get_job(store, job_id)
    counts = store.trace_export_counts(job_id)
    if not counts["traces"]:
        reason = f"critique job {job_id} has no traces yet ({job.status})"
        return {"sft": reason, "prefs": reason}
    return {
        "sft": None if counts["revised"] else f"critique job {job_id} has no finished revisions",
        "prefs": None
        if counts["changed"]
        else f"critique job {job_id} has no revised traces that changed their answer",
    }


def bundle(
    store: Store, job_id: str, kind: str, all_rounds: bool = False, drop_truncated: bool = False
) -> bytes:
    """A zip of data.jsonl and manifest.json, for a download button."""
    job, rows = _critique_rows(store, job_id)
    if kind == "sft":
        examples, skipped = sft_examples(rows, all_rounds, drop_truncated)
        if not examples:
            raise _none_left(job_id, "finished revisions to export", skipped)
        extra = {"all_rounds": all_rounds}
    else:
        examples, skipped = prefs_from_revisions(rows, drop_truncated)
        if not examples:
            raise _none_left(job_id, "revised traces to turn into preferences", skipped)
        extra = {"source": "revisions"}
    manifest = _manifest(
        kind,
        job,
        rows,
        examples,
        skipped,
        "studio download",
        drop_truncated=drop_truncated,
        **extra,
    )
    return zip_examples(examples, manifest)


# -- preferences from AI labels (RL-CAI) ----------------------------------------------------


@dataclass
class PrefFilters:
    drop_ties: bool = False  # AI ties (soft label 0.5) and human tie / both-bad verdicts
    drop_inconsistent: bool = False  # AI labels whose two orders disagree (unless reviewed)
    min_confidence: float = 0.0  # AI labels below this confidence (unless reviewed)
    drop_truncated: bool = False  # pairs with an answer cut off at the token limit (even reviewed)


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


def _label_rows(store: Store, job_id: str) -> tuple[object, list[dict]]:
    return _job_rows(store, job_id, "label", "labels", "--labels needs")


def _labels_manifest(job: Job, rows, examples, skipped, filters, command) -> dict:
    first = rows[0]
    return {
        "kind": "prefs",
        "source": "labels",
        "job": job.id,
        "pairs_job": first["pairs_job"],
        "constitution": first["constitution"],
        "constitution_hash": first["constitution_hash"],
        "feedback_model": first["model"],
        "policy_model": first.get("pair_model"),
        "mode": first["mode"],
        "prompt_set": first["prompt_set"],
        "filters": {
            "drop_ties": filters.drop_ties,
            "drop_inconsistent": filters.drop_inconsistent,
            "min_confidence": filters.min_confidence,
            "drop_truncated": filters.drop_truncated,
        },
        "counts": {
            "examples": len(examples),
            "labels": len(rows),
            "human": sum(e["label_source"] == "human" for e in examples),
            **{f"skipped {k}": v for k, v in skipped.items()},
        },
        "score": "probability that chosen is better (soft label; 1.0 for a human verdict)",
        "command": command,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def labelled_prefs(
    store: Store, job_id: str, filters: PrefFilters | None = None, command: str = ""
):
    """(examples, manifest) for a label job's preference export."""
    filters = filters or PrefFilters()
    job, rows = _label_rows(store, job_id)
    examples, skipped = prefs_from_labels(rows, store.reviews(job_id), filters)
    if not examples:
        dropped = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
        raise CaiError(
            f"label job {job_id} leaves no preference pairs to export (dropped: {dropped})"
        )
    return examples, _labels_manifest(job, rows, examples, skipped, filters, command)


def export_prefs_from_labels(
    store: Store, job_id: str, out: Path, *, filters=None, fmt="jsonl", command="", force=False
) -> ExportResult:
    examples, manifest = labelled_prefs(store, job_id, filters, command)
    write_examples(examples, Path(out), fmt, manifest, force, home=store.home)
    skipped = {
        k.removeprefix("skipped "): v
        for k, v in manifest["counts"].items()
        if k.startswith("skipped ")
    }
    return ExportResult(Path(out), "prefs", len(examples), skipped, manifest)


def zip_examples(examples: list[dict], manifest: dict) -> bytes:
    """A zip of data.jsonl and manifest.json, for a download button."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "data.jsonl", "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
        )
        zf.writestr(
            "manifest.json",
            json.dumps({**manifest, "files": ["data.jsonl"], "format": "jsonl"}, indent=2),
        )
    return buf.getvalue()


def note_zip(name: str, text: str) -> bytes:
    """A zip holding one text file: what a download hands over when there was nothing to export."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, text + "\n")
    return buf.getvalue()
