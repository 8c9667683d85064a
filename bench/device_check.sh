#!/usr/bin/env bash
# The four throughput benchmarks (generation, critique, labels, training) on a GPU machine that
# is offline and holds no weights: each builds a model of SmolLM2-1.7B's shape with random
# weights (speed does not depend on the weights' values), measures it against HF `generate` /
# TRL defaults on the same GPU, and the results are gathered into one table.
#
#   bench/device_check.sh --prepare     here, on a machine with the venv and the embedded
#                                       model: copies SmolLM2's tokenizer files and downloads
#                                       wheels (Python 3.12) of what a bare GPU image lacks
#                                       into .device/ (ignored by git, about 30 MB)
#   bench/device_check.sh [OUT_DIR]     there: installs those wheels (no network), runs the
#                                       benchmarks and writes OUT_DIR/table.md, the benchmarks'
#                                       outputs and numbers (default OUT_DIR: bench-device)
#
# Environment: CONFIG (a bench/configs name or JSON file; default smollm2-1.7b), SIZE=small
# (a quick run at a few prompts, steps and pairs, for checking the script itself), PYTHON
# (default python3, or the venv's when there is one). About 5 minutes on one H200.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE_DIR=.device
if [[ "${1:-}" == "--prepare" ]]; then
    py=.venv/bin/python
    mkdir -p "$DEVICE_DIR/tokenizer" "$DEVICE_DIR/wheels"
    home=$(mktemp -d)
    CAI_HOME="$home" "$py" - "$DEVICE_DIR/tokenizer" <<'EOF'
import sys
from pathlib import Path

from cai_engine.models.tiny import load_tokenizer

load_tokenizer(None).save_pretrained(Path(sys.argv[1]))
EOF
    rm -rf "$home"
    # What cai_engine needs beyond the GPU image's packages (torch, transformers, accelerate,
    # peft, pandas, pyarrow, pyyaml... are there): the versions of this venv.
    versions=$("$py" -m pip list --format=freeze 2>/dev/null | grep -iE \
        '^(trl|datasets|duckdb|pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|dill|multiprocess)==')
    # shellcheck disable=SC2086
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$DEVICE_DIR/wheels" $versions
    grep -qxF "/$DEVICE_DIR/" .git/info/exclude 2>/dev/null || echo "/$DEVICE_DIR/" >>.git/info/exclude
    du -sh "$DEVICE_DIR"
    echo "prepared $DEVICE_DIR: carry it to the GPU machine with the checkout and run bench/device_check.sh there"
    exit 0
fi

OUT_DIR=${1:-bench-device}
CONFIG=${CONFIG:-smollm2-1.7b}
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
mkdir -p "$OUT_DIR"
if ! "$PYTHON" -c 'import datasets, duckdb, pydantic, trl' 2>/dev/null; then
    site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
        "$DEVICE_DIR"/wheels/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
tokenizer=()
[[ -d "$DEVICE_DIR/tokenizer" ]] && tokenizer=(--tokenizer "$DEVICE_DIR/tokenizer")
home=$(mktemp -d)
export CAI_HOME="$home"
model=(--random-init "$CONFIG" "${tokenizer[@]}" --home "$home")

if [[ "${SIZE:-full}" == small ]]; then
    gen=(--prompts 4 --naive-prompts 1) crit=(--prompts 2 --naive-prompts 1 --new-tokens 16)
    lab=(--pairs 2 --baseline-pairs 1) train=(--steps 1 --examples 8 --answer-tokens 16)
else
    gen=(--prompts 64 --naive-prompts 4) crit=(--prompts 64 --naive-prompts 2)
    lab=(--pairs 64 --baseline-pairs 8) train=(--steps 8 --examples 64)
fi
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' \
    | tee "$OUT_DIR/machine.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
    | tee -a "$OUT_DIR/machine.txt" || true
run() {
    local name=$1 started=$SECONDS
    shift
    echo "== $name"
    "$PYTHON" "bench/$name.py" "$@" "${model[@]}" --json "$OUT_DIR/$name.json" 2>&1 \
        | tee "$OUT_DIR/$name.txt"
    echo "$name: $((SECONDS - started)) s" | tee -a "$OUT_DIR/machine.txt"
}
run generation "${gen[@]}" --no-vllm
run critique "${crit[@]}" --no-vllm
run labels "${lab[@]}" --no-vllm
run training "${train[@]}"

"$PYTHON" - "$OUT_DIR" "$CONFIG" <<'EOF' | tee "$OUT_DIR/table.md"
import json
import sys
from datetime import date
from pathlib import Path

out, config = Path(sys.argv[1]), sys.argv[2]
machine = (out / "machine.txt").read_text().splitlines()
gpus = [line for line in machine if line.count(",") == 2 and not line.startswith("name")]
gpu = gpus[0].split(",")[0] if gpus else "no GPU (CPU run)"
took = ", ".join(line for line in machine if line.endswith(" s"))
numbers = {n: json.loads((out / f"{n}.json").read_text()) for n in ("generation", "critique", "labels")}
training = json.loads((out / "training.json").read_text())
print(f"{date.today()}, {gpu}, {config} with random weights, {machine[0]} ({took})\n")
print("| benchmark | ours | baseline on the same device | ratio | GPU memory (ours) |")
print("| --- | --- | --- | --- | --- |")


def row(name, rate, unit, n):
    gib = n.get("GPU GiB")
    memory = f"{gib:.1f} GiB" if gib else "-"
    print(
        f"| {name} | {rate:,.1f} {unit} | {n['baseline']}: {n['baseline rate']:,.1f} | "
        f"{rate / n['baseline rate']:.1f}x | {memory} |"
    )


row("generation", numbers["generation"]["generation tokens/s"], "tokens/s", numbers["generation"])
c = numbers["critique"]
row("critique stage", c["critique tokens/s"], "tokens/s", c)
print(
    f"| critique / plain generation | {c['critique tokens/s'] / c['plain generation tokens/s']:.2f}x"
    f" | plain generation: {c['plain generation tokens/s']:,.1f} tokens/s | | |"
)
row("labels", numbers["labels"]["labels/s"], "labels/s", numbers["labels"])
for kind, n in training.items():
    row(f"{kind.upper()} training", n[f"{kind} tokens/s"], "tokens/s", n)
    rate = n[f"{kind} tokens/s"]
    print(
        f"| {kind.upper()} vs the fastest TRL | {rate / n['fastest TRL rate']:.2f}x | "
        f"{n['fastest TRL']}: {n['fastest TRL rate']:,.1f} tokens/s | | |"
    )
EOF
rm -rf "$home"
