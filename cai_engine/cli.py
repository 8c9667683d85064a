"""The `cai` command line. Each command is a thin shell around an engine function.

Heavy modules are imported inside the handlers, so `cai --help` stays instant. A `CaiError`
becomes one clear line on stderr and exit status 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _store(args):
    from cai_engine.store import Store

    return Store(args.home)


def _one_line(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# -- init and studio ----------------------------------------------------------------------


def cmd_init(args) -> int:
    from cai_engine.bundled import install_bundled

    store = _store(args)
    report = install_bundled(store)
    added = ", ".join(report.constitutions_added) or "none new"
    prompts = ", ".join(f"{k} +{v}" for k, v in report.prompts_added.items())
    print(f"data home: {store.home}")
    print(f"constitutions: {added}; prompt sets: {prompts}")
    return 0


def cmd_studio(args) -> int:
    import subprocess

    from cai_engine.bundled import install_bundled
    from cai_engine.home import CHECKOUT_ROOT

    store = _store(args)
    install_bundled(store)
    env = {**os.environ, "CAI_HOME": str(store.home)}
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(CHECKOUT_ROOT / "ui" / "app.py"),
        "--server.address",
        args.address,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    print(f"CAI Studio on http://{args.address}:{args.port}  (data home: {store.home})", flush=True)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


# -- constitutions ------------------------------------------------------------------------


def cmd_constitution_list(args) -> int:
    rows = [
        [
            s.name,
            s.latest_seq,
            s.latest_hash[:12],
            s.principles,
            s.versions,
            _one_line(s.description, 50),
        ]
        for s in _store(args).list_constitutions()
    ]
    print(_table(rows, ["name", "latest", "hash", "principles", "versions", "description"]))
    return 0


def cmd_constitution_show(args) -> int:
    from cai_engine.constitution import to_yaml

    v = _store(args).get_version(args.ref)
    c = v.constitution
    if args.format == "json":
        print(
            json.dumps(
                c.model_dump(mode="json", exclude_defaults=True), indent=2, ensure_ascii=False
            )
        )
    else:
        print(f"# {v.ref} ({v.short_hash}), {v.source}, {v.created_at:%Y-%m-%d %H:%M}")
        print(to_yaml(c), end="")
    return 0


def cmd_constitution_history(args) -> int:
    store = _store(args)
    store.get_version(args.name)  # an unknown name raises, listing the known ones
    versions = store.list_versions(args.name)
    rows = [
        [
            v.seq,
            v.short_hash,
            f"{v.created_at:%Y-%m-%d %H:%M:%S}",
            v.source,
            (v.parent_hash or "")[:12],
            _one_line(v.note or "", 40),
        ]
        for v in versions
    ]
    print(_table(rows, ["version", "hash", "created", "source", "parent", "note"]))
    return 0


def cmd_constitution_validate(args) -> int:
    from cai_engine.constitution import load_constitution

    for path in args.files:
        c = load_constitution(path)
        print(
            f"{path}: ok - '{c.name}', {len(c.principles)} principles, {len(c.few_shots)} few-shots, "
            f"hash {c.hash[:12]}"
        )
        for w in c.warnings():
            print(f"{path}: warning: {w}")
    return 0


def cmd_constitution_import(args) -> int:
    from cai_engine.peer_formats import import_paths

    result = import_paths(args.files, args.format, args.name)
    store = _store(args)
    head = store.list_versions(result.constitution.name)
    version, created = store.save_constitution(
        result.constitution,
        note=args.note or f"imported from {', '.join(Path(f).name for f in args.files)}",
        source=f"import:{result.format}",
        parent_hash=head[-1].hash if head else None,
    )
    for note in result.notes:
        print(f"note: {note}")
    for w in result.constitution.warnings():
        print(f"warning: {w}")
    if created:
        print(f"imported {version.ref} ({version.short_hash}) from {result.format} format")
    else:
        print(f"unchanged: identical to {version.ref} ({version.short_hash}); nothing added")
    return 0


def cmd_constitution_export(args) -> int:
    from cai_engine.constitution import to_yaml
    from cai_engine.peer_formats import export_anthropic, export_llm_swarm

    c = _store(args).get_version(args.ref).constitution
    if args.format == "yaml":
        text = to_yaml(c)
        if args.out:
            _write_new(Path(args.out), text, args.force)
            print(f"wrote {args.out}")
        else:
            print(text, end="")
        return 0
    if args.format == "llm-swarm":
        files = {f"{c.name}.llm-swarm.json": export_llm_swarm(c)}
    else:
        files = export_anthropic(c)
    out = Path(args.out or ".")
    if len(files) > 1 or out.is_dir() or not out.suffix:
        out.mkdir(parents=True, exist_ok=True)
        targets = {out / name: obj for name, obj in files.items()}
    else:
        targets = {out: next(iter(files.values()))}
    for path, obj in targets.items():
        _write_new(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n", args.force)
        print(f"wrote {path}")
    return 0


def _write_new(path: Path, text: str, force: bool) -> None:
    from cai_engine.errors import CaiError

    if path.exists() and not force:
        raise CaiError(f"{path} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def cmd_constitution_diff(args) -> int:
    from cai_engine.constitution import diff_constitutions
    from cai_engine.errors import CaiError

    store = _store(args)
    if args.new is None:
        name = args.old.partition("@")[0]
        store.get_version(name)  # an unknown name raises, listing the known ones
        versions = store.list_versions(name)
        if "@" in args.old:
            old = store.get_version(args.old)
            new = versions[-1] if versions else old
        elif len(versions) < 2:
            raise CaiError(f"'{name}' has {len(versions)} version(s); nothing to diff against")
        else:
            old, new = versions[-2], versions[-1]
    else:
        old, new = store.get_version(args.old), store.get_version(args.new)
    print(f"--- {old.ref} ({old.short_hash})\n+++ {new.ref} ({new.short_hash})")
    print(diff_constitutions(old.constitution, new.constitution).render())
    return 0


# -- prompts ------------------------------------------------------------------------------


def cmd_prompts_list(args) -> int:
    rows = [
        [s.name, s.prompts, s.train, s.test, s.categories, _one_line(s.description or "", 50)]
        for s in _store(args).list_prompt_sets()
    ]
    print(_table(rows, ["name", "prompts", "train", "test", "categories", "description"]))
    return 0


def cmd_prompts_show(args) -> int:
    from cai_engine.errors import CaiError

    store = _store(args)
    name, _, split = args.name.partition(":")
    if split and split not in ("train", "test"):
        raise CaiError(f"'{args.name}': the split after ':' must be train or test, got '{split}'")
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
    rows = [[p.prompt_id, p.split, p.category, len(p.messages), _one_line(p.text)] for p in prompts]
    print(_table(rows, ["id", "split", "category", "turns", "prompt"]))
    return 0


def cmd_prompts_import(args) -> int:
    from cai_engine.prompts import import_prompt_set, parse_mapping

    report = import_prompt_set(
        _store(args),
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


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cai", description="CAI Studio: a Constitutional AI workbench."
    )
    parser.add_argument(
        "--home", help="data home (default: $CAI_HOME, else storage/ in the checkout)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "init", help="create the store and install the bundled constitutions and prompts"
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("studio", help="start the Streamlit studio")
    p.add_argument(
        "--address", default="127.0.0.1", help="address to bind (default: 127.0.0.1, local only)"
    )
    p.add_argument("--port", type=int, default=8501, help="port (default: 8501)")
    p.set_defaults(func=cmd_studio)

    con = sub.add_parser(
        "constitution", help="list, show, validate, import, export and diff constitutions"
    )
    csub = con.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = csub.add_parser("list", help="constitutions with their latest version")
    p.set_defaults(func=cmd_constitution_list)
    p = csub.add_parser("show", help="print a version as YAML")
    p.add_argument("ref", help="NAME, NAME@VERSION or NAME@HASHPREFIX")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.set_defaults(func=cmd_constitution_show)
    p = csub.add_parser("history", help="list the versions of a constitution")
    p.add_argument("name")
    p.set_defaults(func=cmd_constitution_history)
    p = csub.add_parser("validate", help="check constitution files without storing them")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_constitution_validate)
    p = csub.add_parser("import", help="import a YAML file or a peer format as a new version")
    p.add_argument(
        "files",
        nargs="+",
        help="a YAML file; the Anthropic critique file (+ RL and few-shot files); or an llm-swarm JSON",
    )
    p.add_argument("--format", choices=["auto", "yaml", "anthropic", "llm-swarm"], default="auto")
    p.add_argument("--name", help="store under this name (default: the file's name field)")
    p.add_argument("--note", help="a note for the new version")
    p.set_defaults(func=cmd_constitution_import)
    p = csub.add_parser("export", help="write a version as YAML or a peer format")
    p.add_argument("ref")
    p.add_argument("--format", choices=["yaml", "anthropic", "llm-swarm"], default="yaml")
    p.add_argument(
        "--out", help="file (yaml, llm-swarm) or folder (anthropic); default: stdout / ."
    )
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_constitution_export)
    p = csub.add_parser("diff", help="what changed between two versions")
    p.add_argument("old", help="NAME (its last two versions) or NAME@VERSION")
    p.add_argument("new", nargs="?", help="NAME@VERSION (default: the latest)")
    p.set_defaults(func=cmd_constitution_diff)

    pr = sub.add_parser("prompts", help="list, show and import prompt sets")
    psub = pr.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = psub.add_parser("list", help="prompt sets with their sizes")
    p.set_defaults(func=cmd_prompts_list)
    p = psub.add_parser("show", help="print the prompts of a set")
    p.add_argument("name", help="NAME or NAME:SPLIT (e.g. red-team:test)")
    p.add_argument("--split", choices=["train", "test"])
    p.add_argument("--category")
    p.add_argument("--search", help="case-insensitive text to look for")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--format", choices=["table", "jsonl"], default="table")
    p.set_defaults(func=cmd_prompts_show)
    p = psub.add_parser(
        "import", help="import prompts from JSONL, CSV, Parquet or a datasets folder/hub id"
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
    p.set_defaults(func=cmd_prompts_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        from cai_engine.errors import CaiError

        if isinstance(e, CaiError):
            print(f"error: {e}", file=sys.stderr)
        else:
            print(
                f"error: {type(e).__name__}: {e} (run with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
