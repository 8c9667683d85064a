"""Training job kinds (one per `TRAINING_KINDS` entry) and their submission checks.

Importing this module is cheap: torch, transformers and TRL load only in the job process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.home import models_dir
from cai_engine.jobs import JobKind
from cai_engine.models import parse_spec
from cai_engine.models.local import resolve_local_path
from cai_engine.training.kinds import TRAINING_KINDS

if TYPE_CHECKING:
    from cai_engine.runner import JobContext
    from cai_engine.store import Store


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


def submit(store: Store, kind: str, config: dict, label: str | None = None):
    """Check a training config against the store and the data home, then submit the job.

    Checked before any process starts: the config, the base model (a local model that
    exists), the data (an export folder in the trainer's format, a job of a kind it can be
    exported from, or a prompt set), the artifact name (not taken), and the config's own
    checks against the store (the reward model for RL).
    """

    cfg = jobs.validate_config(kind, config)
    _check_base_model(cfg.model, store.home)
    if cfg.name and (models_dir(store.home) / cfg.name).exists():
        raise CaiError(f"a model named '{cfg.name}' already exists; choose another --name")
    if cfg.accelerate_config and not Path(cfg.accelerate_config).expanduser().is_file():
        raise CaiError(f"accelerate config file {cfg.accelerate_config} does not exist")
    config = {**config, **TRAINING_KINDS[kind].data.check(store, cfg)}
    cfg.check_store(store)
    return jobs.submit(store, kind, config, label=label)


def _check_base_model(spec: str, home) -> None:

    parsed = parse_spec(spec)
    if parsed.kind in ("trained", "embedded"):
        resolve_local_path(parsed, home)  # names the models there when it is missing
    elif parsed.kind == "hf" and parsed.model.startswith(("/", "./", "../", "~")):
        if not (Path(parsed.model).expanduser() / "config.json").exists():
            raise CaiError(f"base model folder {parsed.model} does not exist or has no config.json")


def _run(kind: str):
    def run(ctx: JobContext, config) -> None:
        from cai_engine.training.run import train

        train(ctx, config, kind)

    return run


JOBS = {
    kind: JobKind(
        name=kind,
        config=spec.config,
        run=_run(kind),
        description=spec.description,
        cancel_grace=CANCEL_GRACE,
        launcher=launcher,
    )
    for kind, spec in TRAINING_KINDS.items()
}
