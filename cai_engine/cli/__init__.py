"""The `cai` command line. Each command is a thin shell around an engine function.

Heavy modules are imported inside the handlers, so `cai --help` stays instant. A `CaiError`
becomes one clear line on stderr and exit status 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
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
    from cai_engine.prompts import parse_prompt_ref

    store = _store(args)
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


# -- jobs ---------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _progress_text(job) -> str:
    if job.total:
        return f"{job.done}/{job.total} ({100 * job.done / job.total:.0f}%)"
    return str(job.done or "")


def _parse_sets(items: list[str] | None) -> dict:

    from cai_engine.errors import CaiError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CaiError(f"--set expects KEY=VALUE, got '{item}'")
        out[key.strip()] = _load_yaml(value, f"--set {key.strip()}") if value.strip() else None
    return out


def _load_yaml(text: str, source: str):
    """YAML from a config file or a --set value; a syntax error names the source and line."""
    import yaml

    from cai_engine.errors import CaiError

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(x for x in (e.context, e.problem) if x)
        where = f"{source}:{line}" if line else source
        raise CaiError(f"{where}: YAML syntax error: {what} (line {line})") from None
    except yaml.YAMLError as e:
        raise CaiError(f"{source}: not valid YAML: {e}") from None


def follow(store, job, stream=None) -> int:
    """Show a job's progress until it ends; returns 0 if it succeeded, else 1."""
    from cai_engine import jobs

    stream = stream or sys.stdout
    tty = stream.isatty()
    started = time.monotonic()
    last = [None]

    def show(j):
        elapsed = time.monotonic() - started
        rate = f", {j.tokens / elapsed:.0f} tok/s" if j.tokens and elapsed > 0 else ""
        bar = ""
        if j.total:
            filled = int(30 * j.done / j.total)
            bar = "[" + "#" * filled + "." * (30 - filled) + "] "
        line = f"{j.id} {j.status}: {bar}{_progress_text(j)}{rate}"
        if tty:
            print("\r" + line.ljust(100), end="", file=stream, flush=True)
        elif line != last[0]:
            print(line, file=stream, flush=True)
        last[0] = line

    try:
        final = jobs.wait(store, job.id, poll=0.5, on_update=show)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; the job goes on. `cai jobs cancel {job.id}` stops it.",
            file=stream,
        )
        return 130
    if tty:
        print(file=stream)
    print(f"{final.id} {final.status}" + (f": {final.error}" if final.error else ""), file=stream)
    return 0 if final.status == "succeeded" else 1


def cmd_jobs_list(args) -> int:
    from cai_engine import jobs

    rows = [
        [
            j.id,
            j.kind,
            j.status,
            _progress_text(j),
            _duration(j.elapsed),
            j.tokens or "",
            j.label or "",
        ]
        for j in jobs.list_jobs(_store(args), kind=args.kind, limit=args.limit)
    ]
    print(_table(rows, ["id", "kind", "status", "progress", "elapsed", "tokens", "label"]))
    return 0


def cmd_jobs_show(args) -> int:
    from cai_engine import jobs

    store = _store(args)
    jobs.reconcile(store)
    j = jobs.get_job(store, args.job)
    print(f"id:        {j.id}")
    print(f"kind:      {j.kind}" + (f"  ({j.label})" if j.label else ""))
    print(f"status:    {j.status}" + (f"  error: {j.error}" if j.error else ""))
    print(
        f"progress:  {_progress_text(j) or '-'}  tokens: {j.tokens}  elapsed: {_duration(j.elapsed) or '-'}"
    )
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

    store = _store(args)
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

    j = jobs.cancel(_store(args), args.job, grace=args.grace)
    print(f"{j.id} {j.status}")
    return 0


def cmd_jobs_resume(args) -> int:
    from cai_engine import jobs

    store = _store(args)
    j = jobs.resume(store, args.job)
    print(f"{j.id} resumed (attempt {j.attempts + 1})")
    return follow(store, j) if args.wait else 0


