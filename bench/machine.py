"""What every benchmark prints first: the CPU model, its matmul-relevant instruction sets and the
dtype the local backend picks on it (measured, as `models/local.py: choose_cpu_dtype` does),
because the same benchmark moves by 6x between an AMX machine and an AVX2 one."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu() -> tuple[str, list[str]]:
    """(model name, the matmul-relevant flags it has) from /proc/cpuinfo."""
    name, flags = platform.processor() or platform.machine(), set()
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine()):
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return name, [f for f in FLAGS if f in flags]


def describe() -> str:
    import torch

    from cai_engine.models.local import choose_cpu_dtype

    name, flags = cpu()
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_properties(0)
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        where = f"gpu: {gpu.name}, {gpu.total_memory / 1024**3:.0f} GiB\n"
        reason = "GPU default"
    else:
        where = ""
        dtype, reason = choose_cpu_dtype()
    return (
        f"cpu: {name}, {os.cpu_count()} cores; flags: {' '.join(flags) or 'none of ' + ', '.join(FLAGS)}\n"
        f"{where}local dtype: {dtype} ({reason}); python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def accelerator() -> str:
    """Where the benchmark's baselines run: the GPU when there is one, as our backend does."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def baseline_model(path):
    """The model a user's first script loads: fp32 on a CPU (`from_pretrained`'s habit
    there), bf16 on a GPU; returns (model, "<dtype> on <device>")."""
    import torch
    from transformers import AutoModelForCausalLM

    device = accelerator()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, f"{str(dtype).removeprefix('torch.')} on {device}"


def peak_gpu_gb() -> float | None:
    """The most GPU memory this process's tensors held, in GiB (None without a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 1024**3


def write_json(path, data: dict) -> None:
    """A benchmark's numbers for `bench/device_check.sh`'s table (with `--json PATH`)."""
    import json

    if path:
        Path(path).write_text(json.dumps(data, indent=1))


# -- the model a benchmark measures ---------------------------------------------------------

CONFIGS = Path(__file__).resolve().parent / "configs"


def add_model_args(parser) -> None:
    parser.add_argument(
        "--random-init",
        metavar="CONFIG",
        help="measure a model with random weights of this shape instead of the embedded one: "
        "a JSON file of Llama config fields, or a name in bench/configs "
        f"({', '.join(sorted(p.stem for p in CONFIGS.glob('*.json')))}); speed does not depend "
        "on the weights, so nothing is downloaded",
    )
    parser.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="with --random-init: a folder with SmolLM2's tokenizer files (default: the "
        "converted embedded model's, else the bundled GGUF's)",
    )


def config_path(random_init: str) -> Path:
    path = Path(random_init)
    if path.suffix != ".json":
        path = CONFIGS / f"{random_init}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.json")))
        raise SystemExit(f"--random-init {random_init}: no such config file (known: {known})")
    return path


def model_dir(home, random_init: str | None = None, tokenizer: str | None = None) -> Path:
    """The folder of the model to measure: the embedded model (converted once), or a random
    model of the `random_init` shape built once under the home's cache."""
    from cai_engine.models.embedded import ensure_embedded

    home = Path(home)
    if not random_init:
        return ensure_embedded(home, log=lambda *_: None)
    from cai_engine.models.tiny import make_random_model

    config = config_path(random_init)
    return make_random_model(
        config,
        home / "cache" / f"random-{config.stem}",
        dtype="bfloat16",
        home=home,
        tokenizer=tokenizer,
    )


def model_spec(home, random_init: str | None = None, tokenizer: str | None = None) -> str:
    """The spec `load_model` takes for the model `model_dir` gives."""
    from cai_engine.models import EMBEDDED

    return f"hf:{model_dir(home, random_init, tokenizer)}" if random_init else EMBEDDED


def describe_model(home, random_init: str | None = None, tokenizer: str | None = None) -> str:
    import json

    path = model_dir(home, random_init, tokenizer)
    config = json.loads((path / "config.json").read_text())
    kind = f"random weights, {config_path(random_init).stem}'s shape" if random_init else "embedded"
    shape = (
        f"{config['num_hidden_layers']} layers x {config['hidden_size']} hidden, "
        f"vocabulary {config['vocab_size']}"
    )
    return f"model: {path.name} ({kind}; {shape})"


def matmul_rate(dtype: str, inner: int = 576, cols: int = 1536, rows: int = 2048) -> float:
    """FLOP/s of one matrix product in `dtype` ("bfloat16" or "float32") on the accelerator
    (the CPU without one), at the shape of an MLP layer (`inner` = the model's hidden size,
    `cols` = its intermediate size) over a batch of tokens, best of 5: the ceiling a forward
    pass of that model can approach, measured on this machine in this process."""
    import time

    import torch

    device = accelerator()
    kind = getattr(torch, dtype)
    a = torch.randn(rows, inner, dtype=kind, device=device)
    b = torch.randn(inner, cols, dtype=kind, device=device)
    a @ b  # warm up
    best = float("inf")
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 10 * 2 * rows * inner * cols / best


def linear_flops_per_token(model) -> float:
    """2 x the parameters a token's forward pass multiplies by: the decoder layers' linear
    weights (not the embeddings, nor the output layer, which runs only where logits are kept)."""
    return 2.0 * sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.dim() == 2 and "embed" not in n and "lm_head" not in n
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have_vllm() -> bool:
    from cai_engine import vllm_server

    return (vllm_server.VENV / "bin" / "python").exists()


class VllmServer:
    """A vLLM-CPU server on the benchmark's model (bf16, compiled, prefix caching on: vLLM's
    defaults), and the `openai` backend model that talks to it; stopped on exit.

        with VllmServer(home, which, concurrency=64) as vllm:
            vllm.model.chat(...)
    """

    def __init__(self, home, which: tuple, concurrency: int = 64):
        self.home, self.which, self.concurrency = Path(home), which, concurrency

    def __enter__(self):
        from cai_engine import vllm_server
        from cai_engine.models import load_model

        port = free_port()
        path = model_dir(self.home, *self.which)
        self.proc = vllm_server.start(path, "smollm2-135m-instruct", port, self.home / "vllm.log")
        try:
            self.ready_s = vllm_server.wait_healthy(f"http://127.0.0.1:{port}", self.proc, 900)
        except BaseException:
            self.__exit__()
            raise
        spec = vllm_server.spec_for("smollm2-135m-instruct", port)
        self.model = load_model(f"{spec}&concurrency={self.concurrency}", self.home)
        self.note = (
            f"vLLM-CPU, bf16, {vllm_server.KV_CACHE_GB} GB KV cache, prefix caching on, "
            f"started in {self.ready_s:.0f}s"
        )
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
