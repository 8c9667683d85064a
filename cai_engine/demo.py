"""`cai demo`: the whole pipeline on small defaults, as a chain of real jobs.

The `demo` job is an orchestrator: it submits each stage as its own job (visible live on the
studio's pages like any other), waits for it, and feeds its output to the next stage:

1. critique: red-team training prompts, 2 rounds of critique and revision;
2. sft: the base model fine-tuned on the final revisions;
3. pairs: two sampled answers per prompt from the SFT model;
4. label: the base model's soft AI preference labels for those pairs;
5. dpo: the SFT model trained with DPO on the labels;
6. eval: base vs SFT vs DPO on the test splits, plus the critique job's revision progress.

The stage jobs it started are recorded in the run folder (`stages.json`), so a resumed demo
resumes the stage that stopped and skips the ones that finished. Cancelling the demo cancels
the stage in flight. Profiles: `default` (the embedded SmolLM2-135M-Instruct, sized to finish
in under 20 minutes on a 2-core CPU) and `tiny` (a random 3M-parameter model with the same
tokenizer and a handful of prompts: every stage runs for real in about a minute, and its
text is gibberish by design).

With `pairs: contrastive` (`cai demo --pairs contrastive`) stages 3 to 5 need no judge: the
SFT model answers each prompt under a positive and a negative system prompt (RLCD, see
`contrastive`), the label stage labels those pairs by construction, and DPO trains on them.
Everything else is the same, so the two demos' eval tables compare side by side.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from cai_engine import jobs
from cai_engine.errors import CaiError, JobCancelled
from cai_engine.eval import check_models, submit_eval
from cai_engine.home import resolve_home
from cai_engine.jobs import JobKind
from cai_engine.labels import submit_labels
from cai_engine.models import EMBEDDED
from cai_engine.models.embedded import ensure_embedded
from cai_engine.models.tiny import make_tiny_model
from cai_engine.pairs import submit_pairs
from cai_engine.progress import describe

if TYPE_CHECKING:
    from cai_engine.runner import JobContext
    from cai_engine.store import Store


STAGES = ("critique", "sft", "pairs", "label", "dpo", "eval")
STAGE_TITLES = {
    "critique": "Critique and revise red-team answers",
    "sft": "Fine-tune on the revisions (SFT)",
    "pairs": "Sample answer pairs from the SFT model",
    "label": "AI preference labels",
    "dpo": "DPO on the AI labels",
    "eval": "Evaluate base vs SFT vs DPO",
}
# the stages that differ with contrastive pairs (RLCD)
CONTRASTIVE_TITLES = {
    "pairs": "Sample contrastive pairs (positive and negative prompts) from the SFT model",
    "label": "Labels by construction (no judge)",
    "dpo": "DPO on the contrastive labels",
}
POLL_S = 1.0


def stage_title(stage: str, pairs: str | None = "samples") -> str:
    """A stage's title in a demo whose pairs are `pairs` ("samples" or "contrastive")."""
    return (CONTRASTIVE_TITLES if pairs == "contrastive" else STAGE_TITLES).get(
        stage, STAGE_TITLES[stage]
    )


