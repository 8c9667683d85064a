"""What a training job shows while it runs: curves, progress with an ETA, sample completions,
and a rough estimate before launch. Light: no torch here, so the studio can import it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from cai_engine.progress import eta_seconds, format_duration  # noqa: F401 (read from here too)
from cai_engine.training.data import split
from cai_engine.training.kinds import TRAINING_KINDS

SAMPLES = "samples.jsonl"

# Loss and learning rate lead every job's charts; its kind's charts follow (kinds.py).
COMMON_CHARTS = (("Loss", ("loss", "eval_loss")), ("Learning rate", ("learning_rate",)))

# Rough training throughput, in FLOP/s, for 6 x parameters x tokens (forward and backward).
# bench/training.py measured about 128 tokens/s for SFT of the 135M model on the 2-core CPU
# (bf16 autocast): 6 x 135M x 128 = 1.0e11. The GPU figure is a conservative guess.
CPU_TRAIN_FLOPS = 1.0e11
GPU_TRAIN_FLOPS = 1.0e14


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


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class Estimate:
    examples: int
    train_examples: int
    steps: int
    tokens: int  # tokens processed in all steps (both sides of a preference pair)
    seconds: float
    device: str

    def text(self) -> str:
        took = format_duration(self.seconds)
        return (
            f"{self.train_examples} training examples → {self.steps} steps, about "
            f"{self.tokens:,} tokens: roughly {took} on this {self.device} (a rough guide)"
        )


def estimate(
    examples: list[dict], config, kind: str, parameters: int, gpu: bool | None = None
) -> Estimate:
    """Steps and time before launch, from the data's size and the model's parameter count.

    Tokens are approximated as characters / 4; the time assumes 6 x parameters FLOP per
    token at the device's measured training rate, times the kind's `cost` (2 for DPO's
    reference pass and pairs).
    """

    train, _ = split(examples, config.eval_fraction, config.seed)
    per_step = config.batch_size * config.grad_accum * max(1, config.nproc)
    steps_per_epoch = max(1, math.ceil(len(train) / per_step))
    steps = config.max_steps if config.max_steps > 0 else math.ceil(steps_per_epoch * config.epochs)
    chars = sum(len(json.dumps(e, ensure_ascii=False)) for e in train) / max(1, len(train))
    tokens = int(chars / 4 * per_step * steps)
    factor = TRAINING_KINDS[kind].cost if kind in TRAINING_KINDS else 1.0
    gpu = has_gpu() if gpu is None else gpu
    rate = GPU_TRAIN_FLOPS if gpu else CPU_TRAIN_FLOPS
    seconds = 6 * parameters * tokens * factor / rate
    return Estimate(len(examples), len(train), steps, tokens, seconds, "GPU" if gpu else "CPU")
