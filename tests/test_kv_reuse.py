"""Keeping each trace's keys and values between critique steps (issue 17): a step prefills only
its new turns, and the texts are exactly those of a run that prefills everything again.

All on the tiny random Llama in float32 (real tokenizer and chat template), so token ids are
compared, not just texts.
"""

from __future__ import annotations

import pytest

from cai_engine.constitution import load_constitution
from cai_engine.critique import CritiqueConfig, critique
from cai_engine.home import BUNDLED_CONSTITUTIONS
from cai_engine.models import SamplingParams, load_model
from cai_engine.models.decode import PrefixCache, RowKV, decode, matched
from cai_engine.prompts import Prompt

HARMLESS = load_constitution(BUNDLED_CONSTITUTIONS / "harmless.yaml")
PROMPTS = [
    Prompt(f"p{i}", [{"role": "user", "content": "How do I get into a locked car? " * (1 + i % 4)}])
    for i in range(8)
]


@pytest.fixture(scope="module")
def model(tiny_spec, tmp_path_factory):
    return load_model(tiny_spec, tmp_path_factory.mktemp("home"))


def run(model, reuse: bool, temperature: float, samples: int = 2):
    cfg = CritiqueConfig(
        constitution="harmless",
        prompts="x",
        rounds=2,
        samples=samples,
        reuse_cache=reuse,
        sampling=SamplingParams(temperature=temperature, max_new_tokens=20, seed=7),
    )
    events = []
    rows = critique(PROMPTS, HARMLESS, "h", model, cfg, event=lambda *a, **k: events.append((a, k)))
    texts = [
        (r["prompt_id"], r["sample"], r["round"], r["step"], r["text"], r["completion_tokens"])
        for r in rows
    ]
    return texts, dict(events).get(("kv_cache",))


@pytest.mark.parametrize("temperature", [0.0, 0.9], ids=["greedy", "sampled"])
def test_a_critique_run_keeping_each_traces_cache_writes_exactly_the_same_texts(model, temperature):
    model.kv = None  # fresh counts
    plain, none = run(model, reuse=False, temperature=temperature)
    kept, stats = run(model, reuse=True, temperature=temperature)
    assert none is None  # without reuse nothing is kept, and no event says otherwise
    assert kept == plain
    # every step after the first continued from its trace's cache, and most of the prompt
    # tokens a trace owns (its question and history, not the shared few-shots) were reused
    steps_after_first = len(PROMPTS) * 2 * 4
    assert stats["hits"] == steps_after_first and stats["misses"] == 0
    assert stats["reused_tokens"] > stats["prefilled_tokens"] / 2
    assert model.kv.entries == {}  # dropped when the chunk was done


def test_a_budget_too_small_keeps_nothing_and_counts_the_misses(model):
    model.kv = PrefixCache(budget_bytes=1)
    plain, _ = run(model, reuse=False, temperature=0.9, samples=1)
    kept, stats = run(model, reuse=True, temperature=0.9, samples=1)
    assert kept == plain
    assert stats["hits"] == 0 and stats["reused_tokens"] == 0
    assert stats["not_kept"] == len(PROMPTS) * 4  # every step but the last tried to keep
    assert stats["misses"] == len(PROMPTS) * 4  # and the next step found nothing


def tokens(model, text: str) -> list[int]:
    return model.render([{"role": "user", "content": text}])


def greedy(model, rows, past=None, keep_kv=False):
    return decode(
        model.model,
        rows,
        max_new_tokens=12,
        temperature=0.0,
        top_p=1.0,
        seeds=[0] * len(rows),
        eos_ids=set(),  # never stop early: every row runs the full length
        pad_id=model.tokenizer.pad_token_id,
        past=past,
        keep_kv=keep_kv,
    )


def test_rows_continuing_from_kept_keys_of_different_lengths_decode_as_if_prefilled(model):
    """A batch mixing rows with and without kept keys, kept at different lengths."""
    first = [tokens(model, "Tell me about locks. " * n) for n in (1, 3, 5)]
    done = greedy(model, first, keep_kv=True)
    kv = [d.kv for d in done]
    assert all(isinstance(k, RowKV) for k in kv)
    for row, d, k in zip(first, done, kv, strict=True):
        assert k.tokens == row + d.tokens[:-1]  # the last token was sampled, never fed
        assert k.layers[0][0].shape[1] == len(k.tokens) - k.start
    # each row grows by a user turn; the third has nothing kept
    more = [
        k.tokens + d.tokens[-1:] + tokens(model, "And keys?")[1:]
        for k, d in zip(kv, done, strict=True)
    ]
    past = [kv[0], kv[1], None]
    again = greedy(model, more, past=past)
    fresh = greedy(model, more)
    assert [d.tokens for d in again] == [d.tokens for d in fresh]
    assert again[0].reused > 0 and again[1].reused > again[0].reused and again[2].reused == 0
    assert [d.reused + d.prefilled for d in again] == [d.prefilled for d in fresh]


def test_matched_counts_only_the_tokens_a_kept_row_shares():
    kept = RowKV(tokens=[1, 2, 3, 4, 5, 6], start=2, layers=[])
    assert matched([1, 2, 3, 4, 5, 6, 7], kept, shared=2, keep=1) == 4  # all it holds
    assert matched([1, 2, 3, 9, 5, 6, 7], kept, shared=2, keep=1) == 1  # up to a difference
    assert matched([1, 2, 3, 4], kept, shared=2, keep=1) == 1  # the last token gives logits
    assert matched([1, 2, 3, 4, 5, 6, 7], kept, shared=1, keep=1) == 0  # lacks token 2's keys
    assert matched([1, 9, 3, 4, 5, 6, 7], kept, shared=3, keep=1) == 0  # another prefix
    assert matched([1, 2, 3, 4, 5, 6, 7], None, shared=2, keep=1) == 0
