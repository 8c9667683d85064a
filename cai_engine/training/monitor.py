"""What a training job shows while it runs: curves, progress with an ETA and sample
completions (the estimate before launch is `estimate.py`). Light: no torch here, so the studio
can import it."""

from __future__ import annotations

import json
from pathlib import Path

from cai_engine.progress import eta_seconds, format_duration  # noqa: F401 (read from here too)
from cai_engine.training.kinds import TRAINING_KINDS

SAMPLES = "samples.jsonl"
# What the sample completions' prompts are (samples.jsonl's `held_out`), for the job's log,
# its training_setup event and the Training page.
SAMPLE_SOURCES = {True: "held-out prompts", False: "training prompts (no held-out split)"}

# Loss and learning rate lead every job's charts; its kind's charts follow (kinds.py).
COMMON_CHARTS = (("Loss", ("loss", "eval_loss")), ("Learning rate", ("learning_rate",)))


def read_samples(run_path) -> list[dict]:
    path = Path(run_path) / SAMPLES
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return out


def samples_source(samples: list[dict], setup: dict | None = None) -> str:
    """What the sampled prompts are: "held-out prompts", or "training prompts (no held-out
    split)" when any line says it was not held out. Lines written before `held_out` existed
    go by the job's training_setup event (no eval examples: training prompts)."""
    flags = [bool(s["held_out"]) for s in samples if "held_out" in s]
    if not flags and setup and "eval_examples" in setup:
        flags = [bool(setup["eval_examples"])]
    return SAMPLE_SOURCES[all(flags)] if flags else "prompts"


def curves(metrics: list[dict], kind: str) -> list[tuple[str, list[dict]]]:
    """(title, rows of {step, <key>: value}) for each chart with data, in display order."""
    out = []
    spec = TRAINING_KINDS.get(kind)
    for title, keys in COMMON_CHARTS + (spec.charts if spec else ()):
        rows = [
            {"step": m["step"], **{k: m[k] for k in keys if k in m}}
            for m in metrics
            if isinstance(m.get("step"), int) and not m.get("final") and any(k in m for k in keys)
        ]
        if rows:
            out.append((title, rows))
    return out
