"""Our batched decode loop for transformers causal LMs; faster than `generate` on a CPU.

Measured on 2 cores with SmolLM2-135M in bf16 (bench/generation.py), `generate` spends a
large share of each step outside the model: a multinomial draw over the 49k vocabulary,
cache concatenation, logits processors. This loop keeps only what we need:
1. a shared prompt prefix (the system prompt, few-shot turns) is prefilled once and copied
   into every row of the KV cache; rows are laid out [prefix | padding | own tokens], and
   the attention mask hides the padding;
2. the KV cache grows by doubling, not by concatenating every step;
3. each row samples with its own seeded generator by inverse CDF, so a row's text does not
   depend on which other rows share its batch;
4. finished rows are dropped from the batch once enough of them have finished;
5. optionally, a row continues from keys and values kept from an earlier call (`RowKV`, kept
   in a bounded `PrefixCache`): a conversation that grows by a few turns (the critique stage's
   answer → critique → revision) prefills only its new tokens, not its whole history again.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import Cache, DynamicLayer

MIN_SHARED_PREFIX = 8  # tokens; shorter common prefixes are not worth a separate prefill
COMPACT_FRACTION = 8  # drop finished rows once 1/8 of the batch has finished (and it pays)


class GrowingLayer(DynamicLayer):
    """A KV-cache layer backed by a buffer that doubles when full (amortised O(1) appends)."""

    def lazy_initialization(self, key_states, value_states) -> None:
        self.device, self.dtype = key_states.device, key_states.dtype
        self.length = 0
        self._alloc(max(64, 2 * key_states.shape[-2]), key_states)
        self.is_initialized = True

    def _alloc(self, capacity: int, like) -> None:
        shape = (*like.shape[:2], capacity, like.shape[-1])
        keys = torch.empty(shape, dtype=self.dtype, device=self.device)
        values = torch.empty(shape, dtype=self.dtype, device=self.device)
        if getattr(self, "kbuf", None) is not None and self.length:
            keys[:, :, : self.length] = self.kbuf[:, :, : self.length]
            values[:, :, : self.length] = self.vbuf[:, :, : self.length]
        self.kbuf, self.vbuf = keys, values

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self.length + n > self.kbuf.shape[-2]:
            self._alloc(max(2 * self.kbuf.shape[-2], self.length + n), self.kbuf)
        self.kbuf[:, :, self.length : self.length + n] = key_states
        self.vbuf[:, :, self.length : self.length + n] = value_states
        self.length += n
        self.keys = self.kbuf[:, :, : self.length]
        self.values = self.vbuf[:, :, : self.length]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def batch_select_indices(self, indices) -> None:
        if self.is_initialized:
            self.kbuf, self.vbuf = self.kbuf[indices], self.vbuf[indices]
            self.keys, self.values = self.kbuf[:, :, : self.length], self.vbuf[:, :, : self.length]

    def keep_rows(self, indices, room: int) -> None:
        """Keep only the rows `indices`, in a buffer with room for `room` more tokens: a
        copy of the keys written so far plus that room, not of the whole buffer."""
        if self.is_initialized:
            end = min(self.kbuf.shape[-2], self.length + room)
            self.kbuf = self.kbuf[:, :, :end].index_select(0, indices)
            self.vbuf = self.vbuf[:, :, :end].index_select(0, indices)
            self.keys, self.values = self.kbuf[:, :, : self.length], self.vbuf[:, :, : self.length]

    def adopt(self, keys, values, length: int) -> None:
        """Take `keys` and `values` ([batch, kv heads, capacity, head dim], the first `length`
        positions written) as this empty layer's buffers."""
        self.device, self.dtype = keys.device, keys.dtype
        self.kbuf, self.vbuf, self.length = keys, values, length
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]
        self.is_initialized = True

    def expand_batch(self, size: int) -> None:
        """Copy a batch-1 cache (a shared prefix) into `size` rows."""
        if self.is_initialized:
            self.kbuf = self.kbuf.expand(size, -1, -1, -1).contiguous()
            self.vbuf = self.vbuf.expand(size, -1, -1, -1).contiguous()
            self.keys, self.values = self.kbuf[:, :, : self.length], self.vbuf[:, :, : self.length]


