"""The training job body: data, model, trainer, live metrics, checkpoints and the artifact.

Any launcher may start it (python, torchrun, accelerate launch): ranks come from the
environment, only rank 0 writes the run folder and the store, and cancellation is agreed
across ranks so every rank stops at the same step.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import TrainerCallback

from cai_engine.errors import CaiError, JobCancelled
from cai_engine.home import models_dir
from cai_engine.models import parse_spec
from cai_engine.models.local import choose_cpu_dtype, resolve_local_path
from cai_engine.training import data as training_data
from cai_engine.training import estimate, trainers
from cai_engine.training.kinds import TRAINING_KINDS
from cai_engine.training.monitor import SAMPLE_SOURCES, SAMPLES

if TYPE_CHECKING:
    from cai_engine.runner import JobContext


CHECKPOINTS = "checkpoints"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


# -- precision --------------------------------------------------------------------------------


def decide_precision(precision: str) -> tuple[bool, str]:
    """(bf16?, why). bf16 means autocast with fp32 master weights, as TRL does it."""
    if precision == "bf16":
        return True, "bf16 as configured"
    if precision == "fp32":
        return False, "fp32 as configured"
    if torch.cuda.is_available():
        ok = torch.cuda.is_bf16_supported()
        return ok, "GPU with bf16" if ok else "GPU without bf16: fp32"

    name, reason = choose_cpu_dtype()
    return name == "bfloat16", reason


# -- checkpoints ----------------------------------------------------------------------------


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints whose trainer_state.json (written last) is whole, oldest first.

    transformers writes that file in place, not atomically: a process killed while writing it
    leaves it empty or cut short, and such a checkpoint is as incomplete as one without it.
    """
    found = []
    for path in folder.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and _state_step(path) is not None:
            found.append((int(step), path))
    return [p for _, p in sorted(found)]


