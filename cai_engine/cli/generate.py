"""`cai generate`: answer a prompt set with a model, as a job. Flags: `GenerateConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai_engine.cli.common import (
    add_command,
    add_config_flags,
    add_job_flags,
    config_from_args,
    submit_and_follow,
)

if TYPE_CHECKING:
    from cai_engine.store import Store


SAMPLING = ("max_new_tokens", "temperature", "seed")


def cmd_generate(args) -> int:
    from cai_engine import jobs
    from cai_engine.generate import GenerateConfig

    def submit(store: Store, config, label):
        return jobs.submit(store, "generate", config, label=label)

    return submit_and_follow(args, submit, config_from_args(args, GenerateConfig, SAMPLING))


def register(sub, full: bool) -> None:
    p = add_command(sub, "generate", cmd_generate, "answer a prompt set with a model, as a job")
    if full:
        from cai_engine.generate import GenerateConfig

        add_config_flags(p, GenerateConfig, sampling=SAMPLING, skip=("shard_rows",), required=True)
    add_job_flags(p)