def cmd_jobs_submit(args) -> int:

    from cai_engine import jobs
    from cai_engine.files import read_user_text

    config = {}
    if args.config:
        loaded = _load_yaml(read_user_text(args.config), args.config)
        if not isinstance(loaded, dict):
            from cai_engine.errors import CaiError

            raise CaiError(f"{args.config}: expected a mapping of config keys")
        config.update(loaded)
    config.update(_parse_sets(args.set))
    store = _store(args)
    j = jobs.submit(store, args.kind, config, label=args.label)
    print(f"submitted {j.id}")
    return follow(store, j) if args.wait else 0


# -- models and generation ----------------------------------------------------------------


def cmd_models_list(args) -> int:
    from cai_engine.home import models_dir
    from cai_engine.models import EMBEDDED
    from cai_engine.models.embedded import gguf_path, is_converted

    store = _store(args)
    rows = []
    try:
        source = gguf_path().name
    except Exception as e:  # the package is missing: say so in the table
        source = f"missing ({e})"
    state = "converted" if is_converted(store.home) else "not converted yet (`cai models pull`)"
    rows.append([EMBEDDED, "embedded", state, source])
    registered = {m["name"]: m for m in store.trained_models()}
    for path in sorted(models_dir(store.home).glob("*")):
        if path.name != EMBEDDED and (path / "config.json").exists():
            m = registered.get(path.name)
            if m:
                hash_ = (m["constitution_hash"] or "")[:12]
                origin = f"{m['kind']} of {m['base_model']} on {m['data']}" + (
                    f" (constitution {hash_})" if hash_ else ""
                )
                rows.append([f"model:{path.name}", f"trained ({m['kind']})", "ready", origin])
            else:
                rows.append([f"model:{path.name}", "trained", "ready", str(path)])
    print(_table(rows, ["spec", "kind", "state", "source"]))
    print(
        "\nAlso: hf:<hub id or path>, a local model folder, or "
        "openai:<model>?base_url=<url>[&api_key_env=VAR] for any OpenAI-compatible server."
    )
    return 0


def cmd_models_pull(args) -> int:
    from cai_engine.models import parse_spec
    from cai_engine.models.embedded import ensure_embedded

    spec = parse_spec(args.spec)
    store = _store(args)
    if spec.kind == "embedded":
        print(f"ready: {ensure_embedded(store.home)}")
    elif spec.kind == "hf":
        if Path(spec.model).exists():
            print(f"ready: {spec.model} is a local folder")
        else:
            from huggingface_hub import snapshot_download

            print(f"ready: {snapshot_download(spec.model)}")
    elif spec.kind == "openai":
        from cai_engine.models.openai_compat import OpenAIModel

        model = OpenAIModel(spec)
        print(f"reachable: {model.list_models()}")
    else:
        from cai_engine.models.local import resolve_local_path

        print(f"ready: {resolve_local_path(spec, store.home)}")
    return 0


