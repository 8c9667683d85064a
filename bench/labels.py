"""Benchmark: AI preference labels by batched log-probs against a generate-and-parse judge.

Workload: 64 pairs (two sampled answers each to 64 red-team prompts, 96 new tokens, T=1)
from the embedded model, labelled with the `harmless` constitution, 2 labelled few-shot
comparisons, both orders. Measured in one run, in this process:
1. ours: `labels.label_pairs`: one batched forward pass per order for every pair, the
   soft label read from the log-probabilities of " (A)" and " (B)";
2. baseline: the judge a user writes first, one pair (and order) at a time: the same
   question as the user turn (ending "The answer is:"), HF `generate` in fp32, greedy, up to
   16 new tokens, and the first "(A)" or "(B)" (else a bare A or B) in the text is the answer;
3. for reference, a lean generate-and-parse judge on our model object (bf16, our decode
   loop, "The answer is:" as an assistant prefill, 4 new tokens), still one pair at a time:
   the best a one-at-a-time generating judge does here, so it shows what batching and
   scoring add by themselves.
Both generating judges score both orders too, so every method gives the same information.
Prints labels/s, the ratios, and how often the methods pick the same response.

    .venv/bin/python bench/labels.py [--pairs 64] [--baseline-pairs 24]
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

from bench.machine import add_model_args, describe, describe_model, model_dir, model_spec  # noqa: E402

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


def hf_generate_judge(path: str, conversations: list) -> list[str | None]:
    """The first judge a user writes: the whole question (ending "The answer is:") as the user
    turn, `generate` in fp32, greedy, and parse the letter out of the reply."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    answers = []
    for conv in conversations:
        *turns, question, prefill = conv
        asked = [
            *turns,
            {"role": "user", "content": f"{question['content']}\n{prefill['content']}"},
        ]
        enc = tok.apply_chat_template(
            asked, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id
            )
        answers.append(parse(tok.decode(out[0, enc["input_ids"].shape[1] :])))
    return answers


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--baseline-pairs", type=int, default=24)
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
    print(f"model: {model.info().details}")

    t = time.perf_counter()
    pairs = make_pairs(store, model, args.pairs)[: args.pairs]
    print(f"made {len(pairs)} pairs in {time.perf_counter() - t:.1f}s")

    labels.label_pairs(pairs[:2], version.constitution, version.hash, model, config)  # warm-up
    t = time.perf_counter()
    ours = labels.label_pairs(pairs, version.constitution, version.hash, model, config)
    ours_s = time.perf_counter() - t
    ours_rate = len(ours) / ours_s
    consistent = sum(bool(r["consistent"]) for r in ours) / len(ours)
    print(
        f"ours:     {len(ours)} labels (both orders) in {ours_s:.1f}s = {ours_rate:.2f} labels/s; "
        f"position-consistent {consistent:.0%}"
    )

    subset = pairs[: args.baseline_pairs]
    conversations = baseline_questions(subset, version.constitution, config)
    t = time.perf_counter()
    hf_answers = hf_generate_judge(path, conversations)
    hf_s = time.perf_counter() - t
    hf_rate = len(subset) / hf_s
    print(
        f"baseline: {len(subset)} labels (both orders, HF generate fp32, one at a time) in "
        f"{hf_s:.1f}s = {hf_rate:.2f} labels/s"
    )
    t = time.perf_counter()
    lean_answers = our_generate_judge(model, conversations)
    gen_s = time.perf_counter() - t
    gen_rate = len(subset) / gen_s
    print(
        f"reference: lean generate-and-parse (bf16, prefill, 4 tokens), one at a time: "
        f"{gen_rate:.2f} labels/s"
    )

    ratio = ours_rate / hf_rate
    print(f"\nratio (ours / baseline): {ratio:.1f}x  [target >= 10x]")
    print(f"ratio (ours / generate-and-parse on our model): {ours_rate / gen_rate:.1f}x")

    for name, answers in (("baseline", hf_answers), ("lean", lean_answers)):
        agreement(name, ours, answers)
    first = sum(r["p_a_ab"] > 0.5 for r in ours) + sum(r["p_a_ba"] < 0.5 for r in ours)
    print(f"ours: the first-shown response won {first / (2 * len(ours)):.0%} of orders")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MB")


if __name__ == "__main__":
    main()
