"""Training data in the three formats trainers read: SFT conversations and preference pairs
(an export folder, or a finished job to export from) and prompts (a prompt set, for online RL).

Each format checks a config's data before a job starts, loads it in the job, and previews it
for the estimate. Errors name the folder, the example and what the trainer needs, and nothing
is written outside the job's own run folder.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cai_engine import export, jobs
from cai_engine.errors import CaiError, NotFoundError
from cai_engine.models import parse_spec
from cai_engine.models.local import resolve_local_path
from cai_engine.prompts import select_prompts

if TYPE_CHECKING:
    from cai_engine.store import Store


@dataclass
class TrainingData:
    examples: list[dict]  # in TRL's format for the trainer
    source: str  # the folder read (or the prompt set)
    manifest: dict = field(default_factory=dict)


def read_export(folder: Path) -> tuple[list[dict], dict]:
    """The examples and manifest of an export folder (jsonl, parquet or a datasets folder)."""
    manifest_path = folder / "manifest.json"
    manifest = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CaiError(f"{manifest_path}: not valid JSON ({e}); export again") from None
        if not isinstance(manifest, dict):
            raise CaiError(f"{manifest_path}: expected a JSON object, export again")
    if (folder / "data.jsonl").exists():
        examples = []
        path = folder / "data.jsonl"
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise CaiError(
                        f"{path}:{n}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); "
                        "save the file as UTF-8"
                    ) from None
                if not line.strip():
                    continue
                try:
                    examples.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise CaiError(f"{path}:{n}: not valid JSON ({e.msg})") from None
                except RecursionError:
                    raise CaiError(f"{path}:{n}: the JSON is nested too deeply") from None
    elif (folder / "data.parquet").exists():
        import pyarrow.parquet as pq

        examples = pq.read_table(folder / "data.parquet").to_pylist()
    elif (folder / "dataset").is_dir():
        import datasets

        examples = datasets.load_from_disk(str(folder / "dataset")).to_list()
    else:
        raise CaiError(
            f"{folder} holds no data.jsonl, data.parquet or dataset/ folder; "
            "point --data at a folder written by `cai export`, or at a job"
        )
    return examples, manifest


def _is_turns(value) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in value)
    )


def _sft_example(e: dict, i: int, where: str) -> dict:
    """`{"messages": [...]}` -> TRL's prompt/completion (the loss covers the completion)."""
    if "messages" not in e:
        found = ", ".join(sorted(e)[:8])
        hint = (
            " (that is a preference export; train reward or dpo on it)"
            if {"chosen", "rejected"} <= set(e)
            else ""
        )
        raise CaiError(
            f"{where}: example {i} has no 'messages' (it has: {found}){hint}; SFT needs {SFT.needs}"
        )
    messages = e["messages"]
    if not _is_turns(messages) or messages[-1]["role"] != "assistant" or len(messages) < 2:
        raise CaiError(
            f"{where}: example {i}'s messages must be role/content turns ending with "
            "an assistant turn"
        )
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def _pref_example(e: dict, i: int, where: str) -> dict:
    """A preference pair, with `score` (default 1.0) and `label_source` (default "ai")."""
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in e]
    if missing:
        found = ", ".join(sorted(e)[:8])
        hint = " (that is an SFT export; train sft on it)" if "messages" in e else ""
        raise CaiError(
            f"{where}: example {i} has no {', '.join(repr(m) for m in missing)} "
            f"(it has: {found}){hint}; reward and DPO need {PREFS.needs}"
        )
    if not all(_is_turns(e[k]) for k in ("prompt", "chosen", "rejected")):
        raise CaiError(
            f"{where}: example {i}'s prompt, chosen and rejected must be lists of "
            "role/content turns"
        )
    score = e.get("score", 1.0)
    if score is None or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
        raise CaiError(f"{where}: example {i}'s score must be a number in [0, 1], not {score!r}")
    return {
        "prompt": e["prompt"],
        "chosen": e["chosen"],
        "rejected": e["rejected"],
        "score": float(score),
        "label_source": str(e.get("label_source") or "ai"),
    }


