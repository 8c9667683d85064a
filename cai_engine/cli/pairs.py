"""`cai pairs`: RL-CAI pairs of answers to label, as a job. Flags: `PairsConfig`."""

from __future__ import annotations

from cai_engine.cli.common import (
    add_command,
    add_config_flags,
    add_job_flags,
    config_from_args,
    submit_and_follow,
)

SAMPLING = ("max_new_tokens", "temperature", "seed")


def cmd_pairs(args) -> int:
    from cai_engine.pairs import PairsConfig, submit_pairs

    return submit_and_follow(args, submit_pairs, config_from_args(args, PairsConfig, SAMPLING))


def register(sub, full: bool) -> None:
    p = add_command(sub, "pairs", cmd_pairs, "RL-CAI: pairs of answers to label, as a job")
    if full:
        from cai_engine.pairs import PairsConfig

        add_config_flags(
            p,
            PairsConfig,
            sampling=SAMPLING,
            skip=("shard_rows",),
            metavars={"from_critique": "JOB"},
        )
    add_job_flags(p)
