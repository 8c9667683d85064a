"""External pairs (`cai import`): preference data made elsewhere, brought in to be audited,
judged, reviewed, exported and trained on like pairs made here.

Three formats, each read from JSONL, Parquet or a `datasets` folder saved with `save_to_disk`
(annotated pairs: one JSON file):
- `hh`: HH-RLHF transcripts, `"\\n\\nHuman: … \\n\\nAssistant: …"`, in `chosen` / `rejected`
  columns (pairs), or a single `transcript` column (a prompt set only);
- `prefs`: TRL preference rows, `prompt` / `chosen` / `rejected`, standard (strings) or
  conversational (message lists), with an optional `score` (P(chosen is better)); rows with
  no `prompt` whose chosen and rejected share their start have it extracted (TRL's
  `extract_prompt`);
- `annotated`: the ICAI / feedback-forensics annotated-pairs JSON: `metadata`, `annotators`
  (each with a `description` and a `type`) and `comparisons` (`prompt`, `text_a` / `text_b`,
  or format 2.0's `response_a` / `response_b`, and per-annotator `annotations`).

An import is a `pairs` job (`pairs.source = 'dataset'`, config `imported`) over a new prompt
set made from the conversations (each up to its last human turn), plus one `label` job per
annotator (`source = 'dataset'`, `labels.label_source = 'dataset'`): chosen/rejected data has
one annotator, the dataset; annotated pairs have theirs. Both jobs are recorded as finished,
their rows written as shards in their run folders and ingested like any job's, and the table
`imports` says where they came from. Chosen is shown as A or B by a seeded coin per pair (so
a judge does not always see it first), and the pair records which side was chosen
(`preferred`): a judge label job on the pairs then shows its agreement with the dataset.

Every row is checked before anything is written; a bad row is named by file, row and field,
and nothing is imported unless `skip_bad` (then the skipped rows are reported).

`export_annotated` writes any label job, with its people's latest verdicts, back out as
annotated pairs (format 1.0), so the results can be analysed with those tools; importing the
file gives the same pairs and labels.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.home import runs_dir
from cai_engine.labels import given_label_row
from cai_engine.pairs import pair_flags
from cai_engine.prompts import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    BadRow,
    Prompt,
    PromptImportError,
    assign_split,
    prompt_id_for,
    read_rows,
)
from cai_engine.runs import RunFolder
from cai_engine.seeding import seeded_rng

if TYPE_CHECKING:
    from cai_engine.store import Store

FORMATS = ("hh", "prefs", "annotated")
FORMAT_NAMES = {
    "hh": "HH-RLHF transcripts",
    "prefs": "TRL preference rows",
    "annotated": "annotated pairs",
}
SOURCE = "dataset"  # the pairs' `source`, the labels' `label_source`, their label job's source
ANNOTATED_VERSION = "1.0"  # what `export_annotated` writes
PREF_KEY = "pref"
PREFS = {"text_a": "A", "text_b": "B", "a": "A", "b": "B"}  # 1.0 and 2.0 spellings
SHARD_ROWS = 10_000
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass
class ExternalPair:
    """One row's pair, as read: the prompt conversation, the two answers and their labels."""

    where: str  # "line 3", "row 3", "comparisons[2]"
    messages: list[dict]
    first: str  # chosen (hh, prefs) or text_a (annotated)
    second: str  # rejected or text_b
    labels: dict[str, float]  # annotator id -> P(first is better); absent: no label
    keep_order: bool = False  # annotated: text_a is A; else a seeded coin decides
    preferred_first: bool | None = True  # which side the source prefers (None: neither)
    external_id: str | None = None


@dataclass
class Annotator:
    id: str
    name: str | None
    description: str
    type: str


@dataclass
class ImportResult:
    file: str
    format: str
    name: str
    sha256: str
    rows: int  # rows (comparisons) read
    prompts: int = 0  # prompts in the new prompt set
    pairs: int = 0
    pairs_job: str | None = None
    label_jobs: dict[str, str] = field(default_factory=dict)  # annotator id -> label job
    skipped: list[BadRow] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.rows} rows read from {self.file} ({FORMAT_NAMES[self.format]})"]
        if self.pairs_job:
            parts.append(f"{self.pairs} pairs in pairs job {self.pairs_job}")
        parts.append(f"{self.prompts} prompts in prompt set '{self.name}'")
        for annotator, job in self.label_jobs.items():
            parts.append(f"labels of {annotator} in label job {job}")
        if self.skipped:
            parts.append(f"{len(self.skipped)} bad rows skipped")
        lines = ["; ".join(parts)]
        lines += [f"  skipped {self.file}: {b}" for b in self.skipped[:50]]
        if len(self.skipped) > 50:
            lines.append(f"  ... and {len(self.skipped) - 50} more")
        return "\n".join(lines)


