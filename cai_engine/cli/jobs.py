"""`cai jobs`: list, show, follow, cancel, resume and submit jobs of any kind."""

from __future__ import annotations

import json
import sys
import time

from cai_engine.cli.common import (
    add_command,
    duration,
    follow,
    load_config_file,
    open_store,
    parse_sets,
    progress_text,
    submit_and_follow,
    table,
    time_left,
)

# Every status a job can be in (`jobs.ACTIVE` + `jobs.TERMINAL`), here so that `--help` needs
# no import of the job runtime.
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")


def cmd_jobs_list(args) -> int:
    from cai_engine import jobs
    from cai_engine.errors import CaiError

    if args.kind is not None and args.kind not in jobs.kinds():
        raise CaiError(f"--kind: no job kind '{args.kind}'; known kinds: {', '.join(jobs.kinds())}")
    if args.limit < 1:
        raise CaiError(f"--limit: {args.limit}; show at least 1 job")
    store = open_store(args)
    with store.session():  # settling jobs, then the page and its count: one opening of the file
        listed, total = jobs.job_page(store, kind=args.kind, statuses=args.status, limit=args.limit)
    rows = [
        [
            j.id,
            j.kind,
            j.status,
            progress_text(j),
            duration(j.elapsed),
            time_left(j),
            j.tokens or "",
            j.label or "",
        ]
        for j in listed
    ]
    print(table(rows, ["id", "kind", "status", "progress", "elapsed", "left", "tokens", "label"]))
    if len(listed) < total:
        print(f"showing {len(listed):,} of {total:,} jobs (newest first; --limit to see more)")
    return 0


def cmd_jobs_show(args) -> int:
    from cai_engine import jobs
    from cai_engine.progress import describe, token_rate

    store = open_store(args)
    jobs.reconcile(store)
    j = jobs.get_job(store, args.job)
    print(f"id:        {j.id}")
    print(f"kind:      {j.kind}" + (f"  ({j.label})" if j.label else ""))
    print(f"status:    {j.status}" + (f"  error: {j.error}" if j.error else ""))
    rate = token_rate(j, time.time())
    print(f"now:       {describe(j)}")
    print(
        f"progress:  {progress_text(j) or '-'}  elapsed: {duration(j.elapsed) or '-'}"
        + (f"  left: {time_left(j)}" if time_left(j) else "")
    )
    print(f"tokens:    {j.tokens:,}" + (f"  ({rate:.0f} tokens/s)" if rate else ""))
    print(f"pid:       {j.pid}  attempts: {j.attempts}")
    print(f"created:   {j.created_at:%Y-%m-%d %H:%M:%S}")
    print(f"run dir:   {j.run_dir}")
    print("config:    " + json.dumps(j.config, sort_keys=True))
    events = j.run.events(limit=args.events)
    if events:
        print("events:")
        for e in events:
            extra = {k: v for k, v in e.items() if k not in ("time", "event")}
            stamp = time.strftime("%H:%M:%S", time.localtime(e["time"]))
            print(
                f"  {stamp} {e['event']}" + (f" {json.dumps(extra, default=str)}" if extra else "")
            )
    return 0


def cmd_jobs_logs(args) -> int:
    from cai_engine import jobs

    store = open_store(args)
    j = jobs.get_job(store, args.job)
    path = j.run.log_path
    pos = 0
    while True:
        if path.exists():
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
        if not args.follow:
            return 0
        jobs.reconcile(store)
        if jobs.get_job(store, args.job).status not in jobs.ACTIVE:
            if path.exists() and path.stat().st_size > pos:
                continue  # print what was written after the last read, then stop
            return 0
        time.sleep(0.5)


def cmd_jobs_cancel(args) -> int:
    from cai_engine import jobs

    j = jobs.cancel(open_store(args), args.job, grace=args.grace)
    print(f"{j.id} {j.status}")
    return 0


def cmd_jobs_resume(args) -> int:
    from cai_engine import jobs

    store = open_store(args)
    j = jobs.resume(store, args.job)
    print(f"{j.id} resumed (attempt {j.attempts + 1})")
    return follow(store, j) if args.wait else 0


def cmd_jobs_submit(args) -> int:
    from cai_engine import jobs

    config = {**load_config_file(args.config), **parse_sets(args.set)}
    return submit_and_follow(
        args, lambda store, cfg, label: jobs.submit(store, args.kind, cfg, label=label), config
    )


def register(sub, full: bool) -> None:
    jb = sub.add_parser("jobs", help="list, show, follow, cancel, resume and submit jobs")
    jsub = jb.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add_command(
        jsub, "list", cmd_jobs_list, "jobs, newest first (settles jobs whose process is gone)"
    )
    p.add_argument("--kind", help="only jobs of this kind (critique, eval, sft, ...)")
    p.add_argument(
        "--status",
        action="append",
        choices=STATUSES,
        help="only jobs in this status (repeatable: --status running --status queued)",
    )
    p.add_argument("--limit", type=int, default=50, help="show the newest N jobs (default: 50)")
    p = add_command(jsub, "show", cmd_jobs_show, "a job's state, config and recent events")
    p.add_argument("job")
    p.add_argument("--events", type=int, default=20, help="how many recent events to show")
    p = add_command(jsub, "logs", cmd_jobs_logs, "print a job's run.log")
    p.add_argument("job")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p = add_command(
        jsub, "cancel", cmd_jobs_cancel, "SIGTERM the job, SIGKILL after a grace period"
    )
    p.add_argument("job")
    p.add_argument(
        "--grace",
        type=float,
        default=None,
        help="seconds before SIGKILL (default: the job kind's: 10, or long enough for training "
        "to write a checkpoint)",
    )
    p = add_command(
        jsub,
        "resume",
        cmd_jobs_resume,
        "restart a failed, cancelled or interrupted job where it stopped",
    )
    p.add_argument("job")
    p.add_argument("--wait", action="store_true", help="follow it until it ends")
    p = add_command(
        jsub, "submit", cmd_jobs_submit, "submit a job of any kind (e.g. tick, to check jobs work)"
    )
    p.add_argument("kind")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a config value (repeatable)"
    )
    p.add_argument("--config", help="a YAML file of config values")
    p.add_argument("--label")
    p.add_argument("--wait", action="store_true", help="follow it until it ends")