@dataclass
class RowKV:
    """One row's keys and values for `tokens[start:]`, per layer ([kv heads, n, head dim]):
    what a later call whose row starts with the same tokens can reuse instead of prefilling.
    The first `start` tokens are a shared prefix that every batch prefills once anyway."""

    tokens: list[int]
    start: int
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)


@dataclass
class PrefixCache:
    """Rows' keys and values kept between calls, by a caller's key (a trace), within a byte
    budget. A row taken is removed (its continuation replaces it). When the budget is full a
    new row is not kept: rows are used in the order they were made, so evicting the oldest
    (LRU) would throw away exactly the rows wanted next, and no row would ever be reused."""

    budget_bytes: int
    entries: dict[Hashable, RowKV] = field(default_factory=dict)
    used_bytes: int = 0
    hits: int = 0  # rows that continued from the row kept for their key
    misses: int = 0  # rows whose key had no row kept (the budget was full), or none usable
    not_kept: int = 0  # rows the budget had no room for
    reused_tokens: int = 0  # prompt tokens not prefilled thanks to a kept row
    prefilled_tokens: int = 0  # prompt tokens of keyed rows that were prefilled
    refused: set = field(default_factory=set)  # keys whose row the budget had no room for

    def take(self, key: Hashable) -> RowKV | None:
        row = self.entries.pop(key, None)
        if row is not None:
            self.used_bytes -= row.nbytes
        elif key in self.refused:
            self.refused.discard(key)
            self.misses += 1
        return row

    def put(self, key: Hashable, row: RowKV) -> None:
        self.take(key)
        if self.used_bytes + row.nbytes > self.budget_bytes:
            self.not_kept += 1
            self.refused.add(key)
            return
        self.entries[key] = row
        self.used_bytes += row.nbytes

    def clear(self) -> None:
        self.entries.clear()
        self.refused.clear()
        self.used_bytes = 0

    def stats(self) -> dict:
        asked = self.hits + self.misses
        total = self.reused_tokens + self.prefilled_tokens
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / asked if asked else None,
            "not_kept": self.not_kept,
            "reused_tokens": self.reused_tokens,
            "prefilled_tokens": self.prefilled_tokens,
            "reused_share": self.reused_tokens / total if total else None,
        }


@dataclass
class Decoded:
    tokens: list[int]  # generated ids, up to and including the first end-of-sequence id
    finish: str  # "stop" | "length" | "cancelled"
    kv: RowKV | None = None  # with keep_kv: the row's keys and values, prompt and answer
    reused: int = 0  # prompt tokens whose keys came from `past`
    prefilled: int = 0  # prompt tokens computed for this row alone (not the shared prefix)


def _cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def common_prefix(rows: list[list[int]]) -> int:
    first = rows[0]
    n = min(len(r) for r in rows)
    for i in range(n):
        t = first[i]
        if any(r[i] != t for r in rows):
            return i
    return n


CASCADE = "cai_cascade"  # our attention: the shared prefix's keys are kept once, not per row
CASCADE_MODELS = {"llama"}  # plain causal attention (no soft-capping, no sliding window)