def cmd_models_chat(args) -> int:
    from cai_engine.models import SamplingParams, load_model

    store = _store(args)
    model = load_model(args.model, store.home)
    conversation = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.message}
    ]
    sampling = SamplingParams(
        temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    (c,) = model.chat([conversation], sampling)
    print(c.text)
    print(
        f"\n[{model.info().spec}: {c.prompt_tokens} prompt + {c.completion_tokens} completion tokens, "
        f"{c.finish_reason}, {c.latency_s:.2f}s]",
        file=sys.stderr,
    )
    return 0


def cmd_generate(args) -> int:
    from cai_engine import jobs

    config = {
        "prompts": args.prompts,
        "model": args.model,
        "limit": args.limit,
        "samples": args.samples,
        "sampling": _sampling(args),
    }
    store = _store(args)
    j = jobs.submit(store, "generate", config, label=args.label)
    print(f"submitted {j.id}")
    return follow(store, j) if args.wait else 0


def cmd_critique(args) -> int:
    config = {
        "constitution": args.constitution,
        "prompts": args.prompts,
        "model": args.model,
        "rounds": args.rounds,
        "limit": args.limit,
        "samples": args.samples,
        "seed": args.seed,
        "few_shots": args.few_shots,
        "skip_unchanged": args.skip_unchanged,
        "principle_sampling": "per_prompt" if args.per_prompt else "per_round",
        "principle": args.principle,
        "sampling": _sampling(args),
    }
    from cai_engine.critique import submit

    store = _store(args)
    j = submit(store, config, args.label)
    print(f"submitted {j.id}")
    return follow(store, j) if args.wait else 0


def _sampling(args) -> dict:
    """The sampling options every answering command takes: --temperature, --max-new-tokens,
    and --seed (which also seeds the command's other draws)."""
    return {
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
    }


def cmd_pairs(args) -> int:
    from cai_engine.pairs import submit_pairs

    config = {
        "prompts": args.prompts,
        "from_critique": args.from_critique,
        "model": args.model,
        "samples": args.samples,
        "limit": args.limit,
        "seed": args.seed,
        "sampling": _sampling(args),
    }
    store = _store(args)
    j = submit_pairs(store, config, args.label)
    print(f"submitted {j.id}")
    return follow(store, j) if args.wait else 0


def cmd_label(args) -> int:
    from cai_engine.labels import submit_labels

    config = {
        "pairs": args.pairs,
        "constitution": args.constitution,
        "model": args.model,
        "both_orders": args.both_orders,
        "cot": args.cot,
        "few_shots": args.few_shots,
        "principle": args.principle,
        "limit": args.limit,
        "seed": args.seed,
    }
    if args.clamp:
        config["clamp"] = _clamp_arg(args.clamp)
    store = _store(args)
    j = submit_labels(store, config, args.label)
    print(f"submitted {j.id}")
    return follow(store, j) if args.wait else 0


def cmd_eval_run(args) -> int:
    from cai_engine.eval import submit_eval

    config = {
        "models": args.models,
        "reference": args.reference,
        "harmful": None if args.harmful in ("", "none") else args.harmful,
        "helpful": None if args.helpful in ("", "none") else args.helpful,
        "limit": args.limit,
        "judge": args.judge,
        "constitution": args.constitution,
        "few_shots": args.few_shots,
        "both_orders": args.both_orders,
        "judge_refusals": args.judge_refusals,
        "critique_job": args.critique_job,
        "reuse_answers": args.reuse_answers,
        "seed": args.seed,
        "sampling": _sampling(args),
    }
    store = _store(args)
    j = submit_eval(store, config, args.label)
    print(f"submitted {j.id}")
    if not args.wait:
        return 0
    code = follow(store, j)
    _print_eval(store, j.id)
    return code


def _print_eval(store, job_id: str) -> None:
    from cai_engine import eval as evaluation
    from cai_engine import jobs

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
    print(_table([[r["metric"], *[r[m] for m in models]] for r in rows], ["metric", *names]))
    revision = [r for r in results if r["metric"].startswith("revision_round_")]
    if revision:
        print(f"revision progress of {revision[0]['model']} (round k preferred over k-1):")
        for r in revision:
            print(f"  {r['metric']}: {evaluation.format_result(r)}")


def cmd_eval_show(args) -> int:
    from cai_engine import jobs
    from cai_engine.errors import CaiError

    store = _store(args)
    job = jobs.get_job(store, args.job)
    if job.kind != "eval":
        raise CaiError(f"job {job.id} is a {job.kind} job, not an eval job")
    print(f"eval job {job.id} ({job.status})")
    _print_eval(store, job.id)
    return 0


def cmd_demo(args) -> int:
    from cai_engine import demo, jobs

    store = _store(args)
    if args.resume:
        j = jobs.resume(store, args.resume)
    else:
        config = {"profile": "tiny" if args.tiny else "default", "seed": args.seed}
        if args.model:
            config["model"] = args.model
        j = demo.submit_demo(store, config)
    print(f"demo {j.id}: {len(demo.STAGES)} stages, each its own job (see `cai jobs list`)")
    if args.no_wait:
        return 0
    started = time.monotonic()
    last = [None]

    def show(dj):
        stages = demo.read_stages(dj.run)
        stage = dj.live.get("stage")
        line = f"{dj.status}"
        if stage and stage in stages:
            child = jobs.get_job(store, stages[stage])
            n = demo.STAGES.index(stage) + 1
            line = (
                f"[{n}/{len(demo.STAGES)}] {demo.STAGE_TITLES[stage]}: {child.id} "
                f"{child.status} {_progress_text(child)}"
            )
        if line != last[0]:
            print(f"{_clock(time.monotonic() - started)} {line}", flush=True)
            last[0] = line

    try:
        final = jobs.wait(store, j.id, poll=1.0, on_update=show)
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
    _print_eval(store, stages["eval"])
    return 0


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}"


