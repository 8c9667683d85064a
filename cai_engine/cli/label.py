"""`cai label`: RL-CAI soft AI preference labels for a pairs job, as a job. Flags: `LabelConfig`."""

from __future__ import annotations

import argparse

from cai_engine.cli.common import (
    add_command,
    add_config_flags,
    add_job_flags,
    config_from_args,
    submit_and_follow,
)


def cmd_label(args) -> int:
    from cai_engine.labels import LabelConfig, submit_labels

    return submit_and_follow(args, submit_labels, config_from_args(args, LabelConfig))


def register(sub, full: bool) -> None:
    p = add_command(
        sub, "label", cmd_label, "RL-CAI: soft AI preference labels for a pairs job, as a job"
    )
    if full:
        from cai_engine.labels import LabelConfig

        add_config_flags(
            p,
            LabelConfig,
            skip=("batch_pairs", "annotator"),
            required=True,
            metavars={"pairs": "JOB", "constitution": "NAME"},
        )
        p.add_argument(
            "--from-construction",
            dest="source",
            action="store_const",
            const="construction",
            default=argparse.SUPPRESS,
            help="label contrastive pairs by construction, no model loaded (--source construction)",
        )
        p.add_argument(
            "--one-order",
            dest="both_orders",
            action="store_false",
            default=argparse.SUPPRESS,
            help="score only as given (--no-both-orders)",
        )
    add_job_flags(p)
