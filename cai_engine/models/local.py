"""The `local` backend: a transformers model in this process, batched for throughput.

How it gets its speed on a CPU (numbers in bench/generation.py):
1. bf16 weights where a measured bf16 matmul beats fp32 (about 6x with AMX);
2. batches sorted by prompt length, so little padding is computed;
3. left padding, so every row of a batch decodes in step;
4. scoring keeps only the logits it needs (`logits_to_keep`), never a full vocab x length tensor.

Each conversation samples from its own generator, seeded by the call's seed and the
conversation's content, so the same conversation and seed give the same text in any batch
and after a resume. Decoding is our own loop
(`decode.py`): it shares prompt prefixes and beats `generate` on a CPU.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from cai_engine.home import models_dir
from cai_engine.models.base import (
    ChatModel,
    Completion,
    ContextOverflowError,
    Conversation,
    ModelError,
    ModelInfo,
    SamplingParams,
    is_prefill,
)
from cai_engine.models.embedded import ensure_embedded
from cai_engine.models.spec import ModelSpec

CPU_BATCH = 64  # measured best on 2 cores for a 135M model (bench/generation.py)
GPU_BATCH = 128
TOKEN_BUDGET = {"cpu": 48 * 1024, "cuda": 512 * 1024}  # padded tokens per batch
KV_BUDGET = 2 * 1024**3  # bytes of rows' keys and values kept between calls (`cache_keys`)


def row_seed(seed: int, conversation: Conversation) -> int:
    """A conversation's own sampling seed, from the call's seed and its content: the same
    conversation and seed give the same text in any batch, at any position, after a resume."""
    key = f"{seed}:" + json.dumps(conversation, sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matmul instructions (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@functools.cache
def bf16_speedup() -> float:
    """How much faster a bf16 matmul runs than fp32 on this CPU (measured once per process).

    The two are timed in alternation and each keeps its best time, so a burst of load from
    other processes hits both rather than skewing the ratio.
    """
    import torch

    a32, b32 = torch.randn(384, 384), torch.randn(384, 384)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def once(a, b):
        t = time.perf_counter()
        for _ in range(8):
            a @ b
        return time.perf_counter() - t

    once(a16, b16)  # warm up both kernels
    once(a32, b32)
    best16 = best32 = float("inf")
    for _ in range(7):
        best16 = min(best16, once(a16, b16))
        best32 = min(best32, once(a32, b32))
    return best32 / max(best16, 1e-9)


NATIVE_BF16_FLOOR = 0.7  # with native bf16, keep it unless it measures clearly slower (noise)


def choose_cpu_dtype() -> tuple[str, str]:
    """bf16 where the CPU has bf16 instructions and bf16 does not measure clearly slower, or
    where it measures clearly faster; otherwise fp32. Returns (dtype name, reason)."""
    speedup = bf16_speedup()
    native = cpu_has_bf16()
    if (native and speedup >= NATIVE_BF16_FLOOR) or speedup >= 1.5:
        return "bfloat16", f"bf16 matmul measured {speedup:.1f}x fp32" + (
            " (native bf16)" if native else ""
        )
    return "float32", f"bf16 matmul measured {speedup:.1f}x fp32"


def resolve_local_path(spec: ModelSpec, home: Path) -> str:

    if spec.kind == "embedded":
        return str(ensure_embedded(home))
    if spec.kind == "trained":
        path = models_dir(home) / spec.model
        if not (path / "config.json").exists():
            known = sorted(
                p.name for p in models_dir(home).glob("*") if (p / "config.json").exists()
            )
            raise ModelError(
                f"no trained model named '{spec.model}' under {models_dir(home)}; known: {', '.join(known) or 'none'}"
            )
        return str(path)
    return spec.model


def model_fingerprint(spec: ModelSpec, home: Path) -> str:
    """What a spec points at right now: for a local folder, its weights' names, sizes and
    modification times, so a model retrained under the same name gets a new fingerprint."""
    if spec.kind == "openai":
        key = f"{spec.base_url}|{spec.model}"
    else:
        path = Path(resolve_local_path(spec, home))
        if path.is_dir():
            files = sorted(
                f
                for f in path.iterdir()
                if f.suffix in (".json", ".safetensors", ".bin", ".gguf") and f.is_file()
            )
            key = "|".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
        else:
            key = spec.model  # a hub id: its cache is what it is
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def check_model_available(spec: ModelSpec, home: Path) -> None:
    """Raise a ModelError that names the model when a local model is not on disk (anymore)."""
    if spec.kind in ("embedded", "openai"):
        return
    path = resolve_local_path(spec, home)  # names the known trained models when one is missing
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if looks_local and not (Path(path).expanduser() / "config.json").exists():
        raise ModelError(f"model {spec} is not on disk: {path} has no config.json")


class LocalModel(ChatModel):
    reuses_cache = True  # `chat` takes `cache_keys`: a growing conversation continues its cache

    def __init__(self, spec: ModelSpec, home: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # job logs get lines, not progress-bar redraws
        self.spec = spec
        path = resolve_local_path(spec, home)
        if spec.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            self.device = spec.device
        self.dtype_reason = ""
        if spec.dtype != "auto":
            dtype = getattr(torch, spec.dtype)
            self.dtype_reason = "as configured"
        elif self.device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            self.dtype_reason = "GPU default"
        else:
            name, self.dtype_reason = choose_cpu_dtype()
            dtype = getattr(torch, name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                path, padding_side="left", trust_remote_code=spec.trust_remote_code
            )
            self.model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, trust_remote_code=spec.trust_remote_code
            ).to(self.device)
        except OSError as e:
            where = (
                "folder"
                if Path(path).exists()
                else "Hugging Face id (not cached; is the hub reachable?)"
            )
            raise ModelError(f"cannot load model '{spec}' as a {where}: {e}") from None
        self.model.eval()
        self.dtype = dtype
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not self.tokenizer.chat_template:
            raise ModelError(f"model '{spec}' has no chat template; chat models need one")
        cfg = self.model.config
        self.max_context = spec.max_context or getattr(cfg, "max_position_embeddings", None) or 2048
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids = set(eos) | (
            {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        )
        self.kv = None  # PrefixCache, made by the first call with cache_keys
        # a batch's shared prefix is held once, not per row (decode.cascade_attention): the
        # batch size then counts only each row's own tokens
        from cai_engine.models.decode import use_cascade

        self.cascade = use_cascade(self.model)

    def drop_cache(self) -> dict | None:
        """Forget every kept row (a caller is done with its conversations); returns the
        cache's counts (hits, misses, tokens reused) so far, or None if nothing was kept."""
        if self.kv is None:
            return None
        self.kv.clear()
        return self.kv.stats()

    # -- helpers ----------------------------------------------------------------------------

    def render(self, conversation: Conversation) -> list[int]:
        """Token ids of the conversation with the assistant generation prompt; a conversation
        that ends with an assistant turn is a prefill, and the model continues that turn."""
        prefill = is_prefill(conversation)
        out = self.tokenizer.apply_chat_template(
            conversation,
            add_generation_prompt=not prefill,
            continue_final_message=prefill,
            tokenize=True,
        )
        if hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)

    @property
    def context_length(self) -> int:
        return self.max_context

    def count_tokens(self, conversation: Conversation) -> int:
        return len(self.render(conversation))

    def _prompt_ids(self, prompt: str | Conversation) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        return self.render(prompt)

    def batch_size_for(self, longest: int) -> int:
        if self.spec.batch_size != "auto":
            return int(self.spec.batch_size)
        cap = CPU_BATCH if self.device == "cpu" else GPU_BATCH
        budget = TOKEN_BUDGET["cpu" if self.device == "cpu" else "cuda"]
        return max(1, min(cap, budget // max(1, longest)))

    def _fit(self, ids: list[int], room: int) -> tuple[list[int], int]:
        """Left-truncate `ids` to `room` tokens, or raise when truncation is 'error'."""
        if len(ids) <= room:
            return ids, 0
        if self.spec.truncation == "error":
            raise ContextOverflowError(
                f"a prompt of {len(ids)} tokens does not fit the {self.max_context}-token context "
                f"(room for {room}); shorten it or use truncation=left"
            )
        return ids[len(ids) - room :], len(ids) - room

    def _batch(self, rows: list[list[int]]):
        """Left-padded tensors for `rows`, with position ids that ignore the padding."""
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- chat -------------------------------------------------------------------------------

    def chat(
        self,
        conversations: list[Conversation],
        sampling: SamplingParams | None = None,
        *,
        should_stop: Callable[[], bool] | None = None,
        on_batch: Callable[[list[int], list[Completion]], None] | None = None,
        cache_keys: list | None = None,
        keep_cache: bool = True,
    ) -> list[Completion]:
        """As `ChatModel.chat`. With `cache_keys` (one hashable per conversation, e.g. a
        trace), a conversation continues from the keys and values kept for its key by an
        earlier call, when it starts with that call's prompt and answer, and (with
        `keep_cache`) keeps its own for the next call, within `KV_BUDGET` bytes."""
        from cai_engine.models.decode import PrefixCache, common_prefix, decode

        sampling = sampling or SamplingParams()
        if cache_keys is not None and self.kv is None:
            self.kv = PrefixCache(KV_BUDGET)
        room = self.max_context - sampling.max_new_tokens
        if room < 1:
            raise ContextOverflowError(
                f"max_new_tokens={sampling.max_new_tokens} leaves no room in the {self.max_context}-token context"
            )
        prompts, dropped = [], []
        for conv in conversations:
            ids, cut = self._fit(self.render(conv), room)
            prompts.append(ids)
            dropped.append(cut)
        order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
        results: list[Completion | None] = [None] * len(prompts)
        stop_check = self._stop_check(sampling.stop) if sampling.stop else None
        # what every prompt shares (the few-shots) is held once per batch with the cascade
        shared = common_prefix(prompts) if self.cascade and len(prompts) > 1 else 0
        start = 0
        while start < len(order):
            own = len(prompts[order[start]]) - shared
            size = self.batch_size_for(own + sampling.max_new_tokens)
            idx = order[start : start + size]
            start += size
            if should_stop and should_stop():
                break
            past = [self.kv.take(cache_keys[i]) for i in idx] if cache_keys is not None else None
            t0 = time.perf_counter()
            decoded = decode(
                self.model,
                [prompts[i] for i in idx],
                max_new_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                seeds=[row_seed(sampling.seed, conversations[i]) for i in idx],
                eos_ids=self.eos_ids,
                pad_id=self.tokenizer.pad_token_id,
                stop_check=stop_check,
                should_stop=should_stop,
                past=past,
                keep_kv=cache_keys is not None and keep_cache,
            )
            latency = time.perf_counter() - t0
            if cache_keys is not None:
                self._keep(idx, past, decoded, cache_keys)
            done = []
            for i, d in zip(idx, decoded, strict=True):
                results[i] = self._completion(d, len(prompts[i]), sampling, latency, dropped[i])
                done.append(results[i])
            if on_batch:
                on_batch(list(idx), done)
        for i, r in enumerate(results):
            if r is None:  # stopped before its batch ran
                results[i] = Completion("", len(prompts[i]), 0, "cancelled", 0.0, dropped[i])
        return results  # type: ignore[return-value]

    def _keep(self, idx, past, decoded, cache_keys) -> None:
        """Count what kept rows saved, and keep the new ones."""
        for i, p, d in zip(idx, past, decoded, strict=True):
            if p is not None:  # a row with nothing kept is a miss only if the budget refused it
                self.kv.hits += bool(d.reused)
                self.kv.misses += not d.reused
            self.kv.reused_tokens += d.reused
            self.kv.prefilled_tokens += d.prefilled
            if d.kv is not None:
                self.kv.put(cache_keys[i], d.kv)

    def _stop_check(self, stops: list[str]):
        """True once any stop string appears in the last few decoded tokens of a row."""
        window = max(len(s) for s in stops) + 8  # tokens: each decodes to at least one char

        def check(tokens: list[int]) -> bool:
            tail = self.tokenizer.decode(tokens[-window:], skip_special_tokens=True)
            return any(s in tail for s in stops)

        return check

    def _completion(self, d, prompt_tokens, sampling, latency, dropped) -> Completion:
        tokens, finish = d.tokens, d.finish
        n = len(tokens)
        if tokens and tokens[-1] in self.eos_ids:
            n -= 1  # the end-of-sequence token is counted, not shown
        text = self.tokenizer.decode(tokens[:n], skip_special_tokens=True)
        for stop in sampling.stop:
            cut = text.find(stop)
            if cut != -1:
                text, finish = text[:cut], "stop"
        return Completion(text, prompt_tokens, len(tokens), finish, latency, dropped)

    # -- score ------------------------------------------------------------------------------

    def score(self, prompts: list[str | Conversation], continuations: list[str]) -> list[float]:
        import torch

        if len(prompts) != len(continuations):
            raise ValueError("score needs one continuation per prompt")
        rows, cont_lens = [], []
        for prompt, cont in zip(prompts, continuations, strict=True):
            c = self.tokenizer(cont, add_special_tokens=False)["input_ids"]
            if not c:
                raise ModelError(f"the continuation {cont!r} has no tokens")
            p, _ = self._fit(self._prompt_ids(prompt), self.max_context - len(c))
            if not p:
                raise ModelError(
                    f"the prompt {prompt!r} has no tokens; score needs a non-empty prompt"
                )
            rows.append(p + c)
            cont_lens.append(len(c))
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
        scores = [0.0] * len(rows)
        start = 0
        while start < len(order):
            size = self.batch_size_for(len(rows[order[start]]))
            idx = order[start : start + size]
            start += size
            ids, mask = self._batch([rows[i] for i in idx])
            keep = max(cont_lens[i] for i in idx) + 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
                ).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)  # [batch, keep, vocab]
            for row, i in enumerate(idx):
                n = cont_lens[i]
                targets = ids[row, -n:]
                # logits at position t predict token t+1: the last `n` targets are predicted by
                # the `n` positions before the final one.
                lp = (
                    logprobs[row, keep - n - 1 : keep - 1]
                    .gather(-1, targets.unsqueeze(-1))
                    .squeeze(-1)
                )
                scores[i] = float(lp.sum())
        return scores

    def score_choices(
        self, prompts: list[str | Conversation], choices: list[str]
    ) -> list[list[float]]:
        """One prompt pass per prompt for all choices (see `decode.choice_logprobs`).

        Consecutive prompts that share more than every prompt does (a pair's two orders)
        are scored in one batch with their shared part computed once; with the cascade, what
        every prompt shares (the few-shots) is held once per batch."""
        from cai_engine.models.decode import MIN_SHARED_PREFIX, choice_logprobs, common_prefix

        tokens = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        for c, t in zip(choices, tokens, strict=True):
            if not t:
                raise ModelError(f"the choice {c!r} has no tokens")
        longest = max(len(t) for t in tokens)
        rows = []
        for prompt in prompts:
            ids, _ = self._fit(self._prompt_ids(prompt), self.max_context - longest)
            if not ids:
                raise ModelError(f"the prompt {prompt!r} has no tokens; scoring needs one")
            rows.append(ids)
        every = common_prefix(rows) if len(rows) > 1 else 0
        groups: list[list[int]] = []
        for i, r in enumerate(rows):
            # a row joins the group before it when it shares more than every prompt does
            # with the group, and no less than with the row after it
            with_group = common_prefix([rows[groups[-1][0]], r]) if groups else 0
            with_next = common_prefix([r, rows[i + 1]]) if i + 1 < len(rows) else 0
            if with_group >= max(every + MIN_SHARED_PREFIX, with_next):
                groups[-1].append(i)
            else:
                groups.append([i])
        groups.sort(key=lambda g: (-max(len(rows[i]) for i in g), g[0]))  # longest first
        held = every if self.cascade else 0
        out: list[list[float]] = [[] for _ in rows]
        start = 0
        while start < len(groups):
            first = max(len(rows[i]) for i in groups[start])
            size = self.batch_size_for(first - held + longest)
            batch = [groups[start]]
            start += 1
            while start < len(groups) and sum(map(len, batch)) + len(groups[start]) <= size:
                batch.append(groups[start])
                start += 1
            idx = [i for g in batch for i in g]
            scored = choice_logprobs(
                self.model,
                [rows[i] for i in idx],
                tokens,
                self.tokenizer.pad_token_id,
                sizes=[len(g) for g in batch],
                cascade=self.cascade,
            )
            for i, s in zip(idx, scored, strict=True):
                out[i] = s
        return out

    def info(self) -> ModelInfo:
        return ModelInfo(
            spec=str(self.spec),
            backend="local",
            details={
                "device": self.device,
                "dtype": str(self.dtype).removeprefix("torch."),
                "dtype_reason": self.dtype_reason,
                "context": self.max_context,
                "parameters": self.model.num_parameters(),
                "batch_size": self.spec.batch_size,
            },
        )