def _clamp_arg(text: str) -> list[float]:
    from cai_engine.errors import CaiError

    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise CaiError(f"--clamp takes LOW,HIGH such as 0.4,0.6, not '{text}'") from None
    return [lo, hi]


def _label_job_rows(store, job_id: str):
    from cai_engine import jobs
    from cai_engine.errors import CaiError

    job = jobs.get_job(store, job_id)
    if job.kind != "label":
        raise CaiError(f"job {job_id} is a {job.kind} job; --labels needs a label job")
    jobs.ingest(store, job)
    return job, store.labels(job_id)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def cmd_review_stats(args) -> int:
    from cai_engine import review

    store = _store(args)
    job, labels = _label_job_rows(store, args.labels)
    a = review.agreement(labels, store.reviews(job.id))
    kappa = "–" if a.kappa is None else f"{a.kappa:.3f}"
    print(f"label job {job.id} ({job.status}): {len(labels)} labels")
    print(
        f"position consistency: {_pct(a.consistency_rate)}; first-shown response won "
        f"{_pct(a.first_position_rate)} of orders"
        + ("  ** position bias detected **" if a.position_bias else "")
    )
    print(
        f"reviewed: {a.reviews} verdicts ({a.ties} tie, {a.both_bad} both bad, "
        f"{a.ai_ties} on AI ties); decisive: {a.decisive}"
    )
    print(f"agreement with the AI: {_pct(a.rate)} ({a.agree}/{a.decisive}); Cohen's kappa: {kappa}")
    if a.by_principle:
        print("\nby principle:")
        rows = [
            [r["principle"], r["reviewed"], r["agree"], _pct(r["rate"])] for r in a.by_principle
        ]
        print(_table(rows, ["principle", "decisive", "agree", "rate"]))
    print("\ncalibration (AI confidence vs human agreement):")
    rows = [[r["confidence"], r["reviewed"], _pct(r["agreement"])] for r in a.calibration]
    print(_table(rows, ["confidence", "decisive", "agreement"]))
    print("\nper principle:")
    rows = [[r["principle"], r["labels"], r["reviewed"], r["remaining"]] for r in a.strata]
    print(_table(rows, ["principle", "labels", "reviewed", "remaining"]))
    return 0


def cmd_review_add(args) -> int:
    from cai_engine import review

    store = _store(args)
    _label_job_rows(store, args.labels)
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


TRAIN_KINDS = ("sft", "reward", "dpo", "rl")


def add_config_flags(parser, model_cls) -> None:
    """One flag per config field, with the field's description as its help (one source)."""
    import types
    import typing

    for name, field in model_cls.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if any(flag in a.option_strings for a in parser._actions):
            continue
        annotation = field.annotation
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            annotation = next(a for a in args if a is not type(None))
            args = typing.get_args(annotation)
        if field.is_required():
            helptext = (field.description or "") + " (required)"
        else:
            default = field.get_default(call_default_factory=True)
            shown = f" (default: {default})" if default is not None else ""
            helptext = (field.description or "") + shown
        if annotation is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                help=helptext,
            )  # fmt: skip
        elif typing.get_origin(annotation) is typing.Literal:
            parser.add_argument(flag, choices=list(args), default=argparse.SUPPRESS, help=helptext)
        elif annotation in (int, float):
            parser.add_argument(flag, type=annotation, default=argparse.SUPPRESS, help=helptext)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, help=helptext)