class _Bad(ValueError):
    """A bad field of one row: `field` and what is wrong with it."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"field '{field_name}': {message}")


# -- reading the formats --------------------------------------------------------------------


def parse_transcript(text, field_name: str) -> list[dict]:
    """An HH-RLHF transcript as messages. Raises `_Bad` naming `field_name`."""
    if not isinstance(text, str):
        raise _Bad(field_name, f"expected a transcript string, got {type(text).__name__}")
    parts = _TURN.split(text)
    if parts[0].strip():
        raise _Bad(field_name, "text before the first 'Human:' turn (a transcript starts with"
                               " '\\n\\nHuman: ')")  # fmt: skip
    turns = [
        {"role": _ROLES[role], "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if not turns:
        raise _Bad(field_name, "no '\\n\\nHuman:' turn")
    return turns


def _hh_pair(where: str, record: dict) -> ExternalPair:
    chosen = parse_transcript(record.get("chosen"), "chosen")
    rejected = parse_transcript(record.get("rejected"), "rejected")
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant":
            raise _Bad(name, "no 'Assistant:' turn after the last 'Human:' turn")
        if len(turns) < 2 or turns[-2]["role"] != "user":
            raise _Bad(name, "the last 'Assistant:' turn does not answer a 'Human:' turn")
    if chosen[:-1] != rejected[:-1]:
        raise _Bad("rejected", "its conversation before the last 'Assistant:' turn differs from"
                               " chosen's")  # fmt: skip
    return ExternalPair(
        where, chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], {SOURCE: 1.0}
    )


def _hh_prompt(record: dict) -> list[dict]:
    turns = parse_transcript(record.get("transcript"), "transcript")
    last_human = max((i for i, t in enumerate(turns) if t["role"] == "user"), default=None)
    if last_human is None:
        raise _Bad("transcript", "no 'Human:' turn")
    return turns[: last_human + 1]


def _is_conversational(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value)


def _messages(value, field_name: str) -> list[dict]:
    out = []
    for i, m in enumerate(value):
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise _Bad(field_name, f"message {i} is not a {{role, content}} turn")
        out.append({"role": role, "content": content})
    return out


def _answer(value, field_name: str, conversational: bool) -> str:
    if not conversational:
        if not isinstance(value, str):
            raise _Bad(field_name, f"expected a string, got {type(value).__name__}")
        return value
    turns = _messages(value, field_name)
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        raise _Bad(field_name, "expected one assistant turn")
    return turns[0]["content"]


def _prefs_pair(where: str, record: dict, style: list) -> ExternalPair:
    """One TRL preference row. `style` holds the first row's style (conversational or
    standard) once known: every row must share it."""
    for name in ("chosen", "rejected"):
        if name not in record or record[name] is None:
            raise _Bad(name, "missing")
    conversational = _is_conversational(record["chosen"])
    if style and style[0] != conversational:
        kind = "conversational" if conversational else "standard"
        first = "conversational" if style[0] else "standard"
        raise _Bad("chosen", f"a {kind} row among {first} ones (mixed conversational and"
                             " standard rows)")  # fmt: skip
    if not style:
        style.append(conversational)
    if _is_conversational(record["rejected"]) != conversational:
        raise _Bad("rejected", "not the same style (conversational or standard) as chosen")
    prompt = record.get("prompt")
    if prompt is None:  # implicit prompt: the start chosen and rejected share
        from trl.data_utils import extract_prompt

        if conversational:
            _messages(record["chosen"], "chosen")
            _messages(record["rejected"], "rejected")
        split = extract_prompt({"chosen": record["chosen"], "rejected": record["rejected"]})
        prompt, chosen, rejected = split["prompt"], split["chosen"], split["rejected"]
        if not prompt:
            raise _Bad("prompt", "missing, and chosen and rejected share no start to take it from")
    else:
        chosen, rejected = record["chosen"], record["rejected"]
    if conversational:
        if not _is_conversational(prompt):
            raise _Bad("prompt", "a string in a conversational row (expected a message list)")
        messages = _messages(prompt, "prompt")
        if not messages or messages[-1]["role"] != "user":
            raise _Bad("prompt", "the conversation does not end with a user turn")
    else:
        if not isinstance(prompt, str):
            raise _Bad("prompt", "a message list in a standard row (expected a string)")
        messages = [{"role": "user", "content": prompt}]
    a = _answer(chosen, "chosen", conversational)
    b = _answer(rejected, "rejected", conversational)
    score = record.get("score")
    if score is None:
        p = 1.0
    elif isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise _Bad("score", f"expected P(chosen is better) between 0 and 1, got {score!r}")
    else:
        p = float(score)
    return ExternalPair(where, messages, a, b, {SOURCE: p})


def _read_table(path: str, fmt: str) -> tuple[int, list, list[BadRow], str]:
    """(rows read, ExternalPairs or prompt conversations, bad rows, mode) of an hh or prefs
    file; mode is "pairs" or "prompts" (hh transcripts)."""
    rows, out, bad = 0, [], []
    mode, style = None, []
    for where, record in read_rows(path):
        rows += 1
        if isinstance(record, BadRow):
            bad.append(record)
            continue
        if not isinstance(record, dict):
            bad.append(BadRow(where, "not an object"))
            continue
        if mode is None:
            mode = "prompts" if fmt == "hh" and "chosen" not in record else "pairs"
            if fmt == "hh" and mode == "prompts" and "transcript" not in record:
                raise CaiError(
                    f"{path}: {where}: neither 'chosen'/'rejected' nor 'transcript' columns; "
                    "an HH-RLHF file has one or the other"
                )
        try:
            if fmt == "prefs":
                item = _prefs_pair(where, record, style)
            elif mode == "pairs":
                item = _hh_pair(where, record)
            else:
                item = _hh_prompt(record)
            if mode == "pairs" and item.first.strip() == item.second.strip():
                raise _Bad("rejected", "the same answer as chosen (both sides identical)")
        except _Bad as e:
            bad.append(BadRow(where, str(e)))
            continue
        out.append(item)
    return rows, out, bad, mode or "pairs"


def _annotated_text(comparison: dict, side: str) -> str:
    text = comparison.get(f"text_{side}")
    if text is None and isinstance(comparison.get(f"response_{side}"), dict):
        text = comparison[f"response_{side}"].get("text")  # format 2.0
    if not isinstance(text, str):
        raise _Bad(f"text_{side}", "missing (or not a string)")
    return text


def _annotated_prompt(value) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if _is_conversational(value) and value:
        messages = _messages(value, "prompt")
        if messages[-1]["role"] != "user":
            raise _Bad("prompt", "the conversation does not end with a user turn")
        return messages
    raise _Bad("prompt", "missing (a string or a message list)")


def _annotation_label(annotation, annotator: str) -> float | None:
    """P(text_a is better) from one annotation; None when it states no preference."""
    where = f"annotations.{annotator}"
    if not isinstance(annotation, dict) or PREF_KEY not in annotation:
        raise _Bad(where, f"expected an object with '{PREF_KEY}'")
    pref = annotation[PREF_KEY]
    if pref is None:
        return 0.5 if annotation.get("no_pref_reason") == "tie" else None
    if pref not in PREFS:
        raise _Bad(
            f"{where}.{PREF_KEY}",
            f"{pref!r} is not a preference (one of {', '.join(map(repr, PREFS))} or null)",
        )
    soft = annotation.get("soft_label")  # ours: the exact label, kept on a round trip
    if soft is not None:
        if isinstance(soft, bool) or not isinstance(soft, int | float) or not 0 <= soft <= 1:
            raise _Bad(f"{where}.soft_label", f"expected a probability, got {soft!r}")
        return float(soft)
    return 1.0 if PREFS[pref] == "A" else 0.0


def _read_annotated(path: str) -> tuple[dict, list[Annotator], int, list, list[BadRow]]:
    """(metadata, annotators, comparisons read, ExternalPairs, bad rows) of an annotated-pairs
    file. A problem with the file as a whole (not JSON, no annotators, an annotator no
    comparison uses) raises at once."""
    p = Path(path)
    if not p.is_file():
        raise CaiError(f"{path}: no such file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaiError(f"{path}: not an annotated-pairs JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("comparisons"), list):
        raise CaiError(f"{path}: expected an object with 'metadata', 'annotators' and a"
                       " 'comparisons' list")  # fmt: skip
    metadata = data.get("metadata") or {}
    raw = data.get("annotators")
    if not isinstance(raw, dict) or not raw:
        raise CaiError(f"{path}: 'annotators' must be an object of annotators by id")
    annotators = []
    for aid, a in raw.items():
        for key in ("description", "type"):
            if not isinstance(a, dict) or not isinstance(a.get(key), str):
                raise CaiError(f"{path}: annotators.{aid}: field '{key}' missing (each annotator"
                               " has a description and a type)")  # fmt: skip
        annotators.append(Annotator(str(aid), a.get("name"), a["description"], a["type"]))
    known = {a.id for a in annotators}
    default = metadata.get("default_annotator")
    if default is not None and default not in known:
        raise CaiError(f"{path}: metadata.default_annotator '{default}' is not among the"
                       " annotators")  # fmt: skip
    pairs, bad, used = [], [], set()
    for i, c in enumerate(data["comparisons"]):
        where = f"comparisons[{i}]"
        try:
            if not isinstance(c, dict):
                raise _Bad("comparison", "not an object")
            messages = _annotated_prompt(c.get("prompt"))
            a, b = _annotated_text(c, "a"), _annotated_text(c, "b")
            if a.strip() == b.strip():
                raise _Bad("text_b", "the same answer as text_a (both sides identical)")
            annotations = c.get("annotations")
            if not isinstance(annotations, dict):
                raise _Bad("annotations", "missing (an object of annotations by annotator id)")
            labels = {}
            for aid, annotation in annotations.items():
                if aid not in known:
                    raise _Bad(f"annotations.{aid}", "not one of the file's annotators")
                label = _annotation_label(annotation, aid)
                if label is not None:
                    labels[aid] = label
            used.update(annotations)
        except _Bad as e:
            bad.append(BadRow(where, str(e)))
            continue
        ref = labels.get(default) if default else None
        pairs.append(
            ExternalPair(
                where,
                messages,
                a,
                b,
                labels,
                keep_order=True,
                preferred_first=None if ref is None or ref == 0.5 else ref > 0.5,
                external_id=str(c["id"]) if c.get("id") is not None else None,
            )
        )
    unused = [a.id for a in annotators if a.id not in used]
    if unused:
        raise CaiError(f"{path}: annotators.{unused[0]}: no comparison uses this annotator"
                       f"{f' (nor {len(unused) - 1} more)' if len(unused) > 1 else ''}")  # fmt: skip
    return metadata, annotators, len(data["comparisons"]), pairs, bad


def file_sha256(path: str | Path) -> str:
    """The file's sha256; a folder's over its files' relative names and bytes, in name order."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


