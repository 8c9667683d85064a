"""`cai init` and `cai studio`: the data home, and the Streamlit studio on top of it."""

from __future__ import annotations

import os
import signal
import sys
import time

from cai_engine.cli.common import add_command, open_store
from cai_engine.home import studio_app_path


def cmd_init(args) -> int:
    from cai_engine.bundled import install_bundled

    store = open_store(args)
    report = install_bundled(store)
    added = ", ".join(report.constitutions_added) or "none new"
    prompts = ", ".join(f"{k} +{v}" for k, v in report.prompts_added.items())
    print(f"data home: {store.home}")
    print(f"constitutions: {added}; prompt sets: {prompts}")
    return 0


# Streamlit options `cai studio` always passes, so that the studio is the same from a checkout
# (which also has .streamlit/config.toml) and from an installed wheel run in any folder.
STUDIO_OPTIONS = {
    "server.headless": "true",
    "browser.gatherUsageStats": "false",
    "client.toolbarMode": "viewer",  # a local tool: no Deploy button, no developer menu items
}
FORWARDED = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)
STOP_GRACE_S = 10.0  # after passing a signal on, how long Streamlit gets before it is killed


def studio_command(address: str, port: int) -> list[str]:
    """The `streamlit run` command line of the studio."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(studio_app_path())]
    cmd += ["--server.address", address, "--server.port", str(port)]
    for key, value in STUDIO_OPTIONS.items():
        cmd += [f"--{key}", value]
    return cmd


def cmd_studio(args) -> int:
    from cai_engine.bundled import install_bundled

    store = open_store(args)
    install_bundled(store)
    env = {**os.environ, "CAI_HOME": str(store.home)}
    print(f"CAI Studio on http://{args.address}:{args.port}  (data home: {store.home})", flush=True)
    return run_until_stopped(studio_command(args.address, args.port), env)


def run_until_stopped(cmd: list[str], env: dict) -> int:
    """Run `cmd` until it exits; SIGTERM, SIGINT and SIGHUP sent to this process are passed on
    to it, so stopping `cai studio` stops the server (and frees its port). A child that is
    still running `STOP_GRACE_S` after a signal is killed. Returns its exit status (128 + the
    signal's number when a signal ended it)."""
    import subprocess

    proc = subprocess.Popen(cmd, env=env)
    stopping: list[float] = []

    def forward(signum, frame) -> None:
        stopping.append(time.monotonic())
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stopping and time.monotonic() - stopping[0] > STOP_GRACE_S:
                    proc.kill()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 - code if code < 0 else code


def register(sub, full: bool) -> None:
    add_command(
        sub, "init", cmd_init, "create the store and install the bundled constitutions and prompts"
    )
    p = add_command(sub, "studio", cmd_studio, "start the Streamlit studio")
    p.add_argument(
        "--address", default="127.0.0.1", help="address to bind (default: 127.0.0.1, local only)"
    )
    p.add_argument("--port", type=int, default=8501, help="port (default: 8501)")
