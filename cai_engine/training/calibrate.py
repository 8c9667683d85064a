"""Measure a few real training steps on this machine, for the estimate before a launch:
`python -m cai_engine.training.calibrate --home H --kind K --folder F --steps N --started T`.

F holds config.json and examples.jsonl (written by `estimate.measure`, which started this
process at time T); the measurement goes to F/measurement.json. The process does what a job
does up to its steps (imports, model load, tokenisation, the kind's TRL trainer, with the
job's callback timing each part and a short sample completion before and after the steps),
then times a save of the model.
Nothing is registered and nothing is written outside F.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from cai_engine.errors import CaiError
from cai_engine.models import parse_spec
from cai_engine.models.local import resolve_local_path
from cai_engine.training import estimate, run
from cai_engine.training.kinds import TRAINING_KINDS

SAMPLE_TOKENS = 8  # enough new tokens to time generation per token


class QuietContext:
    """The part of a JobContext the job's callback uses, reporting nowhere."""

    cancelled = False

    def progress(self, **_) -> None:
        pass

    def metric(self, **_) -> None:
        pass

    def phase(self, text: str | None, *, setup: bool = False) -> None:
        pass


def measure(home: Path, kind: str, folder: Path, steps: int, started: float) -> dict:
    """Train `steps` steps as a job would (one micro-batch each) and return the measurement's
    fields."""
    spec = TRAINING_KINDS[kind]
    config = spec.config.model_validate_json((folder / "config.json").read_text())
    # One micro-batch a step (a step of the job is scaled by its tokens: accumulating N
    # micro-batches costs about N times one), one checkpoint and one log line, at the last
    # step: the measurement takes as little time as it can.
    update = {"max_steps": steps, "grad_accum": 1, "save_steps": steps, "sample_every": 0}
    config = config.model_copy(update={**update, "logging_steps": steps})
    lines = (folder / "examples.jsonl").read_text(encoding="utf-8").splitlines()
    examples = [json.loads(line) for line in lines if line.strip()]
    # 1) what a job does before its first step
    base_path = resolve_local_path(parse_spec(config.model), home)
    prep = run.prepare(kind, config, examples, base_path)
    trainer = run.build_trainer(kind, config, prep, base_path, folder / "checkpoints", home)
    # 2) the steps, the checkpoint after the last one, and a short sample completion before the
    # first step and after the last one, as a job samples (one prompt, a few tokens)
    held, _ = prep.sample_rows
    sampler = None
    if config.sample_prompts and held and not spec.scores:
        tokens = min(config.sample_tokens, SAMPLE_TOKENS)
        prompts = [held[0]["prompt"]]
        sampler = run.Sampler(folder, lambda: trainer.model, prep.tokenizer, prompts, tokens)
    callback = run.JobCallback(QuietContext(), sampler)
    trainer.add_callback(callback)
    trainer.train()
    clock = callback.clock
    # 3) the model saved as a job saves it (merged LoRA, weights and tokenizer)
    began = time.time()
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(str(folder / "model"), safe_serialization=True)
    prep.tokenizer.save_pretrained(str(folder / "model"))
    measured = clock.measurement(
        startup_s=clock.begin - started,
        finish_s=time.time() - began,
        tokens_per_step=estimate.step_tokens(prep.train_rows, config),
        dtype="bf16" if prep.bf16 else "fp32",
        source=f"{steps} steps before launch",
    )
    return asdict(measured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cai_engine.training.calibrate")
    parser.add_argument("--home", required=True)
    parser.add_argument("--kind", required=True, choices=list(TRAINING_KINDS))
    parser.add_argument("--folder", required=True)
    parser.add_argument("--steps", type=int, default=estimate.MEASURE_STEPS)
    parser.add_argument("--started", type=float, default=None)
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    try:
        fields = measure(
            Path(args.home), args.kind, folder, args.steps, args.started or time.time()
        )
    except CaiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    (folder / "measurement.json").write_text(json.dumps(fields, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
