"""How long a training job will take, said before it starts, and on what basis.

A job's wall time is its start-up (process, imports, data, model load, tokenisation), its
steps, the sample completions and checkpoints on the way, and its finish (final eval, saving
and registering the model). What those cost on this machine is *measured*, for one model,
kind, precision, LoRA setting and process count at a time:
- every finished job records what its own parts took (`run.py`'s `Clock`);
- with nothing on record, `measure` runs a few real steps in a subprocess first.
The records live in the data home (<home>/calibration/), one file per machine and setting. The
estimate scales a recorded step by the tokens per step; anything it could not measure is a
guess, and says so.

Light: no torch here (the studio imports it); the measuring runs in `calibrate.py`'s process.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cai_engine.errors import CaiError
from cai_engine.models import parse_spec
from cai_engine.training.data import hold_out_human, model_parameters, split
from cai_engine.training.kinds import TRAINING_KINDS
from cai_engine.training.monitor import format_duration

if TYPE_CHECKING:
    from cai_engine.store import Store

CALIBRATION = "calibration"
MEASURE_STEPS = 3  # the first step warms up; the others give a steady step's time
MEASURE_TIMEOUT_S = 900.0

# The guess where nothing is measured: 6 x parameters FLOP per token (forward and backward).
# bench/training.py measured about 128 tokens/s for SFT of the 135M model on a 2-core AMX CPU
# (bf16): 6 x 135M x 128 = 1.0e11 FLOP/s; machines without AMX are slower. The GPU figure is
# a conservative guess. Start-up and saving are guessed from what this CPU measured for the
# 135M model (imports and loading ~20 s, a checkpoint ~3 s).
CPU_TRAIN_FLOPS = 1.0e11
GPU_TRAIN_FLOPS = 1.0e14
GUESS_STARTUP_S = 20.0
GUESS_SAVE_S = 3.0
GUESS_SAMPLE_TOKENS_PER_S = 27.0  # greedy generation at batch 1, 135M parameters, fp32 CPU


# -- this machine ---------------------------------------------------------------------------


def _cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or platform.machine()


def _gpu_name() -> str | None:
    """The first NVIDIA GPU's model, from the driver's files (no torch import), or None."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return None
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model":
                return value.strip()
    return None


def _threads() -> int:
    """The threads torch will use: OMP_NUM_THREADS when set, else the CPUs this process may use."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def machine() -> dict:
    """What a measurement holds for: this host, its CPU (and the threads torch gets), its GPU."""
    return {
        "host": platform.node(),
        "cpu": _cpu_name(),
        "threads": _threads(),
        "gpu": _gpu_name(),
    }


def device_name(gpu: str | None) -> str:
    return f"GPU ({gpu})" if gpu else "CPU"


# -- measurements ---------------------------------------------------------------------------


@dataclass
class Measurement:
    """What a training run's parts took on this machine, for one setting."""

    step_s: float  # a steady optimizer step (compute, data and logging), at `tokens_per_step`
    tokens_per_step: float  # approximate tokens per step when measured (see `step_tokens`)
    first_step_s: float  # what the first steps take beyond steady ones (warm-up)
    startup_s: float  # submitted -> first step begins: process, imports, data, model, tokens
    save_s: float  # one checkpoint
    finish_s: float  # after the last step: final eval, saving and registering the model
    sample_s_per_token: float | None  # per prompt x new token of the sample completions
    dtype: str  # what `precision` resolved to: "bf16" or "fp32"
    steps: int  # steps timed
    source: str  # the job that measured it, or "a few steps before launch"
    measured_at: float = field(default_factory=time.time)
    load: float | None = None  # the 1-minute load average then: other work slows training


def setting(config, kind: str) -> dict:
    """What a measurement is kept for: this machine, and what changes a step's cost."""
    return {
        "machine": machine(),
        "kind": kind,
        "model": str(parse_spec(config.model)),
        "precision": config.precision,
        "lora": config.lora,
        "processes": config.nproc if config.launcher == "torchrun" else 1,
    }