def cascade_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, prefix_kv=None, **kw
):
    """Attention over [shared prefix | the row's own keys] with the prefix's keys and values
    stored once for the batch ([kv heads, S, head dim]), not copied into every row.

    On CPU the two parts are two flash-attention calls that also return each query's
    log-sum-exp, merged exactly (cascade attention, as FlashInfer does it): the prefix part
    is one call for every row's queries at once, each key-value head's queries stacked, so
    it is one large matrix product, not one per row; the own part reads the cache where it
    lies (a copy of it per step would cost more than the attention). Elsewhere, and without
    `prefix_kv`, SDPA runs over the prefix expanded as a view.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if prefix_kv is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kw
        )
    pk, pv = prefix_kv[module.layer_idx]
    b, heads, q, d = query.shape
    kv_heads, own = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scaling = scaling if scaling is not None else d**-0.5
    if query.device.type != "cpu":
        allowed = _own_mask(attention_mask, b, q, own, query.device)  # [b, 1, q, own] bool
        prefix_ok = torch.ones((b, 1, q, pk.shape[1]), dtype=torch.bool, device=query.device)
        return sdpa_attention_forward(
            module,
            query,
            torch.cat([pk[None].expand(b, -1, -1, -1), key], dim=2),
            torch.cat([pv[None].expand(b, -1, -1, -1), value], dim=2),
            torch.cat([prefix_ok, allowed], dim=-1),
            dropout=dropout,
            scaling=scaling,
            is_causal=False,
        )
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    # a key-value head's `group` query heads are its queries: [b, kv, group * q, d]
    qg = query.reshape(b, kv_heads, group * q, d)
    bias, empty = _own_bias(attention_mask, b, q, own, group, query.dtype)
    o_own, l_own = flash(qg, key, value, 0.0, False, attn_mask=bias, scale=scaling)
    if empty is not None:  # a query that sees none of its own keys has only the prefix
        l_own = l_own.masked_fill(empty, float("-inf"))
        o_own = o_own.nan_to_num(0.0)
    stacked = qg.transpose(0, 1).reshape(1, kv_heads, b * group * q, d)
    o_pre, l_pre = flash(stacked, pk[None], pv[None], 0.0, False, scale=scaling)
    o_pre = o_pre[0].view(kv_heads, b, group * q, d).transpose(0, 1)
    l_pre = l_pre[0].view(kv_heads, b, group * q).transpose(0, 1)
    total = torch.logaddexp(l_own, l_pre)
    out = o_own.float().mul_((l_own - total).exp_()[..., None])
    out = out.add_(o_pre.float().mul_((l_pre - total).exp_()[..., None])).to(query.dtype)
    return out.view(b, heads, q, d).transpose(1, 2).contiguous(), None


_BIAS: list = [None, None, None]  # [the mask object, its shape key, (bias, empty)]


def _own_bias(attention_mask, b: int, q: int, own: int, group: int, dtype):
    """The additive [b, 1, group * q or 1, own] bias of the rows' own keys, and which queries
    see none of them ([b, 1, group * q] bool, None when every query sees some). Made once per
    forward pass: every layer gets the same mask object, so the last one is kept."""
    shape = (b, q, own, group, dtype)
    if _BIAS[0] is attention_mask and _BIAS[1] == shape:
        return _BIAS[2]
    allowed = _own_mask(attention_mask, b, q, own, "cpu")  # [b, 1, q, own] bool
    bias = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, float("-inf"))
    bias = bias.repeat(1, 1, group, 1) if q > 1 else bias
    empty = ~allowed.any(-1)
    empty = empty.repeat(1, 1, group) if bool(empty.any()) else None
    _BIAS[:] = [attention_mask, shape, (bias, empty)]
    return bias, empty


def _own_mask(attention_mask, b: int, q: int, own: int, device) -> torch.Tensor:
    """The boolean [b, 1, q, own] mask of the row's own keys, whatever form the mask came in."""
    if attention_mask is None:  # no padding: causal only
        causal = torch.ones((q, own), dtype=torch.bool, device=device).tril(own - q)
        return causal.expand(b, 1, q, own)
    m = attention_mask[:, :, -q:, -own:]
    return (m if m.dtype == torch.bool else m == 0).expand(b, 1, q, own)


def use_cascade(model) -> bool:
    """Switch `model` to the cascade attention when its architecture is known to be plain
    causal attention; returns whether it is on."""
    if getattr(model.config, "model_type", "") not in CASCADE_MODELS:
        return False
    if model.config._attn_implementation != CASCADE:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(CASCADE, cascade_attention)
        AttentionMaskInterface.register(CASCADE, sdpa_mask)
        model.set_attn_implementation(CASCADE)
    return True


NUCLEUS_CANDIDATES = 256  # top-p looks among this many first (sorting all 49k took 10x the time)