# -- writing --------------------------------------------------------------------------------


def _record_job(
    store: Store,
    kind: str,
    config: dict,
    label: str,
    table: str,
    make_rows,
    source: dict,
) -> str:
    """A finished job holding the rows `make_rows(job_id)` of `table`, as a job that ran would
    leave it: a run folder with its config, shards, events and status, a succeeded row, the
    shards ingested."""
    cfg = jobs.validate_config(kind, config)
    job_id = jobs.new_job_id(kind)
    while (runs_dir(store.home) / job_id).exists():  # two in the same second: draw again
        job_id = jobs.new_job_id(kind)
    rows = make_rows(job_id)
    run = RunFolder(runs_dir(store.home) / job_id)
    clean = cfg.model_dump(mode="json")
    run.create(clean)
    for i in range(0, len(rows), SHARD_ROWS):
        run.write_shard(table, rows[i : i + SHARD_ROWS])
    run.event("imported", **source, rows=len(rows))
    run.metric(**{table: len(rows)})
    run.write_status(state="succeeded", done=len(rows), total=len(rows), unit="pairs")
    store.insert_job(job_id, kind, clean, str(run.path), label)
    now = datetime.now()
    store.update_job(job_id, status="succeeded", started_at=now, finished_at=now, attempts=1)
    jobs.ingest(store, jobs.get_job(store, job_id))
    return job_id


