"""`cai demo`: the whole pipeline on small defaults, as a chain of jobs. Flags: `DemoConfig`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from cai_engine.cli.common import (
    add_command,
    add_config_flags,
    config_from_args,
    open_store,
    progress_text,
)
from cai_engine.cli.eval import print_eval

if TYPE_CHECKING:
    from cai_engine.store import Store


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}"


def _stage_printer(store: Store, demo, started: float):
    """A `jobs.wait` callback printing the stage in flight, once per change."""
    from cai_engine import jobs

    last = [None]

    def show(dj):
        stages = demo.read_stages(dj.run)
        stage = dj.live.get("stage")
        line = f"{dj.status}"
        if stage and stage in stages:
            child = jobs.get_job(store, stages[stage])
            n = demo.STAGES.index(stage) + 1
            line = (
                f"[{n}/{len(demo.STAGES)}] {demo.stage_title(stage, dj.config.get('pairs'))}: "
                f"{child.id} "
                f"{child.status} {progress_text(child)}"
            )
        if line != last[0]:
            print(f"{_clock(time.monotonic() - started)} {line}", flush=True)
            last[0] = line

    return show


def cmd_demo(args) -> int:
    from cai_engine import demo, jobs

    store = open_store(args)
    if args.resume:
        j = jobs.resume(store, args.resume)
    else:
        j = demo.submit_demo(store, config_from_args(args, demo.DemoConfig))
    print(f"demo {j.id}: {len(demo.STAGES)} stages, each its own job (see `cai jobs list`)")
    if args.no_wait:
        return 0
    started = time.monotonic()
    try:
        final = jobs.wait(store, j.id, poll=1.0, on_update=_stage_printer(store, demo, started))
    except KeyboardInterrupt:
        print(f"\nstopped following; the demo goes on. `cai jobs cancel {j.id}` stops it.")
        return 130
    took = time.monotonic() - started
    if final.status != "succeeded":
        print(f"demo {final.id} {final.status}: {final.error}", file=sys.stderr)
        print(f"`cai demo --resume {final.id}` continues from the stage that stopped")
        return 1
    stages = demo.read_stages(final.run)
    print(f"demo finished in {_clock(took)} ({took:.0f} s)")
    print_eval(store, stages["eval"])
    return 0


def register(sub, full: bool) -> None:
    p = add_command(
        sub,
        "demo",
        cmd_demo,
        "the whole pipeline on small defaults, as a chain of jobs (about 15 min)",
    )
    p.add_argument(
        "--tiny",
        dest="profile",
        action="store_const",
        const="tiny",
        default=argparse.SUPPRESS,
        help="a random tiny model and a handful of prompts (~1 min; --profile tiny)",
    )
    if full:
        from cai_engine.demo import DemoConfig

        add_config_flags(p, DemoConfig)
    p.add_argument("--resume", metavar="JOB", help="resume a demo that stopped")
    p.add_argument("--no-wait", action="store_true", help="start it and return")
