"""`cai prompts`: list, show and import prompt sets."""

from __future__ import annotations

import json
import sys

from cai_engine.cli.common import add_command, one_line, open_store, table


def cmd_prompts_list(args) -> int:
    rows = [
        [s.name, s.prompts, s.train, s.test, s.categories, one_line(s.description or "", 50)]
        for s in open_store(args).list_prompt_sets()
    ]
    print(table(rows, ["name", "prompts", "train", "test", "categories", "description"]))
    return 0


def cmd_prompts_show(args) -> int:
    from cai_engine.prompts import parse_prompt_ref

    store = open_store(args)
    name, split = parse_prompt_ref(args.name)
    prompts = store.get_prompts(
        name,
        split=split or args.split,
        category=args.category,
        search=args.search,
        limit=args.limit,
    )
    if args.format == "jsonl":
        for p in prompts:
            print(
                json.dumps(
                    {
                        "id": p.prompt_id,
                        "prompt": p.messages if len(p.messages) > 1 else p.text,
                        "category": p.category,
                        "split": p.split,
                    },
                    ensure_ascii=False,
                )
            )
        return 0
    rows = [[p.prompt_id, p.split, p.category, len(p.messages), one_line(p.text)] for p in prompts]
    print(table(rows, ["id", "split", "category", "turns", "prompt"]))
    return 0


def cmd_prompts_import(args) -> int:
    from cai_engine.prompts import import_prompt_set, parse_mapping

    report = import_prompt_set(
        open_store(args),
        args.source,
        args.name,
        fmt=args.format,
        mapping=parse_mapping(args.column),
        allow_partial=args.skip_bad,
        append=args.append,
        description=args.description or "",
        split_seed=args.seed,
        test_fraction=args.test_fraction,
        hf_split=args.hf_split,
    )
    for bad in report.bad_rows:
        print(f"skipped {args.source}: {bad}", file=sys.stderr)
    print(report.summary())
    return 0


def register(sub, full: bool) -> None:
    pr = sub.add_parser("prompts", help="list, show and import prompt sets")
    psub = pr.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_command(psub, "list", cmd_prompts_list, "prompt sets with their sizes")
    p = add_command(psub, "show", cmd_prompts_show, "print the prompts of a set")
    p.add_argument("name", help="NAME or NAME:SPLIT (e.g. red-team:test)")
    p.add_argument("--split", choices=["train", "test"])
    p.add_argument("--category")
    p.add_argument("--search", help="case-insensitive text to look for")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--format", choices=["table", "jsonl"], default="table")
    p = add_command(
        psub,
        "import",
        cmd_prompts_import,
        "import prompts from JSONL, CSV, Parquet or a datasets folder/hub id (any size: read in chunks)",
    )
    p.add_argument(
        "source", help="a file, a `save_to_disk` folder, or a hub dataset id (with --format hf)"
    )
    p.add_argument("--name", required=True, help="prompt set name")
    p.add_argument("--format", choices=["auto", "jsonl", "csv", "parquet", "hf"], default="auto")
    p.add_argument(
        "--column",
        action="append",
        metavar="KEY=COLUMN",
        help="map a field to a source column: prompt=, category=, id=, split= (repeatable)",
    )
    p.add_argument("--skip-bad", action="store_true", help="import the good rows when some are bad")
    p.add_argument("--append", action="store_true", help="add to an existing set")
    p.add_argument("--description")
    p.add_argument("--seed", type=int, default=1234, help="split seed (default: 1234)")
    p.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of prompts in the test split"
    )
    p.add_argument("--hf-split", help="which split of a datasets source to read (default: all)")
