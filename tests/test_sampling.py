"""Top-p sampling looks among the most likely tokens first and sorts the whole vocabulary only
for rows whose nucleus does not end there: the draws are exactly those of the full sort."""

from __future__ import annotations

import pytest
import torch

from cai_engine.models import decode
from cai_engine.models.decode import _draw, _nucleus, sample


def full_sort(probs, u, top_p):
    values, ids = probs.sort(dim=-1, descending=True, stable=True)
    picks, _ = _draw(values, u, top_p)
    return ids.gather(-1, picks[:, None]).squeeze(-1)


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95])
def test_the_candidates_draw_exactly_what_the_full_sort_draws(top_p, monkeypatch):
    g = torch.Generator().manual_seed(0)
    sorted_rows = []
    real = torch.Tensor.sort

    def counting_sort(self, *args, **kwargs):
        if self.shape[-1] == 4096:
            sorted_rows.append(self.shape[0])
        return real(self, *args, **kwargs)

    for sharpness in (0.3, 3.0, 6.0, 12.0):  # near-uniform (the full sort) to peaked
        # bfloat16 logits, as the local backend makes them: many tokens tie exactly
        logits = (torch.randn(32, 4096, generator=g) * sharpness).to(torch.bfloat16)
        probs = torch.softmax(logits.float() / 0.7, dim=-1)
        u = torch.rand(32, 1, generator=g)
        want = full_sort(probs, u, top_p)
        monkeypatch.setattr(torch.Tensor, "sort", counting_sort)
        got = _nucleus(probs, u, top_p)
        monkeypatch.setattr(torch.Tensor, "sort", real)
        assert torch.equal(got, want), sharpness
    # both ways ran: some rows from the candidates alone, some sorted whole
    assert 0 < sum(sorted_rows) < 4 * 32


def test_a_nucleus_with_a_tie_across_the_candidates_edge_is_sorted_whole(monkeypatch):
    """Tokens 0..9 tie: with 4 candidates the nucleus needs some of them, and which ones the
    candidates held is arbitrary; the row is sorted whole, so the lowest ids come first."""
    monkeypatch.setattr(decode, "NUCLEUS_CANDIDATES", 4)
    probs = torch.full((1, 100), 0.001)
    probs[0, :10] = 0.0955  # 10 x 0.0955 + 90 x 0.001 = 1.045, near enough for the order
    probs = probs / probs.sum()
    for u in (0.0, 0.3, 0.6, 0.99):
        draw = torch.tensor([[u]])
        assert _nucleus(probs, draw, 0.5) == full_sort(probs, draw, 0.5)


def test_sampling_with_a_seed_is_the_same_draw_each_time():
    logits = torch.randn(4, 4096, generator=torch.Generator().manual_seed(1)) * 5

    def draws():
        gens = [torch.Generator().manual_seed(s) for s in range(4)]
        return sample(logits, 0.8, 0.9, gens)

    assert torch.equal(draws(), draws())
    assert torch.equal(sample(logits, 0.0, 0.9, []), logits.argmax(-1))
