"""Random-weight chat models with the embedded model's tokenizer and chat template.

- `make_tiny_model`: a tiny Llama (about 3M parameters). Tests and `cai demo --tiny` use it:
  every stage runs end to end in seconds, with real tokenization and chat templating, and no
  download. Its text is gibberish by design.
- `make_random_model`: any Llama-family shape from a config (the benchmarks' `--random-init`,
  e.g. SmolLM2-1.7B's shape): speed does not depend on the weights' values, so a GPU box with
  no weights and no network can still measure throughput at real scale.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cai_engine.models.embedded import GGUF_FILE, embedded_dir, gguf_path, is_converted

TINY_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


def load_tokenizer(home: Path | None = None, source: str | Path | None = None):
    """SmolLM2's tokenizer: from `source` (a folder with tokenizer.json), else the converted
    embedded model under `home` (its small files), else read out of the bundled GGUF."""
    from transformers import AutoTokenizer

    if source is not None:
        return AutoTokenizer.from_pretrained(str(source))
    if home is not None and is_converted(Path(home)):
        return AutoTokenizer.from_pretrained(str(embedded_dir(Path(home))))
    path = gguf_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=GGUF_FILE)


def read_shape(config: str | Path | dict) -> dict:
    """A model shape: a dict, or a JSON file of LlamaConfig fields ("_comment" keys ignored)."""
    if isinstance(config, dict):
        shape = dict(config)
    else:
        shape = json.loads(Path(config).read_text())
    return {k: v for k, v in shape.items() if not k.startswith("_")}


def make_random_model(
    config: str | Path | dict,
    path: str | Path,
    *,
    seed: int = 0,
    dtype: str = "float32",
    home: Path | None = None,
    tokenizer: str | Path | None = None,
) -> Path:
    """Write a Llama with random weights of the given shape to `path` (once); returns it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    if (path / "config.json").exists():
        return path
    tok = load_tokenizer(home, tokenizer)
    shape = read_shape(config)
    config = LlamaConfig(
        **{"vocab_size": len(tok), **shape},
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))  # a 1.7B model in fp32 is 7 GB: build it small
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    # Written aside and renamed: a crash mid-write leaves no folder that looks finished, and
    # of two processes building the same model, the second finds the first's.
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(path)
    except OSError:
        if not (path / "config.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def make_tiny_model(path: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Write a tiny Llama (about 3M parameters, mostly the embedding) to `path`; returns it."""
    shape = {**TINY_SHAPE, "hidden_size": hidden, "intermediate_size": hidden * 2}
    return make_random_model({**shape, "num_hidden_layers": layers}, path, seed=seed)