def sample(
    logits, temperature: float, top_p: float, generators: list[torch.Generator]
) -> torch.Tensor:
    """One token per row. Each row draws from its own generator (inverse CDF over the tokens
    by falling probability, ties by token id)."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    # CPU generators: the same draws on any device, so a seed gives the same text on a GPU
    u = torch.cat([torch.rand(1, generator=g) for g in generators]).unsqueeze(-1)
    u = u.to(logits.device)
    if top_p < 1.0:
        return _nucleus(probs, u, top_p)
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, u * cdf[:, -1:]).clamp(max=probs.shape[-1] - 1).squeeze(-1)


def _nucleus(probs, u, top_p: float) -> torch.Tensor:
    """Top-p sampling: the smallest set of most likely tokens reaching `top_p`, drawn from at
    `u`. Sorting the whole vocabulary costs about as much as the model's step on CPU, so the
    `NUCLEUS_CANDIDATES` most likely tokens are tried first: a row whose nucleus ends among
    them, strictly above their smallest probability (so no tie crosses the cut), draws
    exactly what the full sort would give; the other rows are sorted whole."""
    k = min(NUCLEUS_CANDIDATES, probs.shape[-1])
    values, ids = probs.topk(k, dim=-1)
    ids, by_id = ids.sort(dim=-1)  # ties by token id, as the full stable sort orders them
    values, order = values.gather(-1, by_id).sort(dim=-1, descending=True, stable=True)
    ids = ids.gather(-1, order)
    picks, kept = _draw(values, u, top_p)
    last = values.gather(-1, (kept - 1).clamp(min=0)[:, None]).squeeze(-1)
    exact = (kept < k) & (last > values[:, -1])
    out = ids.gather(-1, picks[:, None]).squeeze(-1)
    rest = (~exact).nonzero().squeeze(-1)
    if rest.numel():
        values, ids = probs[rest].sort(dim=-1, descending=True, stable=True)
        picks, _ = _draw(values, u[rest], top_p)
        out[rest] = ids.gather(-1, picks[:, None]).squeeze(-1)
    return out


def _draw(sorted_probs, u, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The position drawn at `u` in each row of probabilities sorted high to low, keeping the
    smallest set reaching `top_p`; and how many that set holds."""
    sorted_probs = sorted_probs.clone()
    cdf = sorted_probs.cumsum(-1)
    dropped = (cdf - sorted_probs) > top_p
    sorted_probs[dropped] = 0.0
    cdf = sorted_probs.cumsum(-1)
    pick = torch.searchsorted(cdf, u * cdf[:, -1:]).clamp(max=sorted_probs.shape[-1] - 1)
    return pick.squeeze(-1), (~dropped).sum(-1)


def matched(row: list[int], kept: RowKV | None, shared: int, keep: int) -> int:
    """How many of `row`'s tokens after the shared prefix `kept` already holds keys for."""
    if kept is None or kept.start > shared:  # it lacks keys between the prefix and its start
        return 0
    limit = min(len(row) - keep, len(kept.tokens))  # the last `keep` tokens give logits
    if limit <= shared or row[:shared] != kept.tokens[:shared]:
        return 0
    n = shared
    while n < limit and row[n] == kept.tokens[n]:
        n += 1
    return n - shared


def prefill(
    model,
    rows: list[list[int]],
    cache,
    pad_id: int,
    keep: int = 1,
    past: list[RowKV | None] | None = None,
    cascade: bool = False,
    room: int = 0,
):
    """Run the prompts `rows` through `model` into `cache`; returns (logits, mask, positions,
    shared prefix length, tokens reused per row, the prefix's keys and values or None).
    `room`: tokens the caller will append after the prompts (kept rows' buffers get it).

    With `cascade` (the model switched by `use_cascade`), the prefix's keys and values are
    returned once for the batch ([kv heads, S, head dim] per layer) instead of copied into
    every row of `cache`, which then holds only the rows' own keys; pass them to every later
    forward as `prefix_kv`, with the mask's own columns (`mask[:, shared:]`).

    A common prefix of at least MIN_SHARED_PREFIX tokens is computed once and copied into
    every row. A row with keys kept from an earlier call (`past[i]`, whose tokens it starts
    with) gets them copied in next, and only its remaining tokens are computed. Rows are laid
    out [prefix | padding | kept | padding | own tokens]; the mask hides the padding, and
    each key was rotated at its own position, so attention sees exactly the row. Row i's last
    `keep` logits are `logits[i, -keep:]`; `mask` and `positions` cover the whole layout.
    """
    device = next(model.parameters()).device
    key = _cache_kwarg(model)
    size = len(rows)
    shared = common_prefix(rows) if size > 1 else 0
    shared = shared if shared >= MIN_SHARED_PREFIX else 0
    shared = min(shared, min(len(r) for r in rows) - keep)  # each row keeps `keep` own tokens
    shared = max(shared, 0)
    if past and any(p is not None for p in past):
        # a kept row starts after its own batch's prefix: keep the prefix within every start
        starts = [p.start for p in past if p is not None and p.start <= shared]
        shared = min(starts) if starts else shared
    reused = [matched(r, p, shared, keep) for r, p in zip(rows, past, strict=True)] if past else []
    prefix_kv = None
    if shared > 0:
        prefix = torch.tensor([rows[0][:shared]], device=device)
        once = Cache(layer_class_to_replicate=GrowingLayer) if cascade else cache
        model(
            input_ids=prefix,
            position_ids=torch.arange(shared, device=device)[None],
            use_cache=True,
            logits_to_keep=1,
            **{key: once},
        )
        if cascade:
            prefix_kv = [
                (layer.keys[0].contiguous(), layer.values[0].contiguous()) for layer in once.layers
            ]
        else:
            for layer in cache.layers:
                layer.expand_batch(size)
    held = max(reused, default=0)
    tails = [r[shared + (reused[i] if reused else 0) :] for i, r in enumerate(rows)]
    width = max(len(t) for t in tails)
    if held:
        _copy_kept(cache, past, reused, shared, held, size, width + room)
    front = shared + held
    ids = torch.full((size, width), pad_id, dtype=torch.long)
    mask = torch.zeros((size, front + width), dtype=torch.long)
    mask[:, :shared] = 1
    for i, t in enumerate(tails):
        if held and reused[i]:
            mask[i, front - reused[i] : front] = 1
        ids[i, width - len(t) :] = torch.tensor(t, dtype=torch.long)
        mask[i, front + width - len(t) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, front:]
    extra = {"prefix_kv": prefix_kv} if prefix_kv is not None else {}
    logits = model(
        input_ids=ids,
        attention_mask=mask[:, shared:] if prefix_kv is not None else mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=keep,
        **{key: cache},
        **extra,
    ).logits
    return logits, mask, positions, shared, reused or [0] * size, prefix_kv


