"""Shared fixtures. Every test gets its own throwaway data home; none touches storage/."""

from __future__ import annotations

from pathlib import Path

import pytest

from cai_engine.bundled import install_bundled
from cai_engine.store import Store

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
def tiny_spec(tiny_model_dir) -> str:
    """The tiny model as a model spec string; float32 so results do not depend on the CPU."""
    return f"hf:{tiny_model_dir}?dtype=float32"


@pytest.fixture(scope="session")
def embedded_home(tmp_path_factory) -> Path:
    """A data home whose embedded SmolLM2 has been converted from its GGUF (once per session)."""
    from cai_engine.models.embedded import ensure_embedded

    home = tmp_path_factory.mktemp("embedded-home")
    ensure_embedded(home, log=lambda *_: None)
    return home
