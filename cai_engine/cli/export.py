"""`cai export`: training data in TRL's formats (SFT, preferences), each with a manifest."""

from __future__ import annotations

from pathlib import Path

from cai_engine.cli.common import add_command, command_line, open_store


def _out(args, name: str) -> Path:
    """--out, or <home>/exports/<name>."""
    from cai_engine.home import resolve_home

    return Path(args.out) if args.out else resolve_home(args.home) / "exports" / name


def cmd_export_sft(args) -> int:
    from cai_engine.export import export_sft

    result = export_sft(
        open_store(args),
        args.job,
        _out(args, f"{args.job}-sft"),
        all_rounds=args.all_rounds,
        drop_truncated=args.drop_truncated,
        fmt=args.format,
        command=command_line(args),
        force=args.force,
    )
    print(result.summary())
    return 0


def cmd_export_prefs(args) -> int:
    from cai_engine.errors import CaiError
    from cai_engine.export import PrefFilters, export_prefs_from_labels, export_prefs_from_revisions

    if bool(args.labels) == bool(args.job):
        raise CaiError(
            "say where preferences come from: --labels <label job> (AI labels, human verdicts "
            "override them), or --job <critique job> --from-revisions"
        )
    if args.job and args.require_qualified_judge:
        raise CaiError("--require-qualified-judge goes with --labels (a label job's judge)")
    if args.labels:
        if args.from_revisions:
            raise CaiError("--from-revisions goes with --job (a critique job), not --labels")
        if not 0.0 <= args.min_confidence <= 1.0:
            raise CaiError(f"--min-confidence must be between 0 and 1, not {args.min_confidence}")
        result = export_prefs_from_labels(
            open_store(args),
            args.labels,
            _out(args, f"{args.labels}-prefs"),
            filters=PrefFilters(
                args.drop_ties, args.drop_inconsistent, args.min_confidence, args.drop_truncated
            ),
            fmt=args.format,
            command=command_line(args),
            force=args.force,
            require_qualified_judge=args.require_qualified_judge,
        )
        print(result.summary())
        judge = result.manifest.get("judge_check")
        if isinstance(judge, dict):
            print(f"judge {judge['model']}: {judge['verdict']}")
        return 0
    if not args.from_revisions:
        raise CaiError(
            "say where preferences come from: --from-revisions (chosen = final revision, "
            "rejected = initial answer), or --labels <label job>"
        )
    result = export_prefs_from_revisions(
        open_store(args),
        args.job,
        _out(args, f"{args.job}-prefs"),
        drop_truncated=args.drop_truncated,
        fmt=args.format,
        command=command_line(args),
        force=args.force,
    )
    print(result.summary())
    return 0


def cmd_export_annotated(args) -> int:
    from cai_engine.external_pairs import export_annotated

    out = Path(args.out) if args.out else _out(args, f"{args.job}-annotated.json")
    path, comparisons, annotators = export_annotated(
        open_store(args), args.job, out, force=args.force
    )
    print(f"{comparisons} comparisons, {annotators} annotators (the label job and its reviewers)"
          f" in {path}")  # fmt: skip
    return 0


def _add_output_flags(p, name: str) -> None:
    p.add_argument(
        "--drop-truncated",
        action="store_true",
        help="leave out texts cut off at the token limit (the manifest counts them)",
    )
    p.add_argument("--format", choices=["jsonl", "parquet", "hf"], default="jsonl")
    p.add_argument("--out", help=f"output folder (default: <home>/exports/<job>-{name})")
    p.add_argument("--force", action="store_true", help="replace an existing export folder")


def register(sub, full: bool) -> None:
    ex = sub.add_parser("export", help="write training data in TRL's formats, with a manifest")
    esub = ex.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add_command(
        esub, "sft", cmd_export_sft, '{"messages": [...]} with the final revision as the answer'
    )
    p.add_argument("--job", required=True, help="a critique job")
    p.add_argument("--all-rounds", action="store_true", help="one example per round's revision")
    _add_output_flags(p, "sft")
    p = add_command(
        esub, "prefs", cmd_export_prefs, '{"prompt", "chosen", "rejected", "score"} preference data'
    )
    p.add_argument("--labels", help="a label job: AI labels, human verdicts override them")
    p.add_argument("--job", help="a critique job (with --from-revisions)")
    p.add_argument(
        "--from-revisions",
        action="store_true",
        help="chosen = final revision, rejected = initial answer",
    )
    p.add_argument(
        "--drop-ties", action="store_true", help="leave out ties (otherwise kept with score 0.5)"
    )
    p.add_argument(
        "--drop-inconsistent",
        action="store_true",
        help="leave out AI labels whose two orders disagree",
    )
    p.add_argument(
        "--min-confidence",
        type=float,
        default=0.0,
        help="leave out AI labels below this confidence, |p - 0.5| x 2 (default: 0)",
    )
    p.add_argument(
        "--require-qualified-judge",
        action="store_true",
        help="refuse labels from a judge that did not qualify on the gold set (cai judge check)",
    )
    _add_output_flags(p, "prefs")
    p = add_command(
        esub,
        "annotated",
        cmd_export_annotated,
        "a label job and its human reviews as annotated pairs (ICAI / feedback-forensics JSON)",
    )
    p.add_argument("job", metavar="LABEL_JOB", help="a label job")
    p.add_argument("--out", help="output JSON file (default: <home>/exports/<job>-annotated.json)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