def _check_name(store: Store, name: str) -> None:
    if not _NAME.match(name or ""):
        raise CaiError(
            f"'{name}' is not a valid name for the import's prompt set; use lowercase letters, "
            "digits, '-' or '_'"
        )
    if store.prompt_set_exists(name):
        raise CaiError(f"prompt set '{name}' already exists; choose another --name")


def import_pairs(
    store: Store,
    path: str | Path,
    fmt: str,
    name: str,
    *,
    skip_bad: bool = False,
    seed: int = 0,
) -> ImportResult:
    """Import `path` in format `fmt` (`FORMATS`) as prompt set `name`, a pairs job and a label
    job per annotator (see the module docstring). Nothing is written while any row is bad,
    unless `skip_bad`."""
    if fmt not in FORMATS:
        raise CaiError(f"unknown import format '{fmt}'; use one of {', '.join(FORMATS)}")
    label = str(path)
    if not Path(label).exists():
        raise CaiError(f"{label}: no such file or folder")
    _check_name(store, name)
    metadata = None
    if fmt == "annotated":
        metadata, annotators, rows, items, bad = _read_annotated(label)
        mode = "pairs"
    else:
        rows, items, bad, mode = _read_table(label, fmt)
        annotators = [
            Annotator(
                SOURCE,
                None,
                f"the side the file marks as chosen ({FORMAT_NAMES[fmt]})",
                SOURCE,
            )
        ]
    if bad and not skip_bad:
        raise PromptImportError(label, bad)
    if not items:
        raise CaiError(f"{label}: no valid rows to import")
    result = ImportResult(label, fmt, name, file_sha256(label), rows, skipped=bad)
    source = {"file": label, "format": fmt, "sha256": result.sha256}
    described = f"{FORMAT_NAMES[fmt]} from {label} (sha256 {result.sha256[:12]})"
    # the prompt set: each conversation up to its last human turn
    messages = items if mode == "prompts" else [p.messages for p in items]
    prompts: dict[str, Prompt] = {}
    for m in messages:
        pid = prompt_id_for(m)
        if pid not in prompts:
            split = assign_split(pid, DEFAULT_SPLIT_SEED, DEFAULT_TEST_FRACTION)
            prompts[pid] = Prompt(pid, m, split=split)
    store.add_prompts(
        name,
        list(prompts.values()),
        description=f"imported: {described}",
        source=label,
        split_seed=DEFAULT_SPLIT_SEED,
        test_fraction=DEFAULT_TEST_FRACTION,
    )
    result.prompts = len(prompts)
    if mode == "prompts":
        return result
    pair_rows, numbered = _pair_rows(items, name, seed)

    def with_job(job_id: str) -> list[dict]:
        for r in pair_rows:
            r["job_id"] = job_id
        return pair_rows

    config = {"prompts": name, "imported": label, "seed": seed}
    pairs_job = _record_job(store, "pairs", config, name, "pairs", with_job, source)
    result.pairs_job, result.pairs = pairs_job, len(pair_rows)
    records = []
    for a in annotators:
        model = SOURCE if fmt != "annotated" else f"{SOURCE}:{a.name or a.id}"
        labelled = [
            (pair, p_a if not swapped else 1.0 - p_a)
            for pair, item, swapped in numbered
            if (p_a := item.labels.get(a.id)) is not None
        ]
        if not labelled:
            continue  # an annotator whose every annotation states no preference

        def label_rows(job_id: str, labelled=labelled, model=model) -> list[dict]:
            return [
                given_label_row(pair, p_a, job_id=job_id, model=model, source=SOURCE)
                for pair, p_a in labelled
            ]

        job = _record_job(
            store,
            "label",
            {"pairs": pairs_job, "source": SOURCE, "annotator": a.id, "judge_check": False},
            f"{name} · {a.name or a.id}" if fmt == "annotated" else name,
            "labels",
            label_rows,
            source,
        )
        result.label_jobs[a.name or a.id] = job
        records.append(
            {
                "labels_job": job,
                "pairs_job": pairs_job,
                "annotator_id": a.id,
                "name": a.name,
                "description": a.description,
                "type": a.type,
            }
        )
    store.record_import(
        {
            **source,
            "pairs_job": pairs_job,
            "rows": rows,
            "pairs": len(pair_rows),
            "skipped": len(bad),
            "prompt_set": name,
            "metadata": metadata,
        },
        records,
    )
    return result


