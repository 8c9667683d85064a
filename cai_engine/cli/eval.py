"""`cai eval`: evaluate models (win rates, refusals, lengths), as a job. Flags: `EvalConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai_engine.cli.common import (
    add_command,
    add_config_flags,
    add_job_flags,
    config_from_args,
    open_store,
    submit_and_follow,
    table,
)

if TYPE_CHECKING:
    from cai_engine.store import Store


SAMPLING = ("max_new_tokens", "temperature", "seed")


def print_eval(store: Store, job_id: str) -> None:
    """An eval job's metrics, one column per model, then its revision progress if measured."""
    from cai_engine import eval as evaluation
    from cai_engine import jobs
    from cai_engine.judge_verdict import is_judge_metric, judge_line

    jobs.ingest(store, jobs.get_job(store, job_id))
    results = store.eval_results(job_id)
    if not results:
        print(f"eval job {job_id} has no results yet")
        return
    config = jobs.get_job(store, job_id).config
    models = evaluation.EvalConfig(**config).answering
    rows = evaluation.results_table(results, models)
    names = [f"[{i + 1}]" for i in range(len(models))]
    for name, m in zip(names, models, strict=True):
        print(f"{name} {m}")
    check = store.judge_check_for_job(job_id)
    print(judge_line(config.get("judge", ""), check))
    header = ["metric", *names]
    if check is not None and not check.qualified:  # lead with what needs no judge
        rules = [r for r in rows if not is_judge_metric(r["metric"])]
        judged = [r for r in rows if is_judge_metric(r["metric"])]
        print(table([[r["metric"], *[r[m] for m in models]] for r in rules], header))
        print("\nthe judge's numbers (its check says they are not to be trusted):")
        rows = judged
    print(table([[r["metric"], *[r[m] for m in models]] for r in rows], header))
    revision = [r for r in results if r["metric"].startswith("revision_round_")]
    if revision:
        print(f"revision progress of {revision[0]['model']} (round k preferred over k-1):")
        for r in revision:
            print(f"  {r['metric']}: {evaluation.format_result(r)}")


def cmd_eval_run(args) -> int:
    from cai_engine.eval import EvalConfig, submit_eval

    config = config_from_args(args, EvalConfig, SAMPLING)
    return submit_and_follow(args, submit_eval, config, then=print_eval)


def cmd_eval_show(args) -> int:
    from cai_engine import jobs
    from cai_engine.errors import CaiError

    store = open_store(args)
    job = jobs.get_job(store, args.job)
    if job.kind != "eval":
        raise CaiError(f"job {job.id} is a {job.kind} job, not an eval job")
    print(f"eval job {job.id} ({job.status})")
    print_eval(store, job.id)
    return 0


def register(sub, full: bool) -> None:
    ev = sub.add_parser("eval", help="evaluate models: win rates, refusals, lengths")
    evsub = ev.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add_command(
        evsub, "run", cmd_eval_run, "answer the test sets with each model and judge them, as a job"
    )
    if full:
        from cai_engine.eval import EvalConfig

        add_config_flags(
            p,
            EvalConfig,
            sampling=SAMPLING,
            skip=("batch",),
            required=True,
            metavars={"models": "SPEC", "critique_job": "JOB"},
        )
    add_job_flags(p, "follow it, then print the results")
    p = add_command(
        evsub, "show", cmd_eval_show, "an eval job's metrics, with intervals and sample sizes"
    )
    p.add_argument("job")