def _copy_kept(cache, past, reused, shared, held, size, room: int) -> None:
    """Append each row's kept keys and values (right-aligned in `held` slots, zeros before
    them) to `cache`. Into an empty cache they are written straight into each layer's buffer,
    with `room` more slots, instead of staged in a tensor and copied again."""
    first = next(p for p, n in zip(past, reused, strict=True) if n)
    for index, (k0, _) in enumerate(first.layers):
        fresh = index >= len(cache.layers)
        shape = (size, k0.shape[0], held + (room if fresh else 0), k0.shape[-1])
        keys = torch.empty(shape, dtype=k0.dtype, device=k0.device)
        values = torch.empty(shape, dtype=k0.dtype, device=k0.device)
        for i, (p, n) in enumerate(zip(past, reused, strict=True)):
            if n < held:  # padding: masked, but must be finite
                keys[i, :, : held - n] = 0
                values[i, :, : held - n] = 0
            if n:
                lo = shared - p.start
                k, v = p.layers[index]
                keys[i, :, held - n : held] = k[:, lo : lo + n]
                values[i, :, held - n : held] = v[:, lo : lo + n]
        if fresh:
            layer = GrowingLayer()
            layer.adopt(keys, values, held)
            cache.layers.append(layer)
        else:
            cache.update(keys, values, index)


def branch_prefill(
    model,
    rows: list[list[int]],
    sizes: list[int],
    cache,
    pad_id: int,
    keep: int = 1,
    cascade: bool = False,
):
    """`prefill` for rows that come in groups sharing more than the batch's common prefix
    (a pair's two orders share its conversation and question; only the options differ).

    `sizes` splits `rows` into consecutive groups. Each group's common part is computed once,
    in one batch of a row per group (the batch's common prefix once, as `prefill` does); its
    keys are then copied to each of the group's rows and only the rows' own tails are
    computed. Rows are laid out [prefix | padding | group part | padding | own tail], and
    every key was rotated at its own position, so attention sees exactly the row. Returns
    (logits, mask, positions of the tails, shared prefix length, prefix keys or None) as
    `prefill` does; falls back to it when no group shares anything beyond the prefix.
    """
    device = next(model.parameters()).device
    key = _cache_kwarg(model)
    heads, tails, index = [], [], []
    at = 0
    for g, n in enumerate(sizes):
        members = rows[at : at + n]
        at += n
        h = common_prefix(members) if n > 1 else len(members[0])
        h = min(h, min(len(r) for r in members) - keep)  # each row keeps `keep` own tokens
        heads.append(members[0][:h])
        tails += [r[h:] for r in members]
        index += [g] * n
    if at != len(rows):
        raise ValueError(f"group sizes {sizes} do not add up to {len(rows)} rows")
    batch_shared = common_prefix(rows) if len(rows) > 1 else 0
    if len(sizes) == len(rows) or min(len(h) for h in heads) <= batch_shared:
        logits, mask, positions, shared, _, prefix_kv = prefill(
            model, rows, cache, pad_id, keep=keep, cascade=cascade
        )
        return logits, mask, positions, shared, prefix_kv
    _, head_mask, _, shared, _, prefix_kv = prefill(
        model, heads, cache, pad_id, keep=1, cascade=cascade
    )
    select = torch.tensor(index, device=device)
    for layer in cache.layers:
        layer.batch_select_indices(select)
    width = max(len(t) for t in tails)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    own = torch.zeros((len(rows), width), dtype=head_mask.dtype)
    for i, t in enumerate(tails):
        ids[i, width - len(t) :] = torch.tensor(t, dtype=torch.long)
        own[i, width - len(t) :] = 1
    mask = torch.cat([head_mask[select], own.to(device)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, head_mask.shape[1] :]
    extra = {"prefix_kv": prefix_kv} if prefix_kv is not None else {}
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask[:, shared:] if prefix_kv is not None else mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=keep,
        **{key: cache},
        **extra,
    ).logits
    return logits, mask, positions, shared, prefix_kv


