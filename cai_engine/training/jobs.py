"""Training job kinds (`sft`, `reward`, `dpo`, `rl`) and their submission checks.

Importing this module is cheap: torch, transformers and TRL load only in the job process.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cai_engine.errors import CaiError
from cai_engine.jobs import JobKind
from cai_engine.training.config import CONFIGS

CANCEL_GRACE = 180.0  # seconds for the step in flight to finish and a checkpoint to be written


def launcher(config: dict) -> list[str]:
    """The argv before `cai_engine.runner`: the job does not care which one started it."""
    how = config.get("launcher", "python")
    if how == "torchrun":
        return [
            sys.executable, "-m", "torch.distributed.run",
            "--standalone", "--nproc_per_node", str(config.get("nproc", 1)), "-m",
        ]  # fmt: skip
    if how == "accelerate":
        return [
            sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(config["accelerate_config"]), "-m",
        ]  # fmt: skip
    return [sys.executable, "-m"]


def submit(store, kind: str, config: dict, label: str | None = None):
    """Check a training config against the store and the data home, then submit the job.

    Checked before any process starts: the config, the base model (a local model that
    exists), the data (an export folder in the trainer's format, or a job of the right
    kind), the artifact name (not taken), and the reward model for RL.
    """
    from cai_engine import jobs
    from cai_engine.home import models_dir
    from cai_engine.training import data as training_data

    cfg = jobs.validate_config(kind, config)
    _check_base_model(cfg.model, store.home)
    if cfg.name and (models_dir(store.home) / cfg.name).exists():
        raise CaiError(f"a model named '{cfg.name}' already exists; choose another --name")
    if cfg.accelerate_config and not Path(cfg.accelerate_config).expanduser().is_file():
        raise CaiError(f"accelerate config file {cfg.accelerate_config} does not exist")
    if kind == "rl":
        from cai_engine.prompts import select_prompts

        select_prompts(store, cfg.data, cfg.limit)
        if cfg.reward_model:
            from cai_engine.training.rl import reward_model_path

            reward_model_path(cfg.reward_model, store.home)
        if cfg.constitution_reward:
            store.get_version(cfg.constitution_reward)
    else:
        folder = Path(cfg.data).expanduser()
        fmt = "sft" if kind == "sft" else "prefs"
        if folder.is_dir():
            examples, _ = training_data.read_export(folder)
            training_data.to_trl(examples, fmt, str(folder))
            config = {**config, "data": str(folder.resolve())}
        else:
            training_data.source_job(store, cfg.data, fmt)
    return jobs.submit(store, kind, config, label=label)


def _check_base_model(spec: str, home) -> None:
    from cai_engine.models import parse_spec
    from cai_engine.models.local import resolve_local_path

    parsed = parse_spec(spec)
    if parsed.kind in ("trained", "embedded"):
        resolve_local_path(parsed, home)  # names the models there when it is missing
    elif parsed.kind == "hf" and parsed.model.startswith(("/", "./", "../", "~")):
        if not (Path(parsed.model).expanduser() / "config.json").exists():
            raise CaiError(f"base model folder {parsed.model} does not exist or has no config.json")


def _run(kind: str):
    def run(ctx, config) -> None:
        from cai_engine.training.run import train

        train(ctx, config, kind)

    return run


DESCRIPTIONS = {
    "sft": "Supervised fine-tuning on revisions (TRL SFTTrainer).",
    "reward": "A soft-label reward model on preferences (TRL RewardTrainer).",
    "dpo": "Direct preference optimisation with soft labels (TRL DPOTrainer).",
    "rl": "Online RL against the reward model (TRL GRPOTrainer or RLOOTrainer).",
}

JOBS = {
    kind: JobKind(
        name=kind,
        config=CONFIGS[kind],
        run=_run(kind),
        description=DESCRIPTIONS[kind],
        cancel_grace=CANCEL_GRACE,
        launcher=launcher,
    )
    for kind in CONFIGS
}
SFT_JOB, REWARD_JOB, DPO_JOB, RL_JOB = (JOBS[k] for k in ("sft", "reward", "dpo", "rl"))
