"""Keeping each trace's keys and values between critique steps (issue 17): a step prefills only
its new turns, and the texts are exactly those of a run that prefills everything again.

All on the tiny random Llama in float32 (real tokenizer and chat template), so token ids are
compared, not just texts; sampled runs on its peaked copy (`peaked_model_dir`: a near-uniform
distribution turns any float rounding into another draw). The real model in float32 is in
`test_embedded_model.py`.
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


@pytest.fixture(scope="module")
def peaked(peaked_model_dir, tmp_path_factory):
    """The tiny model with peaked distributions (see `peaked_model_dir`)."""
    return load_model(f"hf:{peaked_model_dir}?dtype=float32", tmp_path_factory.mktemp("home"))


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


@pytest.mark.parametrize(
    ("which", "temperature"), [("model", 0.0), ("peaked", 0.9)], ids=["greedy", "sampled"]
)
def test_a_critique_run_keeping_each_traces_cache_writes_exactly_the_same_texts(
    request, which, temperature
):
    model = request.getfixturevalue(which)
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


def test_the_shared_prefix_kept_once_decodes_exactly_as_copied_into_every_row(model, monkeypatch):
    """Cascade attention (the few-shot prefix's keys once per batch) against the prefix copied
    into every row, greedy: the same tokens, with rows of different lengths. (Sampled texts
    can differ where a draw lands within float rounding of a token's edge in the cumulative
    distribution, as they can between batch compositions; the attention itself is compared
    numerically below.)"""
    from cai_engine.models import decode as decoding

    system = {"role": "system", "content": "You answer with care and explain yourself. " * 12}
    rows = [
        model.render([system, {"role": "user", "content": "Tell me about locks. " * n}])
        for n in (1, 4, 2, 7)
    ]

    def run():
        return decode(
            model.model,
            rows,
            max_new_tokens=24,
            temperature=0.0,
            top_p=1.0,
            seeds=[5, 6, 7, 8],
            eos_ids=set(model.eos_ids),
            pad_id=model.tokenizer.pad_token_id,
        )

    assert decoding.use_cascade(model.model)
    once = [d.tokens for d in run()]
    monkeypatch.setattr(decoding, "CASCADE_MODELS", set())
    copied = [d.tokens for d in run()]
    assert once == copied


@pytest.mark.parametrize("queries", [1, 5], ids=["decoding", "prefilling"])
def test_cascade_attention_equals_attention_over_the_prefix_copied_into_each_row(queries):
    """On random tensors: 3 rows, a 9-token shared prefix, own keys with left padding, grouped
    query heads (4 query heads over 2 key-value heads)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from cai_engine.models.decode import cascade_attention

    torch.manual_seed(0)
    b, heads, kv_heads, d, prefix, own = 3, 4, 2, 8, 9, 6
    module = torch.nn.Module()
    module.layer_idx, module.num_key_value_groups, module.is_causal = 0, heads // kv_heads, True
    query = torch.randn(b, heads, queries, d)
    key, value = torch.randn(b, kv_heads, own, d), torch.randn(b, kv_heads, own, d)
    pk, pv = torch.randn(kv_heads, prefix, d), torch.randn(kv_heads, prefix, d)
    allowed = torch.ones(b, 1, queries, own, dtype=torch.bool).tril(own - queries)
    allowed[1, :, :, :2] = False  # row 1 is left-padded by two
    allowed[2, :, :, :1] = False
    if queries > 1:
        allowed[2, :, 0, :] = False  # a padding query: it sees none of its own keys
    # the row's own keys where the cache keeps them: a view of a longer buffer
    key = torch.cat([key, torch.randn(b, kv_heads, 4, d)], 2)[:, :, :own]
    value = torch.cat([value, torch.randn(b, kv_heads, 4, d)], 2)[:, :, :own]
    got, _ = cascade_attention(module, query, key, value, allowed, prefix_kv=[(pk, pv)])
    full_mask = torch.cat([torch.ones(b, 1, queries, prefix, dtype=torch.bool), allowed], -1)
    want, _ = sdpa_attention_forward(
        module,
        query,
        torch.cat([pk[None].expand(b, -1, -1, -1), key], 2),
        torch.cat([pv[None].expand(b, -1, -1, -1), value], 2),
        full_mask,
        is_causal=False,
    )
    assert got.shape == want.shape == (b, queries, heads, d)
    assert torch.allclose(got, want, atol=1e-5)
