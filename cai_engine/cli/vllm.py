"""`cai vllm serve`: a local vLLM (CPU) server, for the openai backend."""

from __future__ import annotations

import os
from pathlib import Path

from cai_engine.cli.common import add_command, open_store


def cmd_vllm_serve(args) -> int:
    import subprocess

    from cai_engine import vllm_server
    from cai_engine.errors import CaiError
    from cai_engine.models import EMBEDDED, parse_spec
    from cai_engine.models.local import resolve_local_path

    store = open_store(args)
    spec = parse_spec(args.model or EMBEDDED)
    if spec.backend != "local":
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
            vllm_server.command(Path(model_dir), name, args.port, args.host, args.eager),
            env=env,
        )
    except KeyboardInterrupt:
        return 0


def register(sub, full: bool) -> None:
    vl = sub.add_parser("vllm", help="run a local vLLM (CPU) server for the openai backend")
    vsub = vl.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add_command(
        vsub,
        "serve",
        cmd_vllm_serve,
        "serve a local model (default: the embedded one) in the foreground",
    )
    p.add_argument("--model", help="a local model spec (default: the embedded model)")
    p.add_argument("--name", help="served model name (default: the model's name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--eager",
        action="store_true",
        help="skip torch.compile: starts in about a minute instead of three, generates slower",
    )
