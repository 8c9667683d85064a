"""Exports: training data in TRL's formats, each with a manifest saying where it came from.

- SFT: `{"messages": [...]}`, the prompt's turns then the final revision as the assistant
  turn (`all_rounds`: one example per round's revision, as the paper trained on).
- Preferences from revisions (the Hugging Face recipe's shortcut): `{"prompt": [...],
  "chosen": [final revision], "rejected": [initial answer]}`.
- Preferences from AI labels (RL-CAI), a human verdict overriding the AI's.
Formats: `jsonl` (data.jsonl), `parquet` (data.parquet) or `hf` (a `datasets` folder made
with `save_to_disk`). `manifest.json` records the job, the constitution version hash, the
model, the counts and the command that made it.

Which rows an export holds is one SQL query per export (`cai_engine.store.exports`): DuckDB
writes the file with `COPY ... TO` and counts what was left out, so a job of a million trace
rows is exported without its rows ever passing through Python. The list functions
(`sft_examples`, `prefs_from_revisions`, `prefs_from_labels`) run the same queries over rows
handed over in lists.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.home import resolve_home
from cai_engine.judge_verdict import badge, export_record
from cai_engine.store.exports import CUT_OFF_SKIP as CUT_OFF_SKIP  # re-exported
from cai_engine.store.exports import (
    ExportQuery,
    examples_from_rows,
    labels_query,
    revisions_query,
    sft_query,
)

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


def _checked_job(store: Store, job_id: str, kind: str, needs: str) -> Job:
    """A job of `kind`, its finished shards ingested."""
    job = jobs.get_job(store, job_id)
    if job.kind != kind:
        raise CaiError(f"job {job_id} is a {job.kind} job; {needs} a {kind} job")
    jobs.ingest(store, job)
    return job


def _skipped(query: ExportQuery, counts: dict[str, int]) -> dict[str, int]:
    return {why: counts[why] for why in query.skips}


# -- from a critique job's traces -----------------------------------------------------------


def sft_examples(
    rows: list[dict], all_rounds: bool = False, drop_truncated: bool = False
) -> tuple[list[dict], dict[str, int]]:
    """SFT examples from trace rows (as `Store.traces` returns them), and what was skipped.
    `drop_truncated` leaves out revisions that stopped at the token limit, mid-text."""
    query = sft_query(all_rounds, drop_truncated)
    examples, counts = examples_from_rows(query, steps=rows)
    return examples, _skipped(query, counts)


def prefs_from_revisions(
    rows: list[dict], drop_truncated: bool = False
) -> tuple[list[dict], dict[str, int]]:
    """`drop_truncated` leaves out traces whose initial answer or final revision was cut off."""
    query = revisions_query(drop_truncated)
    examples, counts = examples_from_rows(query, steps=rows)
    return examples, _skipped(query, counts)


def _none_left(job_id: str, what: str, skipped: dict[str, int]) -> CaiError:
    dropped = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
    return CaiError(
        f"critique job {job_id} has no {what}" + (f" (left out: {dropped})" if dropped else "")
    )


_NONE_LEFT = {
    "sft": "finished revisions to export",
    "revisions": "revised traces to turn into preferences",
}


def _traces_manifest(
    store: Store, job_id: str, query: ExportQuery, command: str, **extra
) -> tuple[dict, dict[str, int]]:
    """The manifest of a critique job's export (counts by SQL), and what was skipped. Raises
    CaiError when the job has no traces, or the export would hold no example."""
    job = _checked_job(store, job_id, "critique", "this export needs")
    counts = store.export_counts(query, job_id)
    if not counts["units"]:
        raise CaiError(f"critique job {job_id} has no traces yet ({job.status})")
    skipped = _skipped(query, counts)
    if not counts["examples"]:
        raise _none_left(job_id, _NONE_LEFT[query.kind], skipped)
    lineage = store.trace_lineage(job_id) or {}
    manifest = {
        "kind": "sft" if query.kind == "sft" else "prefs",
        "job": job.id,
        "constitution": lineage.get("constitution"),
        "constitution_hash": lineage.get("constitution_hash"),
        "model": lineage.get("model"),
        "prompt_set": lineage.get("prompt_set"),
        "counts": {
            "examples": counts["examples"],
            "traces": counts["units"],
            **{f"skipped {k}": v for k, v in skipped.items()},
        },
        "command": command,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    return manifest, skipped


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
    query = sft_query(all_rounds, drop_truncated)
    manifest, skipped = _traces_manifest(
        store, job_id, query, command, all_rounds=all_rounds, drop_truncated=drop_truncated
    )
    write_export(store, query, job_id, Path(out), fmt, manifest, force)
    return ExportResult(Path(out), "sft", manifest["counts"]["examples"], skipped, manifest)


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
    query = revisions_query(drop_truncated)
    manifest, skipped = _traces_manifest(
        store,
        job_id,
        query,
        command,
        source="revisions",
        chosen="final revision",
        rejected="initial answer",
        drop_truncated=drop_truncated,
    )
    write_export(store, query, job_id, Path(out), fmt, manifest, force)
    return ExportResult(Path(out), "prefs", manifest["counts"]["examples"], skipped, manifest)


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
    """A zip of data.jsonl and manifest.json, for a download button (built when it is
    clicked: DuckDB writes the file into a temporary folder, which is then zipped)."""
    if kind == "sft":
        query, extra = sft_query(all_rounds, drop_truncated), {"all_rounds": all_rounds}
    else:
        query, extra = revisions_query(drop_truncated), {"source": "revisions"}
    manifest, _ = _traces_manifest(
        store, job_id, query, "studio download", drop_truncated=drop_truncated, **extra
    )
    return zip_export(store, query, job_id, manifest)


# -- preferences from AI labels (RL-CAI) ----------------------------------------------------


@dataclass
class PrefFilters:
    drop_ties: bool = False  # AI ties (soft label 0.5) and human tie / both-bad verdicts
    drop_inconsistent: bool = False  # AI labels whose two orders disagree (unless reviewed)
    min_confidence: float = 0.0  # AI labels below this confidence (unless reviewed)
    drop_truncated: bool = False  # pairs with an answer cut off at the token limit (even reviewed)

    def query(self) -> ExportQuery:
        return labels_query(
            self.drop_ties, self.drop_inconsistent, self.min_confidence, self.drop_truncated
        )


def prefs_from_labels(
    labels: list[dict], reviews: list[dict], filters: PrefFilters | None = None
) -> tuple[list[dict], dict[str, int]]:
    """TRL preference rows from AI labels, with human verdicts overriding the AI.

    `score` is the probability that `chosen` is the better response: max(p, 1 - p) of the
    AI's soft label p, or 1.0 for a human A/B verdict. A tie (an AI soft label of exactly
    0.5, or a human "tie" or "both bad") is kept with score 0.5 and response A as `chosen`,
    which a soft-label loss reads as "equally good"; `drop_ties` leaves ties out. The
    confidence and consistency filters apply to AI labels only: a human verdict is kept.
    `reviews` come oldest first (as `Store.reviews` returns them): the latest verdict counts.
    """
    query = (filters or PrefFilters()).query()
    examples, counts = examples_from_rows(query, labels=labels, reviews=reviews)
    return examples, _skipped(query, counts)


def labelled_prefs_counts(
    store: Store, job_id: str, filters: PrefFilters | None = None
) -> dict[str, int]:
    """A label job's preference export's counts, as its manifest gives them, from SQL (no
    example is read): what the Labels page shows on every run. Raises CaiError when the job
    has no labels or the filters leave none."""
    return _labelled_counts(store, job_id, filters)[0]


def _labelled_counts(
    store: Store, job_id: str, filters: PrefFilters | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """`labelled_prefs_counts`, and the examples kept per label source (human, ai,
    contrastive), from the same SQL pass."""
    query = (filters or PrefFilters()).query()
    job = _checked_job(store, job_id, "label", "--labels needs")
    counts = store.export_counts(query, job_id)
    if not counts["units"]:
        raise CaiError(f"label job {job_id} has no labels yet ({job.status})")
    skipped = _skipped(query, counts)
    if not counts["examples"]:
        dropped = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
        raise CaiError(
            f"label job {job_id} leaves no preference pairs to export (dropped: {dropped})"
        )
    return {
        "examples": counts["examples"],
        "labels": counts["units"],
        "human": counts["human"],
        **{f"skipped {k}": v for k, v in skipped.items()},
    }, counts["by_source"]


def labelled_prefs_manifest(
    store: Store,
    job_id: str,
    filters: PrefFilters | None = None,
    command: str = "",
    *,
    require_qualified_judge: bool = False,
) -> dict:
    """The manifest of a label job's preference export (its counts from SQL), with the judge
    check behind its labels. `require_qualified_judge` refuses labels from a judge that is not
    qualified (or never checked); labels by construction have no judge and pass."""
    filters = filters or PrefFilters()
    counts, by_source = _labelled_counts(store, job_id, filters)
    first = store.label_lineage(job_id) or {}
    job = jobs.get_job(store, job_id)
    # no judge behind labels by construction, nor behind a dataset's own (imported) labels
    construction = job.config.get("source") in ("construction", "dataset")
    check = None if construction else store.judge_check_for_job(job_id)
    if require_qualified_judge and not construction and (check is None or not check.qualified):
        said = badge(check) if check else "its judge was never checked"
        raise CaiError(
            f"label job {job_id} was labelled by {job.config.get('model')}, and {said}; "
            "--require-qualified-judge exports only labels from a qualified judge (run "
            "`cai judge check` with a stronger judge, or export without the flag)"
        )
    return {
        "kind": "prefs",
        "source": "labels",
        "job": job_id,
        "pairs_job": first.get("pairs_job"),
        "constitution": first.get("constitution"),
        "constitution_hash": first.get("constitution_hash"),
        "feedback_model": first.get("model"),
        "policy_model": first.get("pair_model"),
        "mode": first.get("mode"),
        # whether the feedback model could judge: its check on the gold set, and the verdict
        "judge_check": _NO_JUDGE.get(job.config.get("source")) or export_record(check),
        "prompt_set": first.get("prompt_set"),
        "filters": {
            "drop_ties": filters.drop_ties,
            "drop_inconsistent": filters.drop_inconsistent,
            "min_confidence": filters.min_confidence,
            "drop_truncated": filters.drop_truncated,
        },
        "counts": counts,
        # the examples per label source: human (a verdict overrides), ai (a judge),
        # contrastive (by construction, from the pairs' known better side)
        "label_sources": by_source,
        "score": "probability that chosen is better (soft label; 1.0 for a human verdict; the"
        " job's score for a label by construction)",
        "command": command,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# labels no judge gave: by construction, or a dataset's own (imported with its pairs)
_NO_JUDGE = {
    "construction": "by construction: no judge",
    "dataset": "imported with the pairs: no judge",
}


def labelled_prefs(
    store: Store, job_id: str, filters: PrefFilters | None = None, command: str = ""
) -> tuple[list[dict], dict]:
    """(examples, manifest) for a label job's preference export, the examples in a list (for
    callers that want them in memory; exports and downloads write them with COPY)."""
    filters = filters or PrefFilters()
    manifest = labelled_prefs_manifest(store, job_id, filters, command)
    return store.export_examples(filters.query(), job_id), manifest


def labelled_prefs_zip(
    store: Store, job_id: str, filters: PrefFilters | None = None, command: str = ""
) -> bytes:
    """A zip of a label job's preferences (data.jsonl) and manifest.json, for a download."""
    filters = filters or PrefFilters()
    manifest = labelled_prefs_manifest(store, job_id, filters, command)
    return zip_export(store, filters.query(), job_id, manifest)


