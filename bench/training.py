"""Benchmark: SFT and DPO training with our defaults against TRL's fp32 defaults on the CPU.

Workload: the embedded SmolLM2-135M, 64 examples made from the bundled `helpful` prompts with
the model's own answers (SFT: prompt → answer; DPO: two sampled answers, the first chosen),
batch 4 x 2 accumulation, the same steps and seed for both variants. Measured in one run,
each variant in its own child process (so peak RSS is its own):
1. ours: what `cai train` does: bf16 autocast where a bf16 matmul measures faster (fp32
   master weights), `max_length` sized to the data, batches grouped by length, and (DPO) the
   reference log-probs computed once up front, in bf16 too;
2. TRL defaults: `bf16=False, use_cpu=True`, `max_length` 1024, and the reference model run
   beside the policy at every step.
Prints tokens/s, the ratio, the final losses (target: within 2%), and peak RSS.

    .venv/bin/python bench/training.py [--steps 16] [--kinds sft,dpo]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import add_model_args, describe, describe_model, model_dir, model_spec  # noqa: E402


def make_data(
    home: Path, n: int, new_tokens: int, which: tuple, pairs: bool = True
) -> tuple[list[dict], list[dict]]:
    """SFT examples from one sampled answer per prompt; with `pairs`, DPO pairs from a second."""
    from cai_engine.bundled import install_bundled
    from cai_engine.models import SamplingParams, load_model
    from cai_engine.store import Store

    store = Store(home)
    install_bundled(store)
    prompts = store.get_prompts("helpful")[:n]
    model = load_model(model_spec(home, *which), home)
    answers = [
        model.chat(
            [p.messages for p in prompts],
            SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=k),
        )
        for k in range(2 if pairs else 1)
    ]
    sft = [
        {"prompt": p.messages, "completion": [{"role": "assistant", "content": a.text}]}
        for p, a in zip(prompts, answers[0], strict=True)
    ]
    prefs = [
        {
            "prompt": p.messages,
            "chosen": [{"role": "assistant", "content": a.text}],
            "rejected": [{"role": "assistant", "content": b.text}],
            "score": 1.0,
            "label_source": "ai",
        }
        for p, a, b in zip(prompts, answers[0], answers[-1], strict=True)
        if pairs
    ]
    return sft, prefs


def child(kind: str, variant: str, data_path: str, home: str, steps: int, which: tuple) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer

    from cai_engine.training import trainers
    from cai_engine.training.kinds import TRAINING_KINDS
    from cai_engine.training.run import _length_for, decide_precision

    base = str(model_dir(home, *which))
    rows = json.loads(Path(data_path).read_text())
    tokenizer = AutoTokenizer.from_pretrained(base)
    ours = variant == "ours"
    config = (
        TRAINING_KINDS[kind].config(data=data_path, soft_labels=ours)
        if kind == "dpo"
        else TRAINING_KINDS[kind].config(data=data_path)
    )
    bf16 = decide_precision("auto")[0] if ours else False
    common = {
        "output_dir": tempfile.mkdtemp(prefix="bench-train-"),
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": config.learning_rate,
        "max_steps": steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "disable_tqdm": True,
        "bf16": bf16,
        "use_cpu": True,
        "dataloader_num_workers": 0,
    }
    max_length = _length_for(tokenizer, rows, kind) if ours else 1024
    trainer = trainers.build(
        kind,
        config,
        base_path=base,
        tokenizer=tokenizer,
        train=Dataset.from_list(rows),
        evals=None,
        common=common,
        max_length=max_length,
        peft_config=None,
        home=Path(home),
    )
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens = trainer.state.num_input_tokens_seen or sum(
        h.get("num_tokens", 0) for h in trainer.state.log_history[-1:]
    )
    return {
        "seconds": seconds,
        "tokens": int(trainer._total_train_tokens)
        if hasattr(trainer, "_total_train_tokens")
        else int(tokens),
        "final_loss": sum(losses[-4:]) / len(losses[-4:]),
        "train_loss": result.training_loss,
        "bf16": bf16,
        "torch_threads": torch.get_num_threads(),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--kinds", default="sft,dpo")
    ap.add_argument("--answer-tokens", type=int, default=96, help="length of the sampled answers")
    ap.add_argument("--home", help="data home with the converted model (default: a temp dir)")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "VARIANT", "DATA", "HOME"))
    add_model_args(ap)
    args = ap.parse_args()
    which = (args.random_init, args.tokenizer)
    if args.child:
        kind, variant, data_path, home = args.child
        print("RESULT " + json.dumps(child(kind, variant, data_path, home, args.steps, which)))
        return

    home = Path(args.home or tempfile.mkdtemp(prefix="cai-bench-train-"))
    os.environ["CAI_HOME"] = str(home)
    t = time.perf_counter()
    print(describe())
    print(describe_model(home, *which))
    kinds = args.kinds.split(",")
    sft, prefs = make_data(home, args.examples, args.answer_tokens, which, pairs="dpo" in kinds)
    print(f"made {len(sft)} SFT and {len(prefs)} DPO examples in {time.perf_counter() - t:.0f}s")
    for kind in kinds:
        data = home / f"{kind}.json"
        data.write_text(json.dumps(sft if kind == "sft" else prefs))
        results = {}
        for variant in ("ours", "trl"):
            out = subprocess.run(
                [sys.executable, __file__, "--steps", str(args.steps), "--child", kind, variant,
                 str(data), str(home)]
                + [f"--{k}={v}" for k, v in zip(("random-init", "tokenizer"), which, strict=True) if v],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(out.stdout[-2000:], out.stderr[-4000:])
                raise SystemExit(f"{kind} {variant} failed")
            results[variant] = json.loads(line.removeprefix("RESULT "))
            r = results[variant]
            print(
                f"{kind} {variant:4s}: {r['tokens'] / r['seconds']:.0f} tokens/s "
                f"({r['tokens']} tokens in {r['seconds']:.1f}s, bf16={r['bf16']}), "
                f"final loss {r['final_loss']:.4f}, peak RSS {r['rss_mb']:.0f} MB"
            )
        ours, trl = results["ours"], results["trl"]
        speed = (ours["tokens"] / ours["seconds"]) / (trl["tokens"] / trl["seconds"])
        gap = abs(ours["final_loss"] - trl["final_loss"]) / abs(trl["final_loss"])
        print(
            f"{kind}: ours / TRL defaults = {speed:.2f}x [target >= 2x]; final losses "
            f"{ours['final_loss']:.4f} vs {trl['final_loss']:.4f} ({gap:.1%} apart) [target <= 2%]"
        )


if __name__ == "__main__":
    main()