def _state_step(path: Path) -> int | None:
    """The global step a checkpoint's trainer_state.json records; None if it is missing or
    not (yet) whole JSON."""
    try:
        return int(json.loads((path / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checkpoint_step(path: Path) -> int:
    step = _state_step(path)
    if step is None:
        raise CaiError(f"{path} has no complete trainer_state.json")
    return step


# -- callbacks ------------------------------------------------------------------------------


class JobCallback(TrainerCallback):
    """Rank 0 streams every log to metrics.jsonl and progress to status.json; every rank
    stops (after a checkpoint) once SIGTERM has reached any of them. Its `clock` times the
    steps, samples and checkpoints."""

    def __init__(self, ctx: JobContext, sampler=None, sample_every: int = 0):
        self.ctx = ctx
        self.sampler = sampler
        self.sample_every = sample_every
        self.stopped = False
        self.clock = estimate.Clock()

    def _sample(self, step: int) -> None:
        started = time.time()
        self.sampler(step)
        self.clock.sample_s += time.time() - started
        self.clock.sample_tokens += len(self.sampler.prompts) * self.sampler.tokens

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.begin = time.time()
        if state.is_world_process_zero:
            self.ctx.progress(done=state.global_step, total=state.max_steps, unit="step")
            if self.sampler and state.global_step == 0:
                self.ctx.phase("sampling completions before the first step", setup=True)
                self._sample(0)
            self.ctx.phase(
                "the first step" if state.global_step == 0 else "the first step after resuming"
            )

    def on_step_begin(self, args, state, control, **kwargs):
        self.clock.step_began = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        values = {"epoch": round(state.epoch or 0.0, 4)}
        values.update({k: float(v) for k, v in logs.items() if isinstance(v, int | float)})
        self.ctx.metric(step=state.global_step, **values)

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock.step_began is not None:
            self.clock.steps.append(time.time() - self.clock.step_began)
        if state.is_world_process_zero:
            # tokens seen: counted by transformers (include_num_input_tokens_seen) or, for
            # online RL, by TRL itself; kept in checkpoints, so a resume goes on counting
            self.ctx.progress(
                done=state.global_step, total=state.max_steps, tokens=state.num_input_tokens_seen
            )
        if self._cancel_agreed():
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True
            return
        if (
            self.sampler
            and self.sample_every
            and state.global_step % self.sample_every == 0
            and state.is_world_process_zero
        ):
            self._sample(state.global_step)
        self.clock.step_done = time.time()  # a checkpoint, if due, is saved next

    def on_save(self, args, state, control, **kwargs):
        if self.clock.step_done is not None:
            self.clock.saves.append(time.time() - self.clock.step_done)

    def on_train_end(self, args, state, control, **kwargs):
        if self.sampler and state.is_world_process_zero and not self.stopped:
            self._sample(state.global_step)
        self.clock.end = time.time()  # the loop, with its last samples

    def _cancel_agreed(self) -> bool:
        flag = self.ctx.cancelled
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([1.0 if flag else 0.0])
            if torch.distributed.get_backend() == "nccl":
                t = t.cuda()
            torch.distributed.all_reduce(t)  # any rank's SIGTERM stops all of them
            flag = bool(t.item())
        return flag


class Sampler:
    """Greedy completions for a few fixed prompts, written to samples.jsonl. Each line says
    whether its prompt was held out of training (`held_out`): without an eval split the
    prompts are training prompts, and the page and the log say so."""

    def __init__(
        self,
        run_path: Path,
        model_getter,
        tokenizer,
        prompts: list[list[dict]],
        tokens: int,
        held_out: bool = True,
    ):
        self.path = run_path / SAMPLES
        self.model_getter = model_getter
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.tokens = tokens
        self.held_out = held_out

    def __call__(self, step: int) -> None:
        if not self.prompts:
            return
        model = self.model_getter()
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        rows = []
        try:
            for prompt in self.prompts:
                enc = self.tokenizer.apply_chat_template(
                    prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
                ).to(device)
                with torch.inference_mode():
                    out = model.generate(
                        **enc,
                        max_new_tokens=self.tokens,
                        do_sample=False,
                        pad_token_id=self.tokenizer.pad_token_id,
                    )
                text = self.tokenizer.decode(
                    out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True
                )
                rows.append(
                    {
                        "step": step,
                        "prompt": prompt[-1]["content"],
                        "completion": text,
                        "held_out": self.held_out,
                    }
                )
        finally:
            model.train(was_training)
        with open(self.path, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


# -- the job --------------------------------------------------------------------------------


@dataclass
class Prepared:
    """What a job and a measurement (calibrate.py) prepare the same way before the trainer."""

    train_rows: list[dict]
    eval_rows: list[dict]
    human_rows: list[dict]  # human-reviewed pairs held out of both (where the kind says so)
    tokenizer: object
    bf16: bool
    precision_reason: str
    max_length: int

    @property
    def sample_rows(self) -> tuple[list[dict], bool]:
        """(the rows whose prompts are sampled, whether they are held out of training). With
        no eval split (eval_fraction 0, or under five examples) they are training prompts:
        holding some out anyway would shrink a tiny dataset behind the user's back."""
        return (self.eval_rows, True) if self.eval_rows else (self.train_rows, False)


def prepare(kind: str, config, examples: list[dict], base_path: str) -> Prepared:
    """Hold out the human pairs, split, load the tokenizer, decide the precision and the
    token limit."""
    spec = TRAINING_KINDS[kind]
    examples, human_rows = training_data.hold_out_human(spec, examples)
    train_rows, eval_rows = training_data.split(examples, config.eval_fraction, config.seed)
    tokenizer = _tokenizer(base_path)
    bf16, why = decide_precision(config.precision)
    max_length = config.max_length or _length_for(tokenizer, examples, kind)
    return Prepared(train_rows, eval_rows, human_rows, tokenizer, bf16, why, max_length)


def build_trainer(kind: str, config, prep: Prepared, base_path: str, out_dir: Path, home: Path):
    """The kind's TRL trainer on the prepared data."""
    from datasets import Dataset

    common = training_args(config, out_dir, prep.bf16)
    if not isinstance(TRAINING_KINDS[kind].data, training_data.PromptFormat):
        common["include_num_input_tokens_seen"] = "non_padding"  # (online RL: TRL counts them)
    return trainers.build(
        kind,
        config,
        base_path=base_path,
        tokenizer=prep.tokenizer,
        train=Dataset.from_list(prep.train_rows),
        evals=Dataset.from_list(prep.eval_rows) if prep.eval_rows else None,
        common=common,
        max_length=prep.max_length,
        peft_config=_lora(TRAINING_KINDS[kind], config),
        home=home,
    )


def train(ctx: JobContext, config, kind: str) -> None:
    """Train `kind` (a key of `TRAINING_KINDS`) as the job `ctx` describes."""
    spec = TRAINING_KINDS[kind]
    lead = rank() == 0
    run_path = Path(ctx.run.path)
    out_dir = run_path / CHECKPOINTS
    base_path = resolve_local_path(parse_spec(config.model), ctx.store.home)
    # 1) data: the examples, split; human-reviewed pairs held out where the kind says so
    ctx.phase("loading the data", setup=True)
    data = spec.data.load(ctx.store, config, run_path, f"train {kind} job {ctx.job_id}", lead)
    # 2) the tokenizer, precision and token limit, and the checkpoint to resume from
    prep = prepare(kind, config, data.examples, base_path)
    train_rows, eval_rows = prep.train_rows, prep.eval_rows
    held, held_out = prep.sample_rows
    resume_from = _resume_point(ctx, out_dir, lead)
    if lead:
        ctx.event(
            "training_setup",
            kind=kind,
            base=config.model,
            data=data.source,
            train_examples=len(train_rows),
            eval_examples=len(eval_rows),
            sample_prompts=SAMPLE_SOURCES[held_out] if not spec.scores else None,
            bf16=prep.bf16,
            precision_reason=prep.precision_reason,
            max_length=prep.max_length,
            world_size=world_size(),
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
        if not held_out and not spec.scores and config.sample_prompts:
            print(f"sample completions are on {SAMPLE_SOURCES[False]}", flush=True)
    # 3) the kind's TRL trainer, with the job's callback (and rank 0's sampler)
    ctx.phase("loading the model and preparing the data", setup=True)
    trainer = build_trainer(kind, config, prep, base_path, out_dir, ctx.store.home)
    held = held[: config.sample_prompts]
    sampler = (
        _sampler(spec, config, trainer, prep.tokenizer, run_path, held, held_out) if lead else None
    )
    callback = JobCallback(ctx, sampler, config.sample_every)
    trainer.add_callback(callback)
    # 4) train; a cancelled job stops here (its checkpoint was saved on the way out)
    started = time.perf_counter()
    result = _fit(trainer, resume_from, config, prep.max_length, out_dir)
    if callback.stopped:
        if lead:
            ctx.event("checkpointed_on_cancel", step=trainer.state.global_step)
        raise JobCancelled()
    # 5) final metrics, and the model saved and registered with its lineage
    ctx.phase("evaluating and saving the model", setup=True)
    final = {"train_loss": result.training_loss, "train_seconds": time.perf_counter() - started}
    final.update({k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)})
    if eval_rows and spec.evaluates:
        final.update(trainers.evaluate(trainer))
    if spec.human_holdout and lead:
        final.update(trainers.human_accuracy(trainer, prep.tokenizer, eval_rows, prep.human_rows))
    if lead:
        ctx.metric(step=trainer.state.global_step, final=True, **final)
        _register(ctx, config, kind, trainer, prep.tokenizer, data, final)
        # 6) what this run's parts took, for the next estimate (a whole run only)
        if resume_from is None and ctx.attempt <= 1:
            _record_timings(ctx, config, kind, callback.clock, prep)


def _record_timings(
    ctx: JobContext, config, kind: str, clock: estimate.Clock, prep: Prepared
) -> None:
    """Keep this run's timings as this machine's measurement for its setting; an estimate
    is never worth failing a trained job for."""
    if clock.begin is None or clock.end is None or not clock.steps:
        return
    try:
        submitted = ctx.job.created_at.timestamp()
        m = clock.measurement(
            startup_s=clock.begin - submitted,
            finish_s=time.time() - clock.end,
            tokens_per_step=estimate.step_tokens(prep.train_rows, config),
            dtype="bf16" if prep.bf16 else "fp32",
            source=f"job {ctx.job_id}",
        )
        path = estimate.record(ctx.store.home, config, kind, m)
    except (OSError, ValueError, AttributeError) as e:
        ctx.event("timings_not_recorded", error=f"{type(e).__name__}: {e}")
    else:
        ctx.event("timings_recorded", path=str(path), step_s=round(m.step_s, 3))


def _tokenizer(base_path: str):
    """The base model's tokenizer, padding with EOS where it has no pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _resume_point(ctx: JobContext, out_dir: Path, lead: bool) -> Path | None:
    """The last complete checkpoint to resume from, with the metrics after it dropped."""
    done = complete_checkpoints(out_dir)
    if done:
        if lead:
            step = checkpoint_step(done[-1])
            kept = ctx.run.truncate_metrics(step)  # the steps after it will be redone
            ctx.event("resuming", checkpoint=done[-1].name, step=step, metrics_kept=kept)
        return done[-1]
    if lead and ctx.attempt > 1:
        # An earlier attempt died before its first complete checkpoint: training starts over,
        # so its step metrics go (they would be logged again).
        kept = ctx.run.truncate_metrics(0)
        ctx.event("restarting", reason="no complete checkpoint", metrics_kept=kept)
    return None


def training_args(config, out_dir: Path, bf16: bool) -> dict:
    """The TrainingArguments every TRL config shares; each kind's builder adds its own."""
    return {
        "output_dir": str(out_dir),
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": 2,
        "eval_strategy": "no",
        "bf16": bf16,
        "use_cpu": not torch.cuda.is_available(),
        "report_to": "none",
        "seed": config.seed,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "logging_first_step": True,
    }


def _lora(spec, config):
    """peft's LoraConfig for the kind's model when the config asks for LoRA, else None."""
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        target_modules="all-linear",
        task_type=spec.peft_task,
    )


def _sampler(spec, config, trainer, tokenizer, run_path: Path, held: list[dict], held_out: bool):
    """A sampler of a few prompts; None for a model that cannot generate."""
    if spec.scores or not held:
        return None
    prompts = [r["prompt"] for r in held]
    return Sampler(
        run_path, lambda: trainer.model, tokenizer, prompts, config.sample_tokens, held_out
    )


def _fit(trainer, resume_from: Path | None, config, max_length: int, out_dir: Path):
    """`trainer.train()`, with running out of memory or disk turned into what to do next."""
    try:
        return trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except (torch.OutOfMemoryError, MemoryError) as e:
        raise CaiError(
            f"out of memory at step {trainer.state.global_step} (batch size {config.batch_size}, "
            f"max length {max_length}): lower --batch-size or --max-length, raise --grad-accum, "
            f"or train --lora ({type(e).__name__})"
        ) from None
    except OSError as e:
        if e.errno != 28:  # ENOSPC
            raise
        kept = complete_checkpoints(out_dir)
        raise CaiError(
            f"the disk is full (writing {out_dir}): "
            + (f"the last complete checkpoint, {kept[-1].name}, is kept; " if kept else "")
            + "free space, then resume the job"
        ) from None


def _register(ctx: JobContext, config, kind: str, trainer, tokenizer, data, final: dict) -> None:
    """Save the model under its name with its lineage, and register it in the store."""
    name = config.name or ctx.job_id
    lineage = {
        "name": name,
        "kind": kind,
        "job": ctx.job_id,
        "base_model": config.model,
        "data": data.source,
        "data_manifest": data.manifest,
        "constitution_hash": data.manifest.get("constitution_hash"),
        "config": config.model_dump(mode="json"),
        "metrics": final,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = save_artifact(trainer, tokenizer, name, ctx.store.home, lineage)
    ctx.store.register_model(name, kind, ctx.job_id, str(path), lineage)
    ctx.event("model_registered", name=name, spec=f"model:{name}", path=str(path))


def _length_for(tokenizer, examples: list[dict], kind: str) -> int:
    """The longest example in tokens, rounded up to a multiple of 64 (capped at 2048)."""
    longest = 16
    turns = TRAINING_KINDS[kind].data.turns
    for e in examples:
        for t in turns(e):
            ids = tokenizer.apply_chat_template(t, tokenize=True)
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            longest = max(longest, len(ids))
    return min(2048, -(-longest // 64) * 64)


def save_artifact(trainer, tokenizer, name: str, home: Path, lineage: dict) -> Path:
    """Save the trained model to <home>/models/<name>, whole or not at all; never overwrite."""

    target = models_dir(home) / name
    if target.exists():
        raise CaiError(
            f"a model named '{name}' already exists at {target}; the trained weights are kept in "
            f"the job's checkpoints; resume with another name or remove the old model"
        )
    tmp = target.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.model
    if hasattr(model, "merge_and_unload"):  # LoRA: save a plain model with the adapters merged
        model = model.merge_and_unload()
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    (tmp / "lineage.json").write_text(json.dumps(lineage, indent=2, default=str))
    tmp.rename(target)
    return target
