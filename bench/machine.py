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
    from cai_engine.models.local import choose_cpu_dtype

    name, flags = cpu()
    dtype, reason = choose_cpu_dtype()
    return (
        f"cpu: {name}, {os.cpu_count()} cores; flags: {' '.join(flags) or 'none of ' + ', '.join(FLAGS)}\n"
        f"local dtype: {dtype} ({reason}); python {platform.python_version()}"
    )


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
