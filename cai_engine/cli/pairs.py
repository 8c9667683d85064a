"""`cai pairs`: RL-CAI pairs of answers to label, as a job. Flags: `PairsConfig`."""

from __future__ import annotations

from cai_engine.cli.common import (
    add_command,
    add_config_flags,
    add_job_flags,
    config_from_args,
    follow,
    open_store,
)

SAMPLING = ("max_new_tokens", "temperature", "seed")


def cmd_pairs(args) -> int:
    from cai_engine.pairs import PairsConfig, submit_pairs

    store = open_store(args)
    job = submit_pairs(store, config_from_args(args, PairsConfig, SAMPLING), args.label)
    print(f"submitted {job.id}")
    code = follow(store, job) if args.wait else 0
    if job.config.get("contrastive"):  # its labels need no judge: say how to make them
        print(
            "its pairs know their better side; label them by construction"
            + (" when it finishes" if not args.wait else "")
            + f": cai label --pairs {job.id} --from-construction"
        )
    return code


def register(sub, full: bool) -> None:
    p = add_command(sub, "pairs", cmd_pairs, "RL-CAI: pairs of answers to label, as a job")
    if full:
        from cai_engine.pairs import PairsConfig

        add_config_flags(
            p,
            PairsConfig,
            sampling=SAMPLING,
            skip=("shard_rows", "imported"),
            metavars={"from_critique": "JOB", "constitution": "NAME"},
        )
    add_job_flags(p)
