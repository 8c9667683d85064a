"""`cai critique`: SL-CAI critique→revision traces, as a job. Flags: `CritiqueConfig`."""

from __future__ import annotations

import argparse

from cai_engine.cli.common import (
    add_command,
    add_config_flags,
    add_job_flags,
    config_from_args,
    submit_and_follow,
)

SAMPLING = ("max_new_tokens", "temperature", "seed")


def cmd_critique(args) -> int:
    from cai_engine.critique import CritiqueConfig, submit

    return submit_and_follow(args, submit, config_from_args(args, CritiqueConfig, SAMPLING))


def register(sub, full: bool) -> None:
    p = add_command(
        sub,
        "critique",
        cmd_critique,
        "SL-CAI: answer, critique and revise under a constitution, as a job",
    )
    if full:
        from cai_engine.critique import CritiqueConfig

        add_config_flags(p, CritiqueConfig, sampling=SAMPLING, skip=("shard_rows",), required=True)
        p.add_argument(
            "--per-prompt",
            dest="principle_sampling",
            action="store_const",
            const="per_prompt",
            default=argparse.SUPPRESS,
            help="one principle for all rounds of a prompt (--principle-sampling per_prompt)",
        )
    add_job_flags(p, "follow it with a progress bar until it ends")
