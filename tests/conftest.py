"""Shared fixtures. Every test gets its own throwaway data home; none touches storage/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cai_engine.bundled import install_bundled
from cai_engine.store import Store

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# With several xdist workers on a machine of few cores, one torch thread per process (the
# workers and the jobs, servers and benchmarks they start, which inherit it): each process's
# default of a thread per core oversubscribes the cores, and OpenMP's spinning threads then
# slow every process down several times. Set before any test module imports torch.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def cai_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CAI_HOME", str(home))
    return home


@pytest.fixture
def store(cai_home) -> Store:
    return Store(cai_home, lock_timeout=5)


@pytest.fixture
def seeded_store(store) -> Store:
    """A store with the bundled constitutions and prompt sets installed."""
    install_bundled(store)
    return store


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer and chat template, built once per session."""
    from cai_engine.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny")


@pytest.fixture(scope="session")
def peaked_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with its logits scaled 60x: peaked next-token distributions, as a trained
    model's are, where the tiny one's are near-uniform over 49k tokens.

    For tests that compare sampled texts made by different computations of the same thing (a
    trace's keys kept from its last step against computed again after a kill): from a
    near-uniform distribution, any float rounding (CPU kernels pick their blocking by matrix
    shape; on some CPUs a decoding step's products round differently from a prefill's) moves
    a draw to another token; from a peaked one only a draw within rounding of a token's edge
    could move."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("peaked-model") / "tiny"
    shutil.copytree(tiny_model_dir, folder)
    weights = load_file(folder / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"] * 60
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="session")
def tiny_spec(tiny_model_dir) -> str:
    """The tiny model as a model spec string; float32, so a computation gives the same results
    on any CPU (a different computation of the same thing can round differently: see
    `peaked_model_dir`)."""
    return f"hf:{tiny_model_dir}?dtype=float32"


@pytest.fixture(scope="session")
def embedded_home(tmp_path_factory) -> Path:
    """A data home whose embedded SmolLM2 has been converted from its GGUF (once per session)."""
    from cai_engine.models.embedded import ensure_embedded

    home = tmp_path_factory.mktemp("embedded-home")
    ensure_embedded(home, log=lambda *_: None)
    return home


PAIRS_PROMPTS, PAIRS_SAMPLES = 12, 3


@pytest.fixture(scope="module")
def pairs_job(tmp_path_factory, tiny_spec):
    """One real pairs job on the tiny model (12 prompts x 3 samples = 36 pairs) in its own data
    home, built once per test module (test_pairs checks it; test_labels labels it)."""
    home = tmp_path_factory.mktemp("pairs-home")
    store = Store(home, lock_timeout=5)
    install_bundled(store)
    from cai_engine.pairs import submit_pairs
    from tests.runners import finish, kill_runners

    job = submit_pairs(
        store,
        {
            "prompts": "red-team:train",
            "model": tiny_spec,
            "samples": PAIRS_SAMPLES,
            "limit": PAIRS_PROMPTS,
            "sampling": {"max_new_tokens": 4},
        },
    )
    try:
        job = finish(store, job.id, timeout=90.0)
        assert job.status == "succeeded", job.error
        yield store, job
    finally:
        kill_runners(home)