def choice_logprobs(
    model,
    rows: list[list[int]],
    choices: list[list[int]],
    pad_id: int,
    sizes: list[int] | None = None,
    cascade: bool = False,
) -> list[list[float]]:
    """Total log-probability of each choice (token ids) after each prompt row, exactly.

    Choices usually share leading tokens (" (" in " (A)" and " (B)"). The prompts plus that
    common part go through the model once, with a cache; the logits at the end give each
    choice's first own token. Choices longer than one own token continue from a copy of the
    cache, a few tokens per row, so a pair costs about one prompt pass, not one per choice.
    With `sizes`, consecutive rows come in groups whose shared part is computed once per
    group (`branch_prefill`); with `cascade`, the batch's common prefix is held once.
    """
    k = len(choices)
    common = common_prefix(choices) if k > 1 else len(choices[0]) - 1
    common = min(common, min(len(c) for c in choices) - 1)  # each choice keeps an own token
    head = choices[0][:common]
    tails = [c[common:] for c in choices]
    device = next(model.parameters()).device
    key = _cache_kwarg(model)
    size = len(rows)
    cache = Cache(layer_class_to_replicate=GrowingLayer)
    with torch.inference_mode():
        logits, mask, positions, shared, prefix_kv = branch_prefill(
            model,
            [r + head for r in rows],
            sizes or [1] * size,
            cache,
            pad_id,
            keep=common + 1,
            cascade=cascade,
        )
        extra = {"prefix_kv": prefix_kv} if prefix_kv is not None else {}
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # [size, common + 1, vocab]
        base = torch.zeros(size, device=device)
        if common:
            target = torch.tensor(head, device=device)[None, :, None].expand(size, -1, -1)
            base = logprobs[:, :common].gather(-1, target).squeeze(-1).sum(-1)
        last = logprobs[:, -1]  # predicts each choice's first own token
        out = torch.stack([base + last[:, t[0]] for t in tails], dim=1)  # [size, k]
        longest = max(len(t) for t in tails)
        if longest > 1:
            # rows x choices, each fed its own tokens but the last, after the shared cache.
            index = torch.arange(size, device=device).repeat_interleave(k)
            for layer in cache.layers:
                layer.batch_select_indices(index)
            width = longest - 1
            ids = torch.full((size * k, width), pad_id, dtype=torch.long)
            for j, t in enumerate(tails):
                if len(t) > 1:
                    ids[j::k, : len(t) - 1] = torch.tensor(t[:-1], dtype=torch.long)
            ids = ids.to(device)
            mask2 = torch.cat(
                [mask[index], torch.ones((size * k, width), dtype=mask.dtype, device=device)], 1
            )
            pos2 = positions[index, -1:] + torch.arange(1, width + 1, device=device)[None]
            more = model(
                input_ids=ids,
                attention_mask=mask2[:, shared:] if prefix_kv is not None else mask2,
                position_ids=pos2,
                use_cache=True,
                **{key: cache},
                **extra,
            ).logits.float()
            more = torch.log_softmax(more, dim=-1)  # [size * k, width, vocab]
            for j, t in enumerate(tails):
                for step, tok in enumerate(t[1:]):
                    out[:, j] += more[j::k, step, tok]
    return out.tolist()


