"""`cai init` and `cai studio`: the data home, and the Streamlit studio on top of it."""

from __future__ import annotations

import os
import sys

from cai_engine.cli.common import add_command, open_store


def cmd_init(args) -> int:
    from cai_engine.bundled import install_bundled

    store = open_store(args)
    report = install_bundled(store)
    added = ", ".join(report.constitutions_added) or "none new"
    prompts = ", ".join(f"{k} +{v}" for k, v in report.prompts_added.items())
    print(f"data home: {store.home}")
    print(f"constitutions: {added}; prompt sets: {prompts}")
    return 0


def cmd_studio(args) -> int:
    import subprocess

    from cai_engine.bundled import install_bundled
    from cai_engine.home import studio_app_path

    store = open_store(args)
    install_bundled(store)
    env = {**os.environ, "CAI_HOME": str(store.home)}
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(studio_app_path()),
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


def register(sub, full: bool) -> None:
    add_command(
        sub, "init", cmd_init, "create the store and install the bundled constitutions and prompts"
    )
    p = add_command(sub, "studio", cmd_studio, "start the Streamlit studio")
    p.add_argument(
        "--address", default="127.0.0.1", help="address to bind (default: 127.0.0.1, local only)"
    )
    p.add_argument("--port", type=int, default=8501, help="port (default: 8501)")