def export_prefs_from_labels(
    store: Store,
    job_id: str,
    out: Path,
    *,
    filters=None,
    fmt="jsonl",
    command="",
    force=False,
    require_qualified_judge=False,
) -> ExportResult:
    filters = filters or PrefFilters()
    manifest = labelled_prefs_manifest(
        store, job_id, filters, command, require_qualified_judge=require_qualified_judge
    )
    write_export(store, filters.query(), job_id, Path(out), fmt, manifest, force)
    skipped = {
        k.removeprefix("skipped "): v
        for k, v in manifest["counts"].items()
        if k.startswith("skipped ")
    }
    return ExportResult(Path(out), "prefs", manifest["counts"]["examples"], skipped, manifest)


# -- writing --------------------------------------------------------------------------------


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


def _manifest_text(manifest: dict, files: list[str], fmt: str) -> str:
    return json.dumps({**manifest, "files": files, "format": fmt}, indent=2)


def write_export(
    store: Store,
    query: ExportQuery,
    job_id: str,
    out: Path,
    fmt: str,
    manifest: dict,
    force: bool = False,
) -> list[str]:
    """Write the export into folder `out` (DuckDB's COPY writes the data file), with its
    manifest. It is written beside `out` first, then renamed: it appears whole or not at all."""
    if fmt not in FORMATS:
        raise CaiError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise CaiError(f"{out} is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise CaiError(
                f"{out} already exists and is not empty; choose another --out or pass --force"
            )
        _check_replaceable(out, store.home)
        shutil.rmtree(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if fmt == "jsonl":
            store.copy_export(query, job_id, tmp / "data.jsonl", "jsonl")
            files = ["data.jsonl"]
        elif fmt == "parquet":
            store.copy_export(query, job_id, tmp / "data.parquet", "parquet")
            files = ["data.parquet"]
        else:
            _write_dataset(store, query, job_id, tmp)
            files = ["dataset/"]
        (tmp / "manifest.json").write_text(_manifest_text(manifest, files, fmt))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def _write_dataset(store: Store, query: ExportQuery, job_id: str, folder: Path) -> None:
    """`folder/dataset`, a `datasets` folder: DuckDB writes Parquet, which `datasets` reads in
    batches into its Arrow cache (kept in a scratch folder, removed after) and saves."""
    import datasets

    work = folder / ".work"
    work.mkdir()
    try:
        store.copy_export(query, job_id, work / "data.parquet", "parquet")
        dataset = datasets.Dataset.from_parquet(
            str(work / "data.parquet"), cache_dir=str(work / "cache")
        )
        dataset.save_to_disk(str(folder / "dataset"))
        del dataset
    finally:
        shutil.rmtree(work, ignore_errors=True)


def zip_export(store: Store, query: ExportQuery, job_id: str, manifest: dict) -> bytes:
    """A zip of data.jsonl (written by COPY into a temporary folder) and manifest.json."""
    import io
    import zipfile

    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="cai-export-") as tmp:
        data = Path(tmp) / "data.jsonl"
        store.copy_export(query, job_id, data, "jsonl")
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(data, "data.jsonl")
            zf.writestr("manifest.json", _manifest_text(manifest, ["data.jsonl"], "jsonl"))
    return buf.getvalue()


def zip_examples(examples: list[dict], manifest: dict) -> bytes:
    """A zip of data.jsonl and manifest.json from examples in a list."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "data.jsonl", "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
        )
        zf.writestr("manifest.json", _manifest_text(manifest, ["data.jsonl"], "jsonl"))
    return buf.getvalue()


def note_zip(name: str, text: str) -> bytes:
    """A zip holding one text file: what a download hands over when there was nothing to export."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, text + "\n")
    return buf.getvalue()