def decode(
    model,
    rows: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seeds: list[int],
    eos_ids: set[int],
    pad_id: int,
    stop_check: Callable[[list[int]], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
    past: list[RowKV | None] | None = None,
    keep_kv: bool = False,
) -> list[Decoded]:
    """Generate for a batch of prompt token lists. `seeds[i]` seeds row i's sampling.

    `stop_check(tokens)` is called with a row's generated tokens after each step and returns
    True when a stop string has appeared. `past[i]`, when given, holds keys and values of an
    earlier row that row i starts with (only the rest is prefilled); with `keep_kv` each
    finished row returns its own (`Decoded.kv`) for a later call to continue from.
    """
    device = next(model.parameters()).device
    key = _cache_kwarg(model)
    size = len(rows)
    cache = Cache(layer_class_to_replicate=GrowingLayer)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    out: list[list[int]] = [[] for _ in range(size)]
    finish = ["length"] * size
    kept: list[RowKV | None] = [None] * size
    ended: dict[int, int] = {}  # row -> the cache width when it finished (later columns: junk)

    def save(rows_at: list[tuple[int, int]]) -> None:
        """Copy out the keys and values of finished rows (original index, batch row)."""
        for a, j in rows_at:
            if finish[a] == "cancelled" or a not in ended:
                continue
            own = mask[j, shared : ended[a]].nonzero().squeeze(-1) + shared
            tokens = rows[a] + out[a][:-1]  # the last token was sampled, never fed
            if len(tokens) - shared != own.numel():  # not the row it claims: keep nothing
                continue
            at = own - cut
            layers = [(layer.keys[j][:, at], layer.values[j][:, at]) for layer in cache.layers]
            kept[a] = RowKV(tokens, shared, layers)

    # 1) the shared prefix, once; kept keys; then each row's own tokens after padding.
    with torch.inference_mode():
        logits, mask, positions, shared, reused, prefix_kv = prefill(
            model, rows, cache, pad_id, past=past, cascade=use_cascade(model), room=max_new_tokens
        )
        extra = {"prefix_kv": prefix_kv} if prefix_kv is not None else {}
        cut = shared if prefix_kv is not None else 0  # the cache's first column is the mask's
        logits = logits[:, -1]
        batch = list(range(size))  # original row index of each batch row
        done = [False] * size
        last_pos = positions[:, -1:]

        # 2) decode until every row has stopped.
        for step in range(max_new_tokens):
            if should_stop and should_stop():
                for a in batch:
                    if not done[a]:
                        finish[a] = "cancelled"
                break
            nxt = sample(logits, temperature, top_p, [generators[a] for a in batch])
            for j, a in enumerate(batch):
                if done[a]:
                    continue  # finished earlier, still in the batch until the next compaction
                tok = int(nxt[j])
                out[a].append(tok)
                if tok in eos_ids or (stop_check and stop_check(out[a])):
                    finish[a], done[a] = "stop", True
                    ended[a] = mask.shape[1]
            live = [j for j, a in enumerate(batch) if not done[a]]
            if not live or step == max_new_tokens - 1:
                break
            finished, remaining = len(batch) - len(live), max_new_tokens - 1 - step
            # dropping rows copies every live row's keys once (read and write); it pays when
            # the finished rows would otherwise be read for enough of the remaining steps
            if finished * COMPACT_FRACTION >= len(batch) and finished * remaining >= 2 * len(live):
                if keep_kv:
                    save([(a, j) for j, a in enumerate(batch) if done[a]])
                index = torch.tensor(live, device=device)
                for layer in cache.layers:
                    layer.keep_rows(index, remaining)
                mask, last_pos, nxt = mask[index], last_pos[index], nxt[index]
                batch = [batch[j] for j in live]
            mask = torch.cat(
                [mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], dim=1
            )
            last_pos = last_pos + 1
            logits = model(
                input_ids=nxt[:, None],
                attention_mask=mask[:, cut:],
                position_ids=last_pos,
                use_cache=True,
                **{key: cache},
                **extra,
            ).logits[:, -1]
        if keep_kv:
            for a in batch:
                ended.setdefault(a, mask.shape[1])  # stopped at the token limit
            save(list((a, j) for j, a in enumerate(batch)))
    return [
        Decoded(out[i], finish[i], kept[i], reused[i], len(rows[i]) - shared - reused[i])
        for i in range(size)
    ]
