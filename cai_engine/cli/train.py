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
    load_config_file,
    parse_sets,
    submit_and_follow,
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

    def submit_trainer(store: Store, cfg, label):
        return submit(store, args.trainer, cfg, label=label)

    return submit_and_follow(args, submit_trainer, config)


def register(sub, full: bool) -> None:
    tr = sub.add_parser(
        "train", help="train on the pipeline's data: sft, reward, dpo or rl (GRPO/RLOO), as a job"
    )
    tsub = tr.add_subparsers(dest="trainer", required=True, metavar="TRAINER")
    for kind, text in TRAINERS.items():
        p = tsub.add_parser(kind, help=text, description=text)
        add_set_flags(p, "a YAML file of config keys (flags override it)")
        add_job_flags(p)
        if full:
            from cai_engine.training.kinds import TRAINING_KINDS

            add_config_flags(p, TRAINING_KINDS[kind].config)
        p.set_defaults(func=cmd_train)
