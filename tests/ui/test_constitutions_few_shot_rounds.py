"""The Constitutions page shows a multi-round few-shot's earlier rounds and a few-shot's own
request text (both come from llm-swarm chats, see test_peer_formats.py)."""

from __future__ import annotations

from cai_engine.peer_formats import import_paths
from tests.conftest import FIXTURES
from tests.ui.test_pages import open_constitution


def test_earlier_rounds_and_own_requests_are_shown_in_the_few_shots_tab(store):
    path = FIXTURES / "peer" / "llm_swarm" / "multi_round.json"
    c = import_paths([path], name="swarm").constitution
    store.save_constitution(c, note="imported", source="import:llm-swarm", parent_hash=None)
    at = open_constitution("swarm")
    assert not at.exception, at.exception
    md = [m.value for m in at.markdown]
    assert "**Round 1: critique request, critique, revision request, revision**" in md
    assert "**Round 2**" in md
    texts = [t.value for t in at.text]
    assert c.few_shots[0].earlier_rounds[0].critique in texts
    own = [x.value for x in at.caption if "no principle's" in x.value]
    assert len(own) == 2 and "young student" in own[0]