def to_trl(examples: list[dict], fmt: str, where: str) -> list[dict]:
    """Check every example for `fmt` ("sft" or "prefs") and convert it to TRL's form."""
    return FORMATS[fmt].to_trl(examples, where)


# -- the formats ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """How a finished job of one kind becomes a trainer's examples (`cai_engine.export`)."""

    export: Callable  # export(store, job_id, out, command): writes an export folder
    examples: Callable  # examples(store, job_id) -> the same examples, writing nothing


def _sft_export(store: Store, job_id, out, command):

    export.export_sft(store, job_id, out, command=command)


def _sft_examples(store: Store, job_id):

    return store.export_examples(export.sft_query(), job_id)


def _labels_export(store: Store, job_id, out, command):

    export.export_prefs_from_labels(store, job_id, out, command=command)


def _labels_examples(store: Store, job_id):

    return store.export_examples(export.PrefFilters().query(), job_id)


def _revisions_export(store: Store, job_id, out, command):

    export.export_prefs_from_revisions(store, job_id, out, command=command)


def _revisions_examples(store: Store, job_id):

    return store.export_examples(export.revisions_query(), job_id)


@dataclass(frozen=True)
class ExportFormat:
    """Examples read from an export folder (`cai export sft|prefs`), or exported from a
    finished job into the run folder first."""

    name: str  # "sft" or "prefs": the export's kind (manifest.json says it too)
    needs: str  # one example's shape, for error messages
    takes: str  # which jobs it comes from, for the error naming a job of the wrong kind
    sources: dict[str, Source]  # job kind -> how such a job's output becomes examples
    convert: Callable[[dict, int, str], dict]  # convert(example, number, where): TRL's form
    turns: Callable[[dict], list[list[dict]]]  # a TRL example's conversations (for lengths)

    def to_trl(self, examples: list[dict], where: str) -> list[dict]:
        """Check every example and convert it to TRL's form."""
        if not examples:
            raise CaiError(f"{where} has no examples; there is nothing to train on")
        return [self.convert(e, i, where) for i, e in enumerate(examples, 1)]

    def check(self, store: Store, cfg) -> dict:
        """Check `cfg.data` before a job starts; returns the config changes to submit (an
        export folder is stored resolved)."""
        folder = Path(cfg.data).expanduser()
        if not folder.is_dir():
            self.source_job(store, cfg.data)
            return {}
        examples, _ = read_export(folder)
        self.to_trl(examples, str(folder))
        return {"data": str(folder.resolve())}

    def load(self, store: Store, config, run_dir: Path, command: str = "", lead: bool = True):
        """`config.data` as TRL examples: a folder as it is, or a job exported into
        <run_dir>/data. A rank other than the lead waits for the lead's export."""
        folder = Path(config.data).expanduser()
        if not folder.is_dir():
            folder = run_dir / "data"
            if lead:
                self._export_job(store, config.data, folder, command)
            else:
                _wait_for(folder / "manifest.json")
        examples, manifest = read_export(folder)
        return TrainingData(self.to_trl(examples, str(folder)), str(folder), manifest)

    def preview(self, store: Store, cfg) -> list[dict]:
        """The examples `cfg.data` would give, in TRL's form, without writing anything (for
        the estimate shown before a launch). Raises CaiError like a launch would."""
        folder = Path(cfg.data).expanduser()
        if folder.is_dir():
            examples, _ = read_export(folder)
            return self.to_trl(examples, str(folder))
        job = self.source_job(store, cfg.data)
        return self.to_trl(self.sources[job.kind].examples(store, job.id), cfg.data)

    def source_job(self, store: Store, job_id: str):
        """The finished job that `--data JOB` names, if it can give this format; else a
        clear error."""

        try:
            job = jobs.get_job(store, job_id)
        except NotFoundError:
            raise CaiError(
                f"--data '{job_id}' is neither an export folder nor a job; give a folder written "
                "by `cai export`, or a critique or label job id"
            ) from None
        if job.kind not in self.sources:
            raise CaiError(f"{self.takes}; {job_id} is a {job.kind} job")
        if job.status in jobs.ACTIVE:
            raise CaiError(f"{job_id} is still {job.status}; train once it has finished")
        return job

    def _export_job(self, store: Store, job_id: str, out: Path, command: str) -> Path:
        if (out / "manifest.json").exists():
            return out  # exported on an earlier attempt of this job
        job = self.source_job(store, job_id)
        self.sources[job.kind].export(store, job_id, out, command)
        return out


