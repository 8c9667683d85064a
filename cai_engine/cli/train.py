"""`cai train`: sft, reward, dpo or rl (GRPO/RLOO), as a job. Flags: `training.config`.

The training configs are imported only when the command line is a `train` one, so other
commands' `--help` stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai_engine.cli.common import (
    add_config_flags,
    add_job_flags,
    add_set_flags,
    config_from_args,
    follow,
    load_config_file,
    open_store,
    parse_sets,
)

if TYPE_CHECKING:
    from cai_engine.store import Store


TRAINERS = {
    "sft": "supervised fine-tuning on revisions (TRL SFTTrainer)",
    "reward": "a soft-label reward model on preferences (TRL RewardTrainer)",
    "dpo": "direct preference optimisation with soft labels (TRL DPOTrainer)",
    "rl": "online RL against a reward model (TRL GRPOTrainer or RLOOTrainer)",
}


def cmd_train(args) -> int:
    from cai_engine.training.jobs import submit
    from cai_engine.training.kinds import TRAINING_KINDS

    # 1) the --config file, 2) the flags given, 3) --set: each overrides the one before
    config = load_config_file(args.config, f"{args.trainer} config keys")
    config.update(config_from_args(args, TRAINING_KINDS[args.trainer].config))
    config.update(parse_sets(args.set))
    if args.estimate:
        return print_estimate(open_store(args), args.trainer, config, measure=True)

    store = open_store(args)
    job = submit(store, args.trainer, config, label=args.label)
    print(f"submitted {job.id}", flush=True)
    print_estimate(store, args.trainer, job.config, measure=False)
    return follow(store, job) if args.wait else 0


def print_estimate(store: Store, kind: str, config: dict, measure: bool) -> int:
    """Print the estimate: with `measure`, a few real steps are timed first when this machine
    has no measurement for the setting (else it is a guess, and says so)."""
    from cai_engine import jobs
    from cai_engine.errors import CaiError
    from cai_engine.training import estimate

    cfg = jobs.validate_config(kind, config)
    if measure and estimate.recorded(store.home, cfg, kind) is None:
        print(
            f"measuring {estimate.MEASURE_STEPS} {kind} steps on this machine (once)…", flush=True
        )
    try:
        est = estimate.estimate_for(store, kind, cfg, measure_missing=measure)
    except CaiError as e:
        if measure:
            raise
        print(f"estimate: not available ({e})")  # the job itself is started: do not fail it
        return 1
    print(f"estimate: {est.text()}", flush=True)
    return 0


def register(sub, full: bool) -> None:
    tr = sub.add_parser(
        "train", help="train on the pipeline's data: sft, reward, dpo or rl (GRPO/RLOO), as a job"
    )
    tsub = tr.add_subparsers(dest="trainer", required=True, metavar="TRAINER")
    for kind, text in TRAINERS.items():
        p = tsub.add_parser(kind, help=text, description=text)
        add_set_flags(p, "a YAML file of config keys (flags override it)")
        add_job_flags(p)
        p.add_argument(
            "--estimate",
            action="store_true",
            help="print how long the job would take, and start nothing (the first time for a "
            "model and setting, a few real steps are timed on this machine)",
        )
        if full:
            from cai_engine.training.kinds import TRAINING_KINDS

            add_config_flags(p, TRAINING_KINDS[kind].config)
        p.set_defaults(func=cmd_train)
