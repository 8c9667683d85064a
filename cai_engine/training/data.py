"""Training data: an export folder (or a job to export from), checked for the trainer's format.

Errors name the folder, the example and what the trainer needs, and nothing is written
outside the job's own run folder.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from cai_engine.errors import CaiError, NotFoundError

NEEDS = {
    "sft": '{"messages": [..., {"role": "assistant", ...}]} (an SFT export: `cai export sft`)',
    "prefs": '{"prompt": [...], "chosen": [...], "rejected": [...]} (`cai export prefs`)',
}


@dataclass
class TrainingData:
    examples: list[dict]  # in TRL's format for the trainer
    source: str  # the folder read
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


def to_trl(examples: list[dict], fmt: str, where: str) -> list[dict]:
    """Check every example for `fmt` ("sft" or "prefs") and convert it to TRL's form."""
    if not examples:
        raise CaiError(f"{where} has no examples; there is nothing to train on")
    out = []
    for i, e in enumerate(examples, 1):
        if fmt == "sft":
            if "messages" not in e:
                found = ", ".join(sorted(e)[:8])
                hint = (
                    " (that is a preference export; train reward or dpo on it)"
                    if {"chosen", "rejected"} <= set(e)
                    else ""
                )
                raise CaiError(
                    f"{where}: example {i} has no 'messages' (it has: {found}){hint}; "
                    f"SFT needs {NEEDS['sft']}"
                )
            messages = e["messages"]
            if not _is_turns(messages) or messages[-1]["role"] != "assistant" or len(messages) < 2:
                raise CaiError(
                    f"{where}: example {i}'s messages must be role/content turns ending with "
                    "an assistant turn"
                )
            out.append({"prompt": messages[:-1], "completion": messages[-1:]})
        else:
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in e]
            if missing:
                found = ", ".join(sorted(e)[:8])
                hint = " (that is an SFT export; train sft on it)" if "messages" in e else ""
                raise CaiError(
                    f"{where}: example {i} has no {', '.join(repr(m) for m in missing)} "
                    f"(it has: {found}){hint}; reward and DPO need {NEEDS['prefs']}"
                )
            if not all(_is_turns(e[k]) for k in ("prompt", "chosen", "rejected")):
                raise CaiError(
                    f"{where}: example {i}'s prompt, chosen and rejected must be lists of "
                    "role/content turns"
                )
            score = e.get("score", 1.0)
            if score is None or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
                raise CaiError(
                    f"{where}: example {i}'s score must be a number in [0, 1], not {score!r}"
                )
            out.append(
                {
                    "prompt": e["prompt"],
                    "chosen": e["chosen"],
                    "rejected": e["rejected"],
                    "score": float(score),
                    "label_source": str(e.get("label_source") or "ai"),
                }
            )
    return out


def resolve(store, data: str, kind: str, run_dir: Path, command: str = "") -> TrainingData:
    """Read `data` (an export folder, or a job id to export into the run folder) for `kind`."""
    fmt = "sft" if kind == "sft" else "prefs"
    folder = Path(data).expanduser()
    if not folder.is_dir():
        folder = _export_job(store, data, fmt, run_dir / "data", command)
    examples, manifest = read_export(folder)
    return TrainingData(to_trl(examples, fmt, str(folder)), str(folder), manifest)


def source_job(store, job_id: str, fmt: str):
    """The finished job that `--data JOB` names, if it can give `fmt` data; else a clear error."""
    from cai_engine import jobs

    try:
        job = jobs.get_job(store, job_id)
    except NotFoundError:
        raise CaiError(
            f"--data '{job_id}' is neither an export folder nor a job; give a folder written by "
            "`cai export`, or a critique or label job id"
        ) from None
    if fmt == "sft" and job.kind != "critique":
        raise CaiError(f"SFT trains on a critique job's revisions; {job_id} is a {job.kind} job")
    if fmt == "prefs" and job.kind not in ("label", "critique"):
        raise CaiError(
            "reward and DPO train on preferences: a label job (or a critique job's revisions); "
            f"{job_id} is a {job.kind} job"
        )
    if job.status in jobs.ACTIVE:
        raise CaiError(f"{job_id} is still {job.status}; train once it has finished")
    return job


def _export_job(store, job_id: str, fmt: str, out: Path, command: str) -> Path:
    from cai_engine import export

    if (out / "manifest.json").exists():
        return out  # exported on an earlier attempt of this job
    job = source_job(store, job_id, fmt)
    if fmt == "sft":
        export.export_sft(store, job_id, out, command=command)
    elif job.kind == "label":
        export.export_prefs_from_labels(store, job_id, out, command=command)
    else:
        export.export_prefs_from_revisions(store, job_id, out, command=command)
    return out


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


def preview(store, data: str, kind: str) -> list[dict]:
    """The examples `data` would give `kind`, in TRL's format, without writing anything
    (for the estimate shown before a launch). Raises CaiError like a launch would."""
    fmt = "sft" if kind == "sft" else "prefs"
    folder = Path(data).expanduser()
    if folder.is_dir():
        examples, _ = read_export(folder)
        return to_trl(examples, fmt, str(folder))
    from cai_engine import export

    job = source_job(store, data, fmt)
    if fmt == "sft":
        examples, _ = export.sft_examples(store.traces(job.id))
    elif job.kind == "label":
        examples, _ = export.prefs_from_labels(store.labels(job.id), store.reviews(job.id))
    else:
        examples, _ = export.prefs_from_revisions(store.traces(job.id))
    return to_trl(examples, fmt, data)


def model_parameters(spec: str, home) -> int:
    """About how many parameters a local model has, from its weight files' sizes."""
    from cai_engine.models import parse_spec
    from cai_engine.models.local import resolve_local_path

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
