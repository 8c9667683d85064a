"""`cai review`: human spot-checks of AI labels, and how often people agree with the AI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai_engine.cli.common import add_command, open_store, table

if TYPE_CHECKING:
    from cai_engine.store import Store


def label_job(store: Store, job_id: str):
    """A label job, its finished shards ingested; any other kind of job is refused."""
    from cai_engine import jobs
    from cai_engine.errors import CaiError

    job = jobs.get_job(store, job_id)
    if job.kind != "label":
        raise CaiError(f"job {job_id} is a {job.kind} job; --labels needs a label job")
    jobs.ingest(store, job)
    return job


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def cmd_review_stats(args) -> int:
    from cai_engine.judge_verdict import judge_line

    store = open_store(args)
    job = label_job(store, args.labels)
    with store.session():  # the counts and the agreement, asked of DuckDB in one opening
        labels = store.label_facets(job.id)["labels"]
        a = store.agreement(job.id)
        construction = store.construction_agreement(job.id)  # None: no contrastive pair
        check = store.judge_check_for_job(job.id)
    kappa = "–" if a.kappa is None else f"{a.kappa:.3f}"
    print(f"label job {job.id} ({job.status}): {labels} labels")
    if job.config.get("source") == "construction":
        print(f"labelled by construction (contrastive pairs, score {job.config.get('score')})")
    elif job.config.get("source") == "dataset":  # imported with its pairs: no judge was asked
        print(f"labels imported with pairs job {job.config.get('pairs')} (cai import): no judge")
    else:  # every number below is this judge's: say first whether it can judge
        print(judge_line(job.config.get("model", ""), check))
    if construction is not None:
        print(f"{construction.kind} pairs: {construction.describe()}")
    print(
        f"position consistency: {_pct(a.consistency_rate)}; first-shown response won "
        f"{_pct(a.first_position_rate)} of orders"
        + ("  ** position bias detected **" if a.position_bias else "")
    )
    if a.position is not None:
        print(f"position bias: {a.position.describe()}")
    print(
        f"reviewed: {a.reviews} verdicts ({a.ties} tie, {a.both_bad} both bad, "
        f"{a.ai_ties} on AI ties); decisive: {a.decisive}"
    )
    who = {"construction": "the construction", "dataset": "the dataset"}.get(
        job.config.get("source"), "the AI"
    )
    print(f"agreement with {who}: {_pct(a.rate)} ({a.agree}/{a.decisive}); Cohen's kappa: {kappa}")
    if a.by_principle:
        print("\nby principle:")
        rows = [
            [r["principle"], r["reviewed"], r["agree"], _pct(r["rate"])] for r in a.by_principle
        ]
        print(table(rows, ["principle", "decisive", "agree", "rate"]))
    print("\ncalibration (AI confidence vs human agreement):")
    rows = [[r["confidence"], r["reviewed"], _pct(r["agreement"])] for r in a.calibration]
    print(table(rows, ["confidence", "decisive", "agreement"]))
    print("\nper principle:")
    rows = [[r["principle"], r["labels"], r["reviewed"], r["remaining"]] for r in a.strata]
    print(table(rows, ["principle", "labels", "reviewed", "remaining"]))
    return 0


def cmd_review_add(args) -> int:
    from cai_engine import review

    store = open_store(args)
    label_job(store, args.labels)
    review_id = review.record(
        store,
        args.labels,
        args.prompt_id,
        args.pair,
        args.reviewer,
        args.verdict,
        "AB",
        args.note,
    )
    print(
        f"recorded {args.verdict} on {args.prompt_id}/{args.pair} by {args.reviewer} ({review_id})"
    )
    return 0


def register(sub, full: bool) -> None:
    rv = sub.add_parser("review", help="human spot-checks of AI labels")
    rsub = rv.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add_command(
        rsub, "stats", cmd_review_stats, "agreement, kappa, calibration and position consistency"
    )
    p.add_argument("--labels", required=True, metavar="JOB", help="a label job")
    p = add_command(
        rsub, "add", cmd_review_add, "record a verdict (appended; earlier ones are kept)"
    )
    p.add_argument("--labels", required=True, metavar="JOB", help="a label job")
    p.add_argument("--prompt-id", required=True)
    p.add_argument("--pair", type=int, required=True)
    p.add_argument("--verdict", required=True, choices=["A", "B", "tie", "both_bad", "skip"])
    p.add_argument("--reviewer", required=True)
    p.add_argument("--note")
