"""Benchmark: SFT and DPO training with our defaults against TRL configured as a user would.

Workload: the embedded SmolLM2-135M, 64 examples made from the bundled `helpful` prompts with
the model's own answers (SFT: prompt -> answer; DPO: two sampled answers, the first chosen),
batch 4 x 2 accumulation, the same steps and seed for every variant. Measured in one run,
each variant in its own child process (so peak RSS is its own):
1. ours: what `cai train` does: bf16 autocast where a bf16 matmul measures faster (fp32
   master weights), `max_length` sized to the data, batches grouped by length, and (DPO) the
   reference log-probs computed once up front, in bf16 too;
2. TRL fp32 defaults: `bf16=False, use_cpu=True`, `max_length` 1024, and the reference model
   run beside the policy at every step;
3. TRL bf16: the same with `bf16=True` (autocast), the other precision a user would try.
The faster of 2 and 3 is "the fastest TRL configuration" on this machine. Prints tokens/s,
the ratios (targets: ours >= 1.0x the fastest TRL, and >= 2x TRL fp32 where the CPU has bf16
matrix units), the final losses (target: within 2%), peak RSS, and which case this CPU is.

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

from bench.machine import (  # noqa: E402
    add_model_args,
    cpu,
    describe,
    describe_model,
    model_dir,
    model_spec,
    peak_gpu_gb,
    write_json,
)

VARIANTS = {"ours": "ours", "trl": "TRL fp32 defaults", "trl-bf16": "TRL bf16 autocast"}


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
    bf16 = decide_precision("auto")[0] if ours else variant == "trl-bf16"
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
        "use_cpu": not torch.cuda.is_available(),
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
        "gpu_gb": peak_gpu_gb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--kinds", default="sft,dpo")
    ap.add_argument("--answer-tokens", type=int, default=96, help="length of the sampled answers")
    ap.add_argument("--json", help="also write the numbers to this file (device_check.sh)")
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
    import torch

    if torch.cuda.is_available():
        units = ["a GPU with bf16 tensor cores"] if torch.cuda.is_bf16_supported() else []
    else:
        units = [f for f in cpu()[1] if f in ("amx_bf16", "avx512_bf16")]
    print(
        "bf16 matrix units: "
        + (
            f"yes ({', '.join(units)}): the 2x-over-TRL-fp32 target applies"
            if units
            else "none (no AMX or AVX512-BF16, or no bf16 on this GPU): the 2x-over-TRL-fp32"
            " target does not apply"
        )
    )
    sft, prefs = make_data(home, args.examples, args.answer_tokens, which, pairs="dpo" in kinds)
    print(f"made {len(sft)} SFT and {len(prefs)} DPO examples in {time.perf_counter() - t:.0f}s")
    numbers = {}
    for kind in kinds:
        data = home / f"{kind}.json"
        data.write_text(json.dumps(sft if kind == "sft" else prefs))
        results = {}
        for variant in VARIANTS:
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
                f"{kind} {VARIANTS[variant]:15s}: {r['tokens'] / r['seconds']:4.0f} tokens/s "
                f"({r['tokens']} tokens in {r['seconds']:.1f}s, bf16={r['bf16']}), "
                f"final loss {r['final_loss']:.4f}, peak RSS {r['rss_mb']:.0f} MB"
                + (f", GPU {r['gpu_gb']:.1f} GiB" if r["gpu_gb"] else "")
            )
        rate = {v: r["tokens"] / r["seconds"] for v, r in results.items()}
        best = max(("trl", "trl-bf16"), key=rate.get)  # the faster TRL configuration here
        numbers[kind] = {
            f"{kind} tokens/s": rate["ours"],
            "baseline": "TRL defaults (fp32)",
            "baseline rate": rate["trl"],
            "fastest TRL": VARIANTS[best],
            "fastest TRL rate": rate[best],
            "GPU GiB": results["ours"]["gpu_gb"],
        }
        ours = results["ours"]
        for other, name, target in (
            (best, f"the fastest TRL ({VARIANTS[best]})", ">= 1.0x"),
            ("trl", VARIANTS["trl"], ">= 2x" if units else "none on this machine"),
        ):
            gap = abs(ours["final_loss"] - results[other]["final_loss"]) / abs(
                results[other]["final_loss"]
            )
            print(
                f"{kind}: ours / {name} = {rate['ours'] / rate[other]:.2f}x [target {target}]; "
                f"final losses {ours['final_loss']:.4f} vs {results[other]['final_loss']:.4f} "
                f"({gap:.1%} apart) [target <= 2%]"
            )
    write_json(args.json, numbers)


if __name__ == "__main__":
    main()