def cmd_train(args) -> int:

    from cai_engine.errors import CaiError
    from cai_engine.files import read_user_text
    from cai_engine.training.config import CONFIGS
    from cai_engine.training.jobs import submit

    config = {}
    if args.config:
        loaded = _load_yaml(read_user_text(args.config), args.config)
        if not isinstance(loaded, dict):
            raise CaiError(f"{args.config}: expected a mapping of {args.trainer} config keys")
        config.update(loaded)
    for name in CONFIGS[args.trainer].model_fields:
        if hasattr(args, name):
            config[name] = getattr(args, name)
    config.update(_parse_sets(args.set))
    store = _store(args)
    j = submit(store, args.trainer, config, label=args.label)
    print(f"submitted {j.id}")
    return follow(store, j) if args.wait else 0


def _command(args) -> str:
    """The command line that ran, for manifests (quoted so it can be pasted back)."""
    import shlex

    return shlex.join(["cai", *args.argv])


def cmd_export_sft(args) -> int:
    from cai_engine.export import export_sft
    from cai_engine.home import resolve_home

    out = Path(args.out) if args.out else resolve_home(args.home) / "exports" / f"{args.job}-sft"
    result = export_sft(
        _store(args),
        args.job,
        out,
        all_rounds=args.all_rounds,
        fmt=args.format,
        command=_command(args),
        force=args.force,
    )
    print(result.summary())
    return 0


def cmd_export_prefs(args) -> int:
    from cai_engine.errors import CaiError
    from cai_engine.export import PrefFilters, export_prefs_from_labels, export_prefs_from_revisions
    from cai_engine.home import resolve_home

    if bool(args.labels) == bool(args.job):
        raise CaiError(
            "say where preferences come from: --labels <label job> (AI labels, human verdicts "
            "override them), or --job <critique job> --from-revisions"
        )
    if args.labels:
        if args.from_revisions:
            raise CaiError("--from-revisions goes with --job (a critique job), not --labels")
        if not 0.0 <= args.min_confidence <= 1.0:
            raise CaiError(f"--min-confidence must be between 0 and 1, not {args.min_confidence}")
        name = f"{args.labels}-prefs"
        out = Path(args.out) if args.out else resolve_home(args.home) / "exports" / name
        result = export_prefs_from_labels(
            _store(args),
            args.labels,
            out,
            filters=PrefFilters(args.drop_ties, args.drop_inconsistent, args.min_confidence),
            fmt=args.format,
            command=_command(args),
            force=args.force,
        )
        print(result.summary())
        return 0
    if not args.from_revisions:
        raise CaiError(
            "say where preferences come from: --from-revisions (chosen = final revision, "
            "rejected = initial answer), or --labels <label job>"
        )
    out = Path(args.out) if args.out else resolve_home(args.home) / "exports" / f"{args.job}-prefs"
    result = export_prefs_from_revisions(
        _store(args),
        args.job,
        out,
        fmt=args.format,
        command=_command(args),
        force=args.force,
    )
    print(result.summary())
    return 0