@dataclass(frozen=True)
class PromptFormat:
    """Prompts from a prompt set, for online RL: the trainer samples the completions."""

    name: str
    sources: dict[str, Source] = field(default_factory=dict)  # no job exports into it

    def check(self, store: Store, cfg) -> dict:

        select_prompts(store, cfg.data, cfg.limit)
        return {}

    def load(self, store: Store, config, run_dir: Path, command: str = "", lead: bool = True):

        prompts = select_prompts(store, config.data, config.limit)
        examples = [{"prompt": p.messages, "prompt_id": p.prompt_id} for p in prompts]
        manifest = {"prompt_set": config.data, "prompts": len(examples)}
        return TrainingData(examples, config.data, manifest)

    def preview(self, store: Store, cfg) -> list[dict]:

        return [{"prompt": p.messages} for p in select_prompts(store, cfg.data, cfg.limit)]

    @staticmethod
    def turns(example: dict) -> list[list[dict]]:
        return []  # completions are sampled up to max_completion_length


SFT = ExportFormat(
    name="sft",
    needs='{"messages": [..., {"role": "assistant", ...}]} (an SFT export: `cai export sft`)',
    takes="SFT trains on a critique job's revisions",
    sources={"critique": Source(_sft_export, _sft_examples)},
    convert=_sft_example,
    turns=lambda e: [e["prompt"] + e["completion"]],
)
PREFS = ExportFormat(
    name="prefs",
    needs='{"prompt": [...], "chosen": [...], "rejected": [...]} (`cai export prefs`)',
    takes="reward and DPO train on preferences: a label job (or a critique job's revisions)",
    sources={
        "label": Source(_labels_export, _labels_examples),
        "critique": Source(_revisions_export, _revisions_examples),
    },
    convert=_pref_example,
    turns=lambda e: [e["prompt"] + e["chosen"], e["prompt"] + e["rejected"]],
)
PROMPTS = PromptFormat(name="prompts")
FORMATS = {f.name: f for f in (SFT, PREFS, PROMPTS)}


def _wait_for(path: Path, timeout: float = 600) -> None:
    """Wait for the lead rank to write `path` (the manifest, written last by an export)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise CaiError("rank 0 did not export the training data within 10 minutes")
        time.sleep(0.5)


def hold_out_human(spec, examples: list[dict]) -> tuple[list[dict], list[dict]]:
    """(examples to train and evaluate on, human-reviewed pairs held out of both) where the
    kind `spec` says so: the human verdicts are the gold check of a reward model. Kept in
    training if they are all there is."""
    if not spec.human_holdout:
        return examples, []
    human = [e for e in examples if e.get("label_source") == "human"]
    return [e for e in examples if e.get("label_source") != "human"] or examples, human


def split(examples: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, eval): a seeded shuffle; eval gets `fraction` of the examples, at least one when
    there are five or more, and never all of them."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n = int(round(len(examples) * fraction))
    if fraction > 0 and n == 0 and len(examples) >= 5:
        n = 1
    n = min(n, len(examples) - 1)
    held = set(order[:n])
    train = [e for i, e in enumerate(examples) if i not in held]
    evals = [e for i, e in enumerate(examples) if i in held]
    return train, evals


def model_parameters(spec: str, home) -> int:
    """About how many parameters a local model has, from its weight files' sizes."""

    path = Path(resolve_local_path(parse_spec(spec), home))
    if not path.is_dir():
        return 135_000_000  # a hub id not on disk: assume a small model
    config = (
        json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
    )
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    width = 4 if "32" in dtype else 2
    size = sum(f.stat().st_size for f in path.glob("*.safetensors")) or sum(
        f.stat().st_size for f in path.glob("*.bin")
    )
    return max(1, size // width)