def _pair_rows(items: list[ExternalPair], prompt_set: str, seed: int):
    """The `pairs` rows (job id filled in later), and per row (its pair row, its item, whether
    its first side was shown as B)."""
    count: dict[str, int] = {}
    rows, numbered = [], []
    for item in items:
        pid = prompt_id_for(item.messages)
        n = count.get(pid, 0)
        count[pid] = n + 1
        swapped = not item.keep_order and seeded_rng(seed, "import-side", pid, n).random() < 0.5
        refs = ("text_a", "text_b") if item.keep_order else ("chosen", "rejected")
        sides = [(refs[0], item.first), (refs[1], item.second)]
        if swapped:
            sides.reverse()
        (a_ref, a), (b_ref, b) = sides
        preferred = None
        if item.preferred_first is not None:
            preferred = "A" if item.preferred_first != swapped else "B"
        row = {
            "job_id": "",
            "prompt_set": prompt_set,
            "prompt_id": pid,
            "pair": n,
            "source": SOURCE,
            "source_job": None,
            "a_ref": a_ref,
            "b_ref": b_ref,
            "response_a": a,
            "response_b": b,
            "model": SOURCE,
            "sampling": "{}",
            "seed_a": 0,
            "seed_b": 0,
            "constitution_hash": None,
            "flags": pair_flags(a, b),
            "preferred": preferred,
            "principle_id": None,
            "prompts_derived": None,
            "external_id": item.external_id,
        }
        rows.append(row)
        numbered.append((row, item, swapped))
    return rows, numbered