def cmd_vllm_serve(args) -> int:
    import subprocess

    from cai_engine import vllm_server
    from cai_engine.models import EMBEDDED, parse_spec
    from cai_engine.models.local import resolve_local_path

    store = _store(args)
    spec = parse_spec(args.model)
    if spec.backend != "local":
        from cai_engine.errors import CaiError

        raise CaiError(
            "vllm serve needs a local model (the embedded one, hf:<path> or model:<name>)"
        )
    model_dir = resolve_local_path(spec, store.home)
    name = args.name or (EMBEDDED if spec.kind == "embedded" else Path(spec.model).name)
    print(
        f"serving {model_dir} as '{name}'; use the model spec:\n  {vllm_server.spec_for(name, args.port, args.host)}",
        flush=True,
    )
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", vllm_server.KV_CACHE_GB),
    }
    try:
        return subprocess.call(
            vllm_server.command(Path(model_dir), name, args.port, args.host), env=env
        )
    except KeyboardInterrupt:
        return 0


# -- parser -------------------------------------------------------------------------------


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The CLI. Training flags come from the training configs, which are imported only when
    the command line is a `train` one (so `cai --help` stays fast)."""
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
    jb = sub.add_parser("jobs", help="list, show, follow, cancel, resume and submit jobs")
    jsub = jb.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = jsub.add_parser("list", help="jobs, newest first (settles jobs whose process is gone)")
    p.add_argument("--kind")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_jobs_list)
    p = jsub.add_parser("show", help="a job's state, config and recent events")
    p.add_argument("job")
    p.add_argument("--events", type=int, default=20, help="how many recent events to show")
    p.set_defaults(func=cmd_jobs_show)
    p = jsub.add_parser("logs", help="print a job's run.log")
    p.add_argument("job")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=cmd_jobs_logs)
    p = jsub.add_parser("cancel", help="SIGTERM the job, SIGKILL after a grace period")
    p.add_argument("job")
    p.add_argument("--grace", type=float, default=10.0, help="seconds before SIGKILL (default: 10)")
    p.set_defaults(func=cmd_jobs_cancel)
    p = jsub.add_parser(
        "resume", help="restart a failed, cancelled or interrupted job where it stopped"
    )
    p.add_argument("job")
    p.add_argument("--wait", action="store_true", help="follow it until it ends")
    p.set_defaults(func=cmd_jobs_resume)
    p = jsub.add_parser("submit", help="submit a job of any kind (e.g. tick, to check jobs work)")
    p.add_argument("kind")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a config value (repeatable)"
    )
    p.add_argument("--config", help="a YAML file of config values")
    p.add_argument("--label")
    p.add_argument("--wait", action="store_true", help="follow it until it ends")
    p.set_defaults(func=cmd_jobs_submit)
    md = sub.add_parser("models", help="list, prepare and try models")
    msub = md.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = msub.add_parser("list", help="the embedded and trained models, and the other spec forms")
    p.set_defaults(func=cmd_models_list)
    p = msub.add_parser(
        "pull",
        help="prepare a model: convert the embedded one, download an hf id, or check a server",
    )
    p.add_argument("spec", nargs="?", default="smollm2-135m-instruct")
    p.set_defaults(func=cmd_models_pull)
    p = msub.add_parser("chat", help="one quick chat turn, to check a model works")
    p.add_argument("message")
    p.add_argument("--model", default="smollm2-135m-instruct", help="model spec")
    p.add_argument("--system", help="a system prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_models_chat)

    p = sub.add_parser("generate", help="answer a prompt set with a model, as a job")
    p.add_argument("--prompts", required=True, help="NAME or NAME:SPLIT, e.g. red-team:test")
    p.add_argument("--model", default="smollm2-135m-instruct", help="model spec")
    p.add_argument("--limit", type=int, help="only the first N prompts")
    p.add_argument("--samples", type=int, default=1, help="answers per prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label")
    p.add_argument("--wait", action="store_true", help="follow it until it ends")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "critique", help="SL-CAI: answer, critique and revise under a constitution, as a job"
    )
    p.add_argument("--constitution", required=True, help="NAME or NAME@VERSION, e.g. harmless@2")
    p.add_argument("--prompts", required=True, help="NAME or NAME:SPLIT, e.g. red-team:train")
    p.add_argument("--model", default="smollm2-135m-instruct", help="model spec")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="critique→revision rounds (default: 2; the paper used 4)",
    )
    p.add_argument("--limit", type=int, help="only the first N prompts")
    p.add_argument("--samples", type=int, default=1, help="traces per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--few-shots", type=int, default=2, help="few-shot examples to prepend (0 for none)"
    )
    p.add_argument(
        "--per-prompt", action="store_true", help="one principle for all rounds of a prompt"
    )
    p.add_argument("--principle", help="use only this principle id")
    p.add_argument(
        "--skip-unchanged",
        action="store_true",
        help="skip the revision when the critique says no change is needed",
    )
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--label")
    p.add_argument(
        "--wait", action="store_true", help="follow it with a progress bar until it ends"
    )
    p.set_defaults(func=cmd_critique)

    p = sub.add_parser("pairs", help="RL-CAI: pairs of answers to label, as a job")
    p.add_argument("--prompts", help="NAME or NAME:SPLIT to sample answers for")
    p.add_argument(
        "--from-critique", metavar="JOB", help="pair each trace's initial answer with its revision"
    )
    p.add_argument("--model", default="smollm2-135m-instruct", help="model spec that answers")
    p.add_argument(
        "--samples", type=int, default=2, help="answers per prompt; every two form a pair"
    )
    p.add_argument("--limit", type=int, help="only the first N prompts")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label")
    p.add_argument("--wait", action="store_true", help="follow it until it ends")
    p.set_defaults(func=cmd_pairs)

    p = sub.add_parser("label", help="RL-CAI: soft AI preference labels for a pairs job, as a job")
    p.add_argument("--pairs", required=True, metavar="JOB", help="the pairs job to label")
    p.add_argument("--constitution", required=True, help="NAME or NAME@VERSION")
    p.add_argument(
        "--model", default="smollm2-135m-instruct", help="feedback model spec (local or openai)"
    )
    p.add_argument(
        "--both-orders",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score each pair as given and swapped (default), or --no-both-orders",
    )
    p.add_argument(
        "--one-order", dest="both_orders", action="store_false", help="score only as given"
    )
    p.add_argument("--cot", action="store_true", help="reason step by step before answering")
    p.add_argument("--clamp", help="clamp chain-of-thought probabilities (default: 0.4,0.6)")
    p.add_argument(
        "--few-shots", type=int, default=2, help="labelled comparisons to prepend (0 for none)"
    )
    p.add_argument("--principle", help="use only this principle id")
    p.add_argument("--limit", type=int, help="only the first N pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label")
    p.add_argument("--wait", action="store_true", help="follow it until it ends")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser(
        "demo", help="the whole pipeline on small defaults, as a chain of jobs (about 15 min)"
    )
    p.add_argument(
        "--tiny", action="store_true", help="a random tiny model and a handful of prompts (~1 min)"
    )
    p.add_argument("--model", help="base model spec (default: the embedded model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", metavar="JOB", help="resume a demo that stopped")
    p.add_argument("--no-wait", action="store_true", help="start it and return")
    p.set_defaults(func=cmd_demo)

    ev = sub.add_parser("eval", help="evaluate models: win rates, refusals, lengths")
    evsub = ev.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = evsub.add_parser(
        "run", help="answer the test sets with each model and judge them, as a job"
    )
    p.add_argument("--models", nargs="+", required=True, metavar="SPEC", help="models to evaluate")
    p.add_argument("--reference", help="win rates are against this model (default: the first)")
    p.add_argument("--harmful", default="red-team:test", help="red-team set ('none' to skip)")
    p.add_argument("--helpful", default="helpful:test", help="helpful set ('none' to skip)")
    p.add_argument("--limit", type=int, default=32, help="prompts per set")
    p.add_argument("--judge", default="smollm2-135m-instruct", help="judge model spec")
    p.add_argument("--constitution", default="harmless", help="NAME or NAME@VERSION")
    p.add_argument("--few-shots", type=int, default=2)
    p.add_argument("--both-orders", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--judge-refusals",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also ask the judge whether each answer refuses (the rules always run)",
    )
    p.add_argument("--critique-job", metavar="JOB", help="also measure its revision progress")
    p.add_argument(
        "--reuse-answers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse answers stored by earlier evals of the same weights and sampling",
    )
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label")
    p.add_argument("--wait", action="store_true", help="follow it, then print the results")
    p.set_defaults(func=cmd_eval_run)
    p = evsub.add_parser("show", help="an eval job's metrics, with intervals and sample sizes")
    p.add_argument("job")
    p.set_defaults(func=cmd_eval_show)

    rv = sub.add_parser("review", help="human spot-checks of AI labels")
    rsub = rv.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = rsub.add_parser("stats", help="agreement, kappa, calibration and position consistency")
    p.add_argument("--labels", required=True, metavar="JOB", help="a label job")
    p.set_defaults(func=cmd_review_stats)
    p = rsub.add_parser("add", help="record a verdict (appended; earlier ones are kept)")
    p.add_argument("--labels", required=True, metavar="JOB", help="a label job")
    p.add_argument("--prompt-id", required=True)
    p.add_argument("--pair", type=int, required=True)
    p.add_argument("--verdict", required=True, choices=["A", "B", "tie", "both_bad", "skip"])
    p.add_argument("--reviewer", required=True)
    p.add_argument("--note")
    p.set_defaults(func=cmd_review_add)

    ex = sub.add_parser("export", help="write training data in TRL's formats, with a manifest")
    esub = ex.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = esub.add_parser("sft", help='{"messages": [...]} with the final revision as the answer')
    p.add_argument("--job", required=True, help="a critique job")
    p.add_argument("--all-rounds", action="store_true", help="one example per round's revision")
    p.add_argument("--format", choices=["jsonl", "parquet", "hf"], default="jsonl")
    p.add_argument("--out", help="output folder (default: <home>/exports/<job>-sft)")
    p.add_argument("--force", action="store_true", help="replace an existing export folder")
    p.set_defaults(func=cmd_export_sft)
    p = esub.add_parser("prefs", help='{"prompt", "chosen", "rejected", "score"} preference data')
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
    p.add_argument("--format", choices=["jsonl", "parquet", "hf"], default="jsonl")
    p.add_argument("--out", help="output folder (default: <home>/exports/<job>-prefs)")
    p.add_argument("--force", action="store_true", help="replace an existing export folder")
    p.set_defaults(func=cmd_export_prefs)

    tr = sub.add_parser(
        "train", help="train on the pipeline's data: sft, reward, dpo or rl (GRPO/RLOO), as a job"
    )
    tsub = tr.add_subparsers(dest="trainer", required=True, metavar="TRAINER")
    wants_train = bool(argv) and "train" in argv  # after any global options
    for kind, text in [
        ("sft", "supervised fine-tuning on revisions (TRL SFTTrainer)"),
        ("reward", "a soft-label reward model on preferences (TRL RewardTrainer)"),
        ("dpo", "direct preference optimisation with soft labels (TRL DPOTrainer)"),
        ("rl", "online RL against a reward model (TRL GRPOTrainer or RLOOTrainer)"),
    ]:
        p = tsub.add_parser(kind, help=text, description=text)
        p.add_argument("--config", help="a YAML file of config keys (flags override it)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="set a config key")
        p.add_argument("--label")
        p.add_argument("--wait", action="store_true", help="follow it until it ends")
        if wants_train:
            from cai_engine.training.config import CONFIGS

            add_config_flags(p, CONFIGS[kind])
        p.set_defaults(func=cmd_train)

    vl = sub.add_parser("vllm", help="run a local vLLM (CPU) server for the openai backend")
    vsub = vl.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = vsub.add_parser(
        "serve", help="serve a local model (default: the embedded one) in the foreground"
    )
    p.add_argument("--model", default="smollm2-135m-instruct", help="a local model spec")
    p.add_argument("--name", help="served model name (default: the model's name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_vllm_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv
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