class Profile(BaseModel):
    """The sizes of one demo run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_prompts: int
    test_prompts: int
    rounds: int
    answer_tokens: int
    sft: dict
    dpo: dict
    estimate_min: float  # what the profile takes on a 2-core CPU, for the button's caption


PROFILES: dict[str, Profile] = {
    "default": Profile(
        train_prompts=24,
        test_prompts=16,
        rounds=2,
        answer_tokens=96,
        sft={"epochs": 2, "batch_size": 4, "grad_accum": 1, "learning_rate": 5e-5},
        dpo={"epochs": 2, "batch_size": 4, "grad_accum": 1, "learning_rate": 5e-6, "beta": 0.1},
        estimate_min=15,
    ),
    "tiny": Profile(
        train_prompts=4,
        test_prompts=3,
        rounds=2,
        answer_tokens=12,
        sft={"max_steps": 2, "batch_size": 2, "grad_accum": 1, "sample_prompts": 1},
        dpo={"max_steps": 2, "batch_size": 2, "grad_accum": 1, "sample_prompts": 1},
        estimate_min=1.5,
    ),
}


class DemoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: Literal["default", "tiny"] = Field(
        "default", description="default: the embedded model; tiny: a random model, in a minute."
    )
    constitution: str = Field("harmless", description="The constitution every stage uses.")
    model: str | None = Field(
        None,
        description="Base model spec (default: the embedded model; tiny: a random tiny model).",
    )
    seed: int = Field(0, ge=0, description="Seeds every stage.")
    pairs: Literal["samples", "contrastive"] = Field(
        "samples",
        description="samples: two sampled answers per prompt, labelled by the base model as"
        " judge; contrastive: answers under a positive and a negative system prompt (RLCD),"
        " labelled by construction.",
    )


def tiny_model_spec(home) -> str:
    """The tiny random model for the tiny profile, built once under the data home."""

    path = make_tiny_model(resolve_home(home) / "cache" / "tiny-demo-model")
    return f"hf:{path}?dtype=float32"


def stage_config(stage: str, cfg: DemoConfig, base: str, done: dict[str, str]) -> dict:
    """The config of one stage, given the base model and the jobs of the stages before it."""
    p = PROFILES[cfg.profile]
    sampling = {"temperature": 0.7, "max_new_tokens": p.answer_tokens, "seed": cfg.seed}
    train = {"seed": cfg.seed, "save_steps": 1000}
    if stage == "critique":
        return {
            "constitution": cfg.constitution,
            "prompts": "red-team:train",
            "model": base,
            "rounds": p.rounds,
            "limit": p.train_prompts,
            "seed": cfg.seed,
            "sampling": sampling,
        }
    if stage == "sft":
        return {"data": done["critique"], "model": base, **train, **p.sft}
    if stage == "pairs":
        contrastive = (
            {"contrastive": True, "constitution": cfg.constitution}
            if cfg.pairs == "contrastive"
            else {}
        )
        return {
            "prompts": "red-team:train",
            "model": f"model:{done['sft']}",
            "samples": 2,
            "limit": p.train_prompts,
            "seed": cfg.seed,
            "sampling": {**sampling, "temperature": 1.0},
            **contrastive,
        }
    if stage == "label" and cfg.pairs == "contrastive":
        return {"pairs": done["pairs"], "source": "construction"}
    if stage == "label":
        return {
            "pairs": done["pairs"],
            "constitution": cfg.constitution,
            "model": base,
            "seed": cfg.seed,
        }
    if stage == "dpo":
        return {"data": done["label"], "model": f"model:{done['sft']}", **train, **p.dpo}
    if stage == "eval":
        return {
            "models": [base, f"model:{done['sft']}", f"model:{done['dpo']}"],
            "judge": base,
            "constitution": cfg.constitution,
            "limit": p.test_prompts,
            "critique_job": done["critique"],
            "seed": cfg.seed,
            "sampling": sampling,
        }
    raise ValueError(f"unknown demo stage {stage}")


def submit_stage(store: Store, stage: str, config: dict, label: str):
    """Submit one stage through the same checks the CLI and the studio use."""
    if stage == "critique":
        from cai_engine.critique import submit

        return submit(store, config, label)
    if stage == "pairs":
        return submit_pairs(store, config, label)
    if stage == "label":
        return submit_labels(store, config, label)
    if stage == "eval":
        return submit_eval(store, config, label)
    from cai_engine.training.jobs import submit

    return submit(store, stage, config, label)


def read_stages(run) -> dict[str, str]:
    """stage -> job id, for the stages a demo job has started."""
    path = run.path / "stages.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _write_stages(run, stages: dict[str, str]) -> None:
    path = run.path / "stages.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stages, indent=1))
    os.replace(tmp, path)


def run_demo(ctx: JobContext, config: DemoConfig) -> None:

    ctx.progress(total=len(STAGES), unit="stages")
    ctx.phase("preparing the model", setup=True)
    base = config.model or (
        tiny_model_spec(ctx.store.home) if config.profile == "tiny" else EMBEDDED
    )
    if config.profile == "default" and base == EMBEDDED:
        ensure_embedded(ctx.store.home, log=lambda *a: ctx.event("embedded_model", note=a[0]))
    stages = read_stages(ctx.run)
    succeeded: dict[str, str] = {}
    tokens = 0  # of the stages that finished; the stage in flight adds its own
    ctx.progress(done=0, total=len(STAGES), tokens=0, force=True)
    started = time.monotonic()
    for n, stage in enumerate(STAGES):
        job_id = stages.get(stage)
        job = jobs.get_job(ctx.store, job_id) if job_id else None
        if job is not None and job.status in jobs.RESUMABLE:
            job = jobs.resume(ctx.store, job.id)
            ctx.event("stage_resumed", stage=stage, job=job.id)
        elif job is None:
            ctx.check_cancelled()
            cfg = stage_config(stage, config, base, succeeded)
            job = submit_stage(ctx.store, stage, cfg, label=f"demo {ctx.job_id}: {stage}")
            stages[stage] = job.id
            _write_stages(ctx.run, stages)
            ctx.event("stage_started", stage=stage, job=job.id)
        ctx.progress(stage=stage, stage_job=job.id, force=True)
        # the demo has no pace of its own (its stages differ too much): it says which stage
        # runs, with that stage's own progress and time left
        title = f"stage {n + 1}/{len(STAGES)}, {stage_title(stage, config.pairs)}"
        ctx.phase(title)
        t0 = time.monotonic()
        job = _wait(ctx, job.id, title, tokens)
        if job.status != "succeeded":
            raise CaiError(
                f"stage {stage} ({job.id}) {job.status}: {job.error or 'see its log'}; "
                "resume the demo to retry it"
            )
        succeeded[stage] = job.id
        tokens += job.tokens
        ctx.event(
            "stage_finished", stage=stage, job=job.id, seconds=round(time.monotonic() - t0, 1)
        )
        ctx.progress(done=n + 1, tokens=tokens, force=True)
    seconds = time.monotonic() - started
    ctx.metric(seconds=seconds, **{f"{s}_job": j for s, j in succeeded.items()})
    ctx.event("demo_finished", seconds=round(seconds, 1), eval_job=succeeded["eval"])


def _wait(ctx: JobContext, job_id: str, title: str = "", tokens: int = 0):
    """Wait for a stage, showing its progress as the demo's phase ("stage 2/6, SFT: step
    3/20 · about 1 min left") and counting its tokens as the demo's; a cancelled demo cancels
    the stage in flight and stops."""

    while True:
        if ctx.cancelled:
            job = jobs.get_job(ctx.store, job_id)
            if job.status in jobs.ACTIVE:
                jobs.cancel(ctx.store, job_id)
            raise JobCancelled()
        job = jobs.wait(ctx.store, job_id, timeout=POLL_S, poll=POLL_S / 4)
        if job.status not in jobs.ACTIVE:
            return job
        ctx.progress(phase=f"{title}: {describe(job, status=False)}", tokens=tokens + job.tokens)


def submit_demo(store: Store, config: dict | None = None, label: str | None = None):

    config = dict(config or {})
    cfg = jobs.validate_config("demo", config)
    # Every stage uses this exact version, even if a newer one is saved while the demo runs.
    config["constitution"] = store.get_version(cfg.constitution).pinned
    if cfg.model:
        check_models(store, [cfg.model])
    running = [j for j in jobs.list_jobs(store, kind="demo") if j.status in jobs.ACTIVE]
    if running:
        raise CaiError(f"demo {running[0].id} is still running; wait for it or cancel it first")
    name = cfg.profile + (", contrastive pairs" if cfg.pairs == "contrastive" else "")
    return jobs.submit(store, "demo", config, label=label or f"demo ({name})")


JOB = JobKind(
    name="demo",
    config=DemoConfig,
    run=run_demo,
    description="The whole pipeline on small defaults: critique, SFT, pairs, labels, DPO, eval.",
    cancel_grace=200.0,  # time for the stage in flight (a trainer checkpoints) to stop
)


def stage_rows(store: Store, demo_job) -> list[dict]:
    """One row per stage of a demo job: its title, job, status and progress, for display."""

    started = read_stages(demo_job.run)
    rows = []
    for n, stage in enumerate(STAGES, 1):
        job = jobs.get_job(store, started[stage]) if stage in started else None
        rows.append(
            {
                "step": n,
                "stage": stage_title(stage, demo_job.config.get("pairs")),
                "kind": stage,
                "job": job.id if job else None,
                "status": job.status if job else "waiting",
                "progress": job.progress if job else None,
            }
        )
    return rows


def latest_demo(store: Store):
    """The newest demo job, or None."""

    found = jobs.list_jobs(store, kind="demo", limit=1)
    return found[0] if found else None