def record_path(home, config, kind: str) -> Path:
    key = json.dumps(setting(config, kind), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(home) / CALIBRATION / f"training-{kind}-{digest}.json"


def recorded(home, config, kind: str) -> Measurement | None:
    """The measurement on record for this machine and setting, or None."""
    path = record_path(home, config, kind)
    try:
        return Measurement(**json.loads(path.read_text())["measurement"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or a file cut short or from another version: measure again


def record(home, config, kind: str, measurement: Measurement) -> Path:
    """Keep `measurement` for this machine and setting (the newest wins), written atomically."""
    path = record_path(home, config, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"setting": setting(config, kind), "measurement": asdict(measurement)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, path)
    return path


def from_timings(
    step_times: list[float],
    loop_s: float,
    saves: list[float],
    startup_s: float,
    finish_s: float,
    sample_s: float,
    sample_tokens: int,
    tokens_per_step: float,
    dtype: str,
    source: str,
) -> Measurement:
    """A measurement from a run's clock readings.

    `step_times` are the optimizer steps' own durations; `loop_s` is the whole training loop,
    of which `sample_s` went to sample completions (`sample_tokens`: prompts x new tokens) and
    `saves` to checkpoints. What the loop spent beyond those (data loading, logging) is spread
    over the steps. A steady step is the median of the later half of the steps; what the steps
    took beyond that is the warm-up (the first steps are slow), charged once: the same number
    of steps again adds up to what these took, and a long run is not charged it on every step.
    """
    n = len(step_times)
    if not n:
        raise ValueError("no step was timed")
    steady = statistics.median(step_times[n // 2 :])
    between = max(0.0, loop_s - sum(step_times) - sample_s - sum(saves)) / n
    return Measurement(
        step_s=steady + between,
        tokens_per_step=tokens_per_step,
        first_step_s=max(0.0, sum(step_times) - n * steady),
        startup_s=max(0.0, startup_s),
        save_s=statistics.mean(saves) if saves else GUESS_SAVE_S,
        finish_s=max(0.0, finish_s),
        sample_s_per_token=sample_s / sample_tokens if sample_tokens else None,
        dtype=dtype,
        steps=n,
        source=source,
        load=_load(),
    )


@dataclass
class Clock:
    """What a run's parts took (wall seconds), read by the job's callback (run.py)."""

    begin: float | None = None  # the training loop began (time.time())
    end: float | None = None  # ...and ended, with the samples after its last step
    steps: list[float] = field(default_factory=list)  # each optimizer step's own duration
    saves: list[float] = field(default_factory=list)  # each checkpoint
    sample_s: float = 0.0  # the sample completions
    sample_tokens: int = 0  # ...their prompts x new tokens asked for
    step_began: float | None = None  # the step in flight began
    step_done: float | None = None  # the last step (and its samples) ended

    def measurement(
        self, startup_s: float, finish_s: float, tokens_per_step: float, dtype: str, source: str
    ) -> Measurement:
        return from_timings(
            self.steps,
            loop_s=self.end - self.begin,
            saves=self.saves,
            startup_s=startup_s,
            finish_s=finish_s,
            sample_s=self.sample_s,
            sample_tokens=self.sample_tokens,
            tokens_per_step=tokens_per_step,
            dtype=dtype,
            source=source,
        )


# -- the estimate ---------------------------------------------------------------------------


def example_tokens(example: dict) -> float:
    """About how many tokens an example holds: its JSON's characters / 4."""
    return len(json.dumps(example, ensure_ascii=False)) / 4


def per_step(config) -> int:
    """Examples (completions, for online RL) in one optimizer step, over all processes."""
    processes = config.nproc if config.launcher == "torchrun" else 1
    return config.batch_size * config.grad_accum * processes


def step_tokens(rows: list[dict], config) -> float:
    """About how many tokens one optimizer step processes: its examples' mean size x their
    number, plus the sampled completions where the trainer samples (online RL)."""
    mean = sum(example_tokens(e) for e in rows) / max(1, len(rows))
    return per_step(config) * (mean + getattr(config, "max_completion_length", 0))


def count_steps(train_rows: int, config) -> int:
    """The optimizer steps a config runs: max_steps, or its epochs over the training rows (an
    online RL prompt gives `num_generations` completions)."""
    if config.max_steps > 0:
        return config.max_steps
    completions = train_rows * getattr(config, "num_generations", 1)
    return math.ceil(max(1, math.ceil(completions / per_step(config))) * config.epochs)


@dataclass
class Estimate:
    examples: int
    train_examples: int
    steps: int
    tokens: int  # tokens processed in all steps (approximate; both sides of a pair)
    step_s: float  # one step, scaled to this config's tokens per step
    steps_s: float  # all steps, with the first one's warm-up
    startup_s: float  # submitted -> the first step
    samples_s: float  # the sample completions
    saving_s: float  # the checkpoints, and the finish (final eval, save, register)
    device: str
    measurement: Measurement | None  # None: a guess from the model's size

    @property
    def seconds(self) -> float:
        return self.steps_s + self.startup_s + self.samples_s + self.saving_s

    def headline(self) -> str:
        """ "~60 s: 8 steps × 4.2 s/step measured on this CPU (bf16) + 18 s start-up, 10 s
        samples and 4 s saving"; a part that rounds to nothing is left out."""
        per = f"{self.step_s:.1f}" if self.step_s < 10 else f"{self.step_s:.0f}"
        head = f"~{format_duration(self.seconds)}: {self.steps} steps × {per} s/step"
        parts = [
            f"{format_duration(seconds)} {name}"
            for seconds, name in (
                (self.startup_s, "start-up"),
                (self.samples_s, "samples"),
                (self.saving_s, "saving"),
            )
            if round(seconds) > 0
        ]
        rest = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
        if self.measurement:
            return f"{head} measured on this {self.device} ({self.measurement.dtype})" + (
                f" + {rest}" if rest else ""
            )
        return f"{head}, a guess from the model's size (not measured on this {self.device} yet)" + (
            f" + {rest} (guessed)" if rest else ""
        )

    def basis(self) -> str:
        """The data's size, and where the step time comes from (and how busy the machine was)."""
        size = f"{self.train_examples} training examples, about {self.tokens:,} tokens."
        m = self.measurement
        if not m:
            return f"{size} A finished job, or an estimate that measures, replaces the guess."
        ago = format_duration(max(0.0, time.time() - m.measured_at))
        load = ""
        if m.load is not None:
            load = f" The load was {m.load:.1f} on {machine()['threads']} threads then, "
            load += f"{_load():.1f} now: other work on this machine slows training."
        return (
            f"{size} Measured {ago} ago by {m.source} ({m.steps} steps of about "
            f"{m.tokens_per_step:,.0f} tokens; this run's steps: about "
            f"{self.tokens / max(1, self.steps):,.0f}).{load}"
        )

    def text(self) -> str:
        return f"{self.headline()}. {self.basis()}"


def _load() -> float:
    """The 1-minute load average (processes running or waiting for a CPU)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def estimate(
    examples: list[dict],
    config,
    kind: str,
    parameters: int,
    measurement: Measurement | None = None,
    gpu: str | None = None,
) -> Estimate:
    """Steps and wall time before launch, from the data, the config and a measurement of this
    machine (`recorded`); without one, a guess from the model's parameter count.

    The time is start-up + the first step's warm-up + steps × a step's time (scaled by tokens
    per step) + the sample completions (at step 0, every `sample_every` steps and at the end)
    + the checkpoints (every `save_steps` and at the end) + the finish.
    """
    spec = TRAINING_KINDS[kind]
    train, evals = split(hold_out_human(spec, examples)[0], config.eval_fraction, config.seed)
    steps = count_steps(len(train), config)
    tokens_per_step = step_tokens(train, config)
    samples = 0  # prompts x new tokens
    if not spec.scores and config.sample_prompts:
        events = 2 + (steps // config.sample_every if config.sample_every else 0)
        prompts = min(config.sample_prompts, len(evals or train))
        samples = events * prompts * config.sample_tokens
    saves = math.ceil(steps / config.save_steps)
    m = measurement
    if m:
        step_s = m.step_s * tokens_per_step / max(1.0, m.tokens_per_step)
        per_token = m.sample_s_per_token
        startup, first, save, finish = m.startup_s, m.first_step_s, m.save_s, m.finish_s
    else:
        rate = GPU_TRAIN_FLOPS if gpu else CPU_TRAIN_FLOPS
        step_s = 6 * parameters * tokens_per_step * spec.cost / rate
        startup, first, save, finish = GUESS_STARTUP_S, 0.0, GUESS_SAVE_S, GUESS_SAVE_S
        per_token = None
    if per_token is None:  # nothing sampled when measured: scale batch-1 generation by size
        per_token = parameters / 135e6 / GUESS_SAMPLE_TOKENS_PER_S
    return Estimate(
        examples=len(examples),
        train_examples=len(train),
        steps=steps,
        tokens=int(tokens_per_step * steps),
        step_s=step_s,
        steps_s=first + steps * step_s,
        startup_s=startup,
        samples_s=samples * per_token,
        saving_s=saves * save + finish,
        device=device_name(gpu),
        measurement=m,
    )


# -- measuring, and the estimate the studio and the CLI show ------------------------------


def measure(
    examples: list[dict], config, kind: str, home, steps: int = MEASURE_STEPS
) -> Measurement:
    """Run `steps` real steps of `kind` on `examples` in a fresh process (as a job would: the
    same imports, model load, tokenisation and trainer), time each part, record and return it.

    Nothing is registered: the checkpoints and the model go to a temporary folder.
    """
    with tempfile.TemporaryDirectory(prefix="cai-measure-") as tmp:
        folder = Path(tmp)
        with open(folder / "examples.jsonl", "w", encoding="utf-8") as f:
            for e in examples:
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
        (folder / "config.json").write_text(config.model_dump_json())
        out = folder / "measurement.json"
        argv = [
            sys.executable, "-m", "cai_engine.training.calibrate",
            "--home", str(home), "--kind", kind, "--folder", str(folder),
            "--steps", str(steps), "--started", repr(time.time()),
        ]  # fmt: skip
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=MEASURE_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise CaiError(
                f"measuring {steps} {kind} steps took over {MEASURE_TIMEOUT_S:.0f} s; "
                "lower the batch size or the max length"
            ) from None
        if done.returncode != 0 or not out.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise CaiError(f"measuring {steps} {kind} steps failed: {tail[0]}")
        measurement = Measurement(**json.loads(out.read_text()))
    record(home, config, kind, measurement)
    return measurement


def estimate_for(store: Store, kind: str, config, measure_missing: bool = True) -> Estimate:
    """The estimate of a validated `config`: its data as the job would read it, and this
    machine's measurement for its setting, measured first (a few steps) when there is none
    and `measure_missing` (several processes are only measured by a finished job)."""
    spec = TRAINING_KINDS[kind]
    examples = spec.data.preview(store, config)
    parameters = model_parameters(config.model, store.home)
    m = recorded(store.home, config, kind)
    if m is None and measure_missing and setting(config, kind)["processes"] == 1:
        m = measure(examples, config, kind, store.home)
    return estimate(examples, config, kind, parameters, m, gpu=machine()["gpu"])
