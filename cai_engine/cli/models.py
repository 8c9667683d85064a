"""`cai models`: list, prepare and try models."""

from __future__ import annotations

import sys
from pathlib import Path

from cai_engine.cli.common import add_command, add_config_flags, open_store, table

CHAT_TOKENS = 128  # a quick check: shorter answers than a job's default


def cmd_models_list(args) -> int:
    from cai_engine.home import models_dir
    from cai_engine.models import EMBEDDED
    from cai_engine.models.embedded import gguf_path, is_converted

    store = open_store(args)
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
    print(table(rows, ["spec", "kind", "state", "source"]))
    print(
        "\nAlso: hf:<hub id or path>, a local model folder, or "
        "openai:<model>?base_url=<url>[&api_key_env=VAR] for any OpenAI-compatible server."
    )
    return 0


def cmd_models_pull(args) -> int:
    from cai_engine.models import EMBEDDED, parse_spec
    from cai_engine.models.embedded import ensure_embedded

    spec = parse_spec(args.spec or EMBEDDED)
    store = open_store(args)
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
    from cai_engine.models import EMBEDDED, SamplingParams, load_model

    store = open_store(args)
    model = load_model(args.model or EMBEDDED, store.home)
    conversation = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.message}
    ]
    given = {k: v for k, v in vars(args).items() if k in SamplingParams.model_fields}
    sampling = SamplingParams(**{"max_new_tokens": CHAT_TOKENS, **given})
    (c,) = model.chat([conversation], sampling)
    print(c.text)
    print(
        f"\n[{model.info().spec}: {c.prompt_tokens} prompt + {c.completion_tokens} completion tokens, "
        f"{c.finish_reason}, {c.latency_s:.2f}s]",
        file=sys.stderr,
    )
    return 0


def register(sub, full: bool) -> None:
    md = sub.add_parser("models", help="list, prepare and try models")
    msub = md.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_command(
        msub, "list", cmd_models_list, "the embedded and trained models, and the other spec forms"
    )
    p = add_command(
        msub,
        "pull",
        cmd_models_pull,
        "prepare a model: convert the embedded one, download an hf id, or check a server",
    )
    p.add_argument("spec", nargs="?", help="a model spec (default: the embedded model)")
    p = add_command(msub, "chat", cmd_models_chat, "one quick chat turn, to check a model works")
    p.add_argument("message")
    p.add_argument("--model", help="model spec (default: the embedded model)")
    p.add_argument("--system", help="a system prompt")
    if full:  # the sampling options, from SamplingParams (pydantic waits for a `models` argv)
        from cai_engine.models import SamplingParams

        add_config_flags(
            p, SamplingParams, skip=("top_p", "stop"), defaults={"max_new_tokens": CHAT_TOKENS}
        )
