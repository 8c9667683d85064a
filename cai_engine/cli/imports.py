"""`cai import`: preference data made elsewhere, as a pairs job plus its dataset labels."""

from __future__ import annotations

from cai_engine.cli.common import add_command, open_store

HELP = {
    "hh": "HH-RLHF transcripts ('\\n\\nHuman: ... \\n\\nAssistant: ...'): chosen/rejected columns"
    " give pairs, a transcript column a prompt set",
    "prefs": "TRL preference rows: prompt/chosen/rejected, standard or conversational, optional"
    " score",
    "annotated": "annotated pairs (ICAI / feedback-forensics JSON): each annotator's preferences"
    " become a label job",
}


def cmd_import(args) -> int:
    from cai_engine.external_pairs import import_pairs

    result = import_pairs(
        open_store(args),
        args.file,
        args.action,
        args.name,
        skip_bad=args.skip_bad,
        seed=args.seed,
    )
    print(result.summary())
    return 0


def register(sub, full: bool) -> None:
    p = sub.add_parser(
        "import",
        help="bring in preference data made elsewhere (HH-RLHF, TRL, annotated pairs) as pairs"
        " and labels",
    )
    isub = p.add_subparsers(dest="action", required=True, metavar="FORMAT")
    for fmt, help_ in HELP.items():
        c = add_command(isub, fmt, cmd_import, help_)
        what = "a JSON file" if fmt == "annotated" else "JSONL, Parquet or a `datasets` folder"
        c.add_argument("file", metavar="FILE", help=what)
        c.add_argument(
            "--name",
            required=True,
            help="name of the new prompt set (also the pairs job's label); never overwritten",
        )
        c.add_argument(
            "--skip-bad",
            action="store_true",
            help="import the good rows and report the bad ones (default: import nothing)",
        )
        c.add_argument(
            "--seed",
            type=int,
            default=0,
            help="seeds which side (chosen or rejected) each pair shows as A (default: 0)",
        )
