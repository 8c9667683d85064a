"""`cai constitution`: list, show, validate, import, export and diff constitutions."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cai_engine.cli.common import add_command, one_line, open_store, table


def cmd_constitution_list(args) -> int:
    rows = [
        [
            s.name,
            s.latest_seq,
            s.latest_hash[:12],
            s.principles,
            s.versions,
            one_line(s.description, 50),
        ]
        for s in open_store(args).list_constitutions()
    ]
    print(table(rows, ["name", "latest", "hash", "principles", "versions", "description"]))
    return 0


def cmd_constitution_show(args) -> int:
    from cai_engine.constitution import to_yaml

    v = open_store(args).get_version(args.ref)
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
    store = open_store(args)
    store.get_version(args.name)  # an unknown name raises, listing the known ones
    versions = store.list_versions(args.name)
    rows = [
        [
            v.seq,
            v.short_hash,
            f"{v.created_at:%Y-%m-%d %H:%M:%S}",
            v.source,
            (v.parent_hash or "")[:12],
            one_line(v.note or "", 40),
        ]
        for v in versions
    ]
    print(table(rows, ["version", "hash", "created", "source", "parent", "note"]))
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
    store = open_store(args)
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
    from cai_engine.peer_formats import export_anthropic, export_llm_swarm, export_losses

    c = open_store(args).get_version(args.ref).constitution
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
    for loss in export_losses(c, args.format):
        print(f"note: {loss}", file=sys.stderr)
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

    store = open_store(args)
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


def register(sub, full: bool) -> None:
    con = sub.add_parser(
        "constitution", help="list, show, validate, import, export and diff constitutions"
    )
    csub = con.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_command(csub, "list", cmd_constitution_list, "constitutions with their latest version")
    p = add_command(csub, "show", cmd_constitution_show, "print a version as YAML")
    p.add_argument("ref", help="NAME, NAME@VERSION or NAME@HASHPREFIX")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p = add_command(
        csub, "history", cmd_constitution_history, "list the versions of a constitution"
    )
    p.add_argument("name")
    p = add_command(
        csub, "validate", cmd_constitution_validate, "check constitution files without storing them"
    )
    p.add_argument("files", nargs="+")
    p = add_command(
        csub,
        "import",
        cmd_constitution_import,
        "import a YAML file or a peer format as a new version",
    )
    p.add_argument(
        "files",
        nargs="+",
        help="a YAML file; the Anthropic critique file (+ any of the RL instructions, critique "
        "few-shot, RL few-shot and chain-of-thought few-shot files, in any order); or an "
        "llm-swarm JSON (chats of one or more critique→revision rounds)",
    )
    p.add_argument("--format", choices=["auto", "yaml", "anthropic", "llm-swarm"], default="auto")
    p.add_argument("--name", help="store under this name (default: the file's name field)")
    p.add_argument("--note", help="a note for the new version")
    p = add_command(
        csub, "export", cmd_constitution_export, "write a version as YAML or a peer format"
    )
    p.add_argument("ref")
    p.add_argument("--format", choices=["yaml", "anthropic", "llm-swarm"], default="yaml")
    p.add_argument(
        "--out",
        help="file (yaml, llm-swarm) or folder (anthropic: the critique, RL instruction and "
        "few-shot files, plus the RL few-shot files when there are comparison few-shots); "
        "default: stdout / .",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p = add_command(csub, "diff", cmd_constitution_diff, "what changed between two versions")
    p.add_argument("old", help="NAME (its last two versions) or NAME@VERSION")
    p.add_argument("new", nargs="?", help="NAME@VERSION (default: the latest)")