# -- lineage in words -----------------------------------------------------------------------


def describe_import(record: dict) -> str:
    """E.g. "imported from data/hh.jsonl (HH-RLHF transcripts, 200 rows, sha256 1a2b3c4d5e6f)
    on 2026-12-03 21:40; 2 bad rows skipped"."""
    when = record["created_at"]
    when = when.strftime("%Y-%m-%d %H:%M") if hasattr(when, "strftime") else str(when)
    text = (
        f"imported from {record['file']} ({FORMAT_NAMES.get(record['format'], record['format'])}"
        f", {record['rows']} rows, sha256 {record['sha256'][:12]}) on {when}"
    )
    if record.get("skipped"):
        text += f"; {record['skipped']} bad rows skipped"
    return text


def describe_annotator(annotator: dict) -> str:
    """E.g. "the dataset: the side the file marks as chosen" or "annotator 'gpt4' (principle):
    Select the response that ...". Descriptions longer than a line are cut."""
    if annotator["type"] == SOURCE:
        return f"the dataset: {annotator['description']}"
    description = " ".join(annotator["description"].split())
    if len(description) > 160:
        description = description[:159] + "…"
    who = annotator["name"] or annotator["annotator_id"]
    return f"annotator '{who}' ({annotator['type']}): {description}"


# -- export as annotated pairs --------------------------------------------------------------


