"""Fixtures for the bad-input corpus: a data home that already holds the user's work.

Building a store (migrations, saves, an import) costs a few tenths of a second, and most cases
need one, so the store is built once per session and its DuckDB file copied into each test's
own data home (`cai_home`, from tests/conftest.py).
"""

from __future__ import annotations

import shutil

import pytest

from cai_engine.home import db_path
from cai_engine.prompts import import_prompt_set
from cai_engine.store import Store
from tests.reliability.bad_inputs.support import good_constitution

# The user's prompt set `kept`: what a bad import into it must leave alone.
KEPT_PROMPTS = b"""\
{"prompt": "How do I bake bread?", "category": "cooking"}
{"prompt": "What is a prime number?", "category": "maths"}
{"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Tell me a joke."}]}
"""


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    """A store holding `mine@1`, `mine@2`, `other@1` and the prompt set `kept`."""
    home = tmp_path_factory.mktemp("bad-inputs-template")
    store = Store(home, lock_timeout=5)
    first = good_constitution()
    v1, _ = store.save_constitution(first, note="the user's first version")
    second = first.model_copy(update={"description": "Edited by the user."})
    store.save_constitution(second, note="an edit", parent_hash=v1.hash)
    store.save_constitution(first.model_copy(update={"name": "other"}))
    import_prompt_set(store, ("kept.jsonl", KEPT_PROMPTS), "kept", description="the user's set")
    with store.connect() as con:
        con.rows("CHECKPOINT")
    return db_path(home)


@pytest.fixture
def user_store(cai_home, template_db) -> Store:
    """This test's data home, already holding the user's constitutions and prompts."""
    cai_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_db, db_path(cai_home))
    return Store(cai_home, lock_timeout=5)
