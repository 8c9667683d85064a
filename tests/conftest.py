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
