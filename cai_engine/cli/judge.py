"""`cai judge`: qualify a judge on the gold set (`check`, a job, reused when stored), show the
check behind a job's numbers (`show`), list stored checks (`list`). Flags: `JudgeCheckConfig`."""

from __future__ import annotations

import argparse

from cai_engine.cli.common import (
    add_command,
    add_config_flags,
    add_job_flags,
    config_from_args,
    follow,
    open_store,
    table,
)


def print_check(store, job_id: str) -> bool:
    """The report of the check behind job `job_id`; False when it has none (yet)."""
    from cai_engine import jobs
    from cai_engine.judge_verdict import report

    jobs.ingest(store, jobs.get_job(store, job_id))
    check = store.judge_check_for_job(job_id)
    if check is None:
        return False
    print("\n".join(report(check)))
    return True


def cmd_check(args) -> int:
    from cai_engine.judge_check import JudgeCheckConfig, report, submit_check

    config = config_from_args(args, JudgeCheckConfig)
    store = open_store(args)
    job, found = submit_check(store, config, rerun=args.rerun, label=args.label)
    if found is not None:
        when = f" of {found.created_at:%Y-%m-%d %H:%M}" if found.created_at else ""
        print(f"reusing the stored check {found.job_id}{when} (--rerun checks again)")
        print("\n".join(report(found)))
        return 0
    print(f"submitted {job.id}")
    if not args.wait:
        print(f"`cai judge show {job.id}` prints its report when it ends")
        return 0
    code = follow(store, job)
    if code == 0:
        print()
        print_check(store, job.id)
    return code


def cmd_show(args) -> int:
    from cai_engine import jobs
    from cai_engine.errors import CaiError

    store = open_store(args)
    job = jobs.get_job(store, args.job)
    if not print_check(store, job.id):
        if job.kind in ("judge-check", "label", "eval"):
            raise CaiError(f"{job.kind} job {job.id} ({job.status}) has no judge check yet")
        raise CaiError(f"job {job.id} is a {job.kind} job: it has no judge")
    return 0


def cmd_list(args) -> int:
    from cai_engine.judge_verdict import badge

    checks = open_store(args).judge_checks(limit=args.limit)
    if not checks:
        print("no judge checks yet: `cai judge check --model SPEC --constitution NAME` runs one")
        return 0
    rows = [
        [
            c.job_id,
            f"{c.created_at:%Y-%m-%d %H:%M}" if c.created_at else "",
            c.model,
            c.constitution,
            c.settings,
            badge(c),
        ]
        for c in checks
    ]
    print(table(rows, ["check", "created", "judge", "constitution", "settings", "verdict"]))
    return 0


def register(sub, full: bool) -> None:
    p = sub.add_parser("judge", help="qualify a judge on the gold set before trusting it")
    jsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = add_command(
        jsub,
        "check",
        cmd_check,
        "score the gold set with a judge (a job; a stored check of the same judge is reused)",
    )
    c.add_argument(
        "--gold",
        dest="gold_files",
        action="append",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="your own gold pairs, a JSONL file (repeatable)",
    )
    c.add_argument(
        "--no-bundled-gold",
        dest="bundled",
        action="store_false",
        default=argparse.SUPPRESS,
        help="leave out the bundled gold set",
    )
    c.add_argument("--rerun", action="store_true", help="check again even if a stored check fits")
    if full:
        from cai_engine.judge_check import JudgeCheckConfig

        add_config_flags(
            c,
            JudgeCheckConfig,
            skip=("gold_files", "bundled", "gold_hash", "batch_pairs"),
            metavars={"model": "SPEC", "constitution": "NAME[@V]"},
        )
    add_job_flags(c)
    s = add_command(jsub, "show", cmd_show, "the judge check behind a job (check, label or eval)")
    s.add_argument("job", help="a judge-check, label or eval job id")
    ls = add_command(jsub, "list", cmd_list, "stored judge checks, newest first")
    ls.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