def _short_hash(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()[:8]


VERDICT_PREFS = {"A": "text_a", "B": "text_b"}


def _pref(winner: str | None, soft: float | None = None) -> dict:
    if soft is None and winner is None:
        return {PREF_KEY: None, "no_pref_reason": "invalid"}
    if winner in VERDICT_PREFS:
        out = {PREF_KEY: VERDICT_PREFS[winner]}
    else:  # a tie, or a person's "both bad"
        out = {PREF_KEY: None, "no_pref_reason": "tie" if winner == "tie" else winner}
    if soft is not None:
        out["soft_label"] = soft
    return out


def annotated_pairs(store: Store, labels_job: str) -> dict:
    """Label job `labels_job` with its people's latest verdicts, as annotated pairs (format
    1.0): the job is the default annotator, each reviewer a `human` one."""
    job = jobs.get_job(store, labels_job)
    if job.kind != "label":
        raise CaiError(f"job {labels_job} is a {job.kind} job; the export needs a label job")
    jobs.ingest(store, job)
    labels = store.labels(labels_job)
    if not labels:
        raise CaiError(f"label job {labels_job} has no labels yet ({job.status})")
    imported = store.import_annotator(labels_job)
    cfg = job.config
    if imported:
        judge_id = imported["annotator_id"]
        judge = {"description": imported["description"], "type": imported["type"]}
        if imported["name"]:
            judge = {"name": imported["name"], **judge}
    else:
        how = (
            "by construction (contrastive pairs)"
            if cfg.get("source") == "construction"
            else f"judged by {cfg.get('model')} under constitution {cfg.get('constitution')}"
        )
        judge_id = _short_hash(f"cai-studio label job {labels_job}")
        judge = {
            "name": labels_job,
            "description": f"CAI Studio label job {labels_job}: soft AI labels {how}",
            "type": "unknown",
        }
    annotators = {judge_id: judge}
    verdicts: dict[tuple[str, int], dict[str, str]] = {}
    for v in store.latest_verdicts(labels_job):
        rid = _short_hash(f"cai-studio reviewer {v['reviewer']}")
        annotators.setdefault(
            rid,
            {
                "name": v["reviewer"],
                "description": f"Human reviewer '{v['reviewer']}' in CAI Studio (their latest"
                " verdict on each pair)",
                "type": "human",
            },
        )
        verdicts.setdefault((v["prompt_id"], int(v["pair"])), {})[rid] = v["verdict"]
    comparisons = []
    for row in labels:
        messages = row["prompt_messages"]
        single = len(messages) == 1 and messages[0]["role"] == "user"
        prompt = messages[0]["content"] if single else messages
        annotations = {judge_id: _pref(row["winner"], row["soft_label"])}
        for rid, verdict in verdicts.get((row["prompt_id"], int(row["pair"])), {}).items():
            annotations[rid] = _pref(verdict)
        key = json.dumps([prompt, row["response_a"], row["response_b"]], ensure_ascii=False)
        comparisons.append(
            {
                "id": row.get("external_id")
                or _short_hash(f"{row['prompt_id']}|{row['pair']}|{key}"),
                "prompt": prompt,
                "text_a": row["response_a"],
                "text_b": row["response_b"],
                "annotations": annotations,
                "metadata": {
                    "prompt_id": row["prompt_id"],
                    "pair": str(row["pair"]),
                    "a_ref": row["a_ref"],
                    "b_ref": row["b_ref"],
                },
            }
        )
    return {
        "metadata": {
            "version": ANNOTATED_VERSION,
            "description": f"CAI Studio label job {labels_job} on pairs job {cfg.get('pairs')},"
            " with its human reviews",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dataset_name": labels_job,
            "default_annotator": judge_id,
            "available_metadata_keys_per_comparison": ["prompt_id", "pair", "a_ref", "b_ref"],
            "cai_studio": {
                "label_job": labels_job,
                "pairs_job": cfg.get("pairs"),
                "constitution": cfg.get("constitution"),
                "model": None if imported else cfg.get("model"),
            },
        },
        "annotators": annotators,
        "comparisons": comparisons,
    }


def export_annotated(store: Store, labels_job: str, out: str | Path, *, force: bool = False):
    """Write `annotated_pairs` to the JSON file `out`; an existing file is kept unless
    `force`. Returns (path, comparisons, annotators)."""
    out = Path(out)
    if out.exists() and not force:
        raise CaiError(f"{out} exists; pass --force to replace it")
    if out.is_dir():
        raise CaiError(f"{out} is a folder; give a file name such as {out / 'pairs.json'}")
    data = annotated_pairs(store, labels_job)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out, len(data["comparisons"]), len(data["annotators"])


def import_lineage(store: Store, labels_job) -> str | None:
    """In words, where a label job's imported pairs (and, for dataset labels, the labels)
    came from; None when its pairs were made here. E.g. "The labels of the dataset: the side
    the file marks as chosen (TRL preference rows), imported from prefs.jsonl (TRL preference
    rows, 3 rows, sha256 …) on 2026-12-03 21:40. No model was asked."."""
    pairs_job = labels_job.config.get("pairs")
    record = store.import_record(pairs_job) if pairs_job else None
    if record is None:
        return None
    annotator = store.import_annotator(labels_job.id)
    where = describe_import(record)
    if annotator is not None:
        return (
            f"The labels of {describe_annotator(annotator)}, {where} as pairs job {pairs_job}"
            f" (prompt set '{record['prompt_set']}'). No model was asked."
        )
    return (
        f"Its pairs (pairs job {pairs_job}, prompt set '{record['prompt_set']}') were {where};"
        " the side the dataset prefers is known, so the judge's agreement with it is measured."
    )
