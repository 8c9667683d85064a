"""The benchmarks keep working: each script in bench/ runs end to end at a tiny size, on a tiny
model with random weights (`--random-init tiny`, the path GPU runs take at 1.7B), and prints
its ratio line. The full-size runs are the benchmarks themselves
(the commands in the README); these runs only prove the scripts still work, so
nothing here asserts a speed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

RUNS = {
    "store": (
        ["--rows", "20000", "--shards", "4", "--repeat", "3", "--browser"],
        "first page p95 / baseline =",
    ),
}

# Run by bench/device_check.sh (SIZE=small), each with the line its ratios are on.
MODEL_RUNS = {
    "generation": ["local / naive ="],
    "critique": ["critique / plain generation =", "ours / naive ="],
    "labels": ["ours / generate-and-parse =", "prefill: ", "matmul's"],
    "training": ["sft: ours / the fastest TRL (", "dpo: ours / TRL fp32 defaults ="],
}


@pytest.mark.parametrize("name", list(RUNS))
def test_the_benchmark_runs_at_a_tiny_size(name, tmp_path):
    args, expect = RUNS[name]
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAI_HOME": str(home)}
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert expect in run.stdout, run.stdout[-4000:]
    # every benchmark says what it ran on: the CPU model, its flags and the dtype it chose
    assert "cpu: " in run.stdout and "local dtype: " in run.stdout, run.stdout[:2000]


def test_the_device_check_runs_the_model_benchmarks_and_writes_one_table(tmp_path):
    """bench/device_check.sh end to end at SIZE=small on the tiny shape (`CONFIG=tiny`): the
    path a GPU run takes at 1.7B (random weights from a config, no download), here on the CPU.
    Each benchmark prints its ratios and writes its numbers; the table has a row for each."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "CONFIG": "tiny",
        "SIZE": "small",
        "PYTHON": sys.executable,
        "TMPDIR": str(tmp_path),
    }
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "device_check.sh"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    for name, expected in MODEL_RUNS.items():
        text = (out / f"{name}.txt").read_text()
        for line in expected:
            assert line in text, f"{name}: {line!r} not in\n{text[-3000:]}"
        # every benchmark says what it ran on: the CPU model, its flags and the dtype it chose
        assert "cpu: " in text and "local dtype: " in text, text[:2000]
        assert "model: random-tiny (random weights, tiny's shape; 2 layers x 64 hidden" in text
    table = (out / "table.md").read_text()
    assert "tiny with random weights" in table and "no GPU (CPU run)" in table
    for row in ("| generation |", "| critique stage |", "| labels |", "| SFT training |",
                "| DPO training |", "| SFT vs the fastest TRL |"):  # fmt: skip
        assert row in table, table
    assert "HF generate, float32 on cpu, batch 1" in table


def test_the_stage_memory_benchmark_runs_at_a_tiny_size(tmp_path):
    """bench/stage_memory.py end to end at 120 prompts (baseline 12): the import and the
    critique job run as real processes, and each says its peak RSS."""
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAI_HOME": str(home)}
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "stage_memory.py"), "--prompts", "120"]
        + ["--home", str(home)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "critique peak RSS at N / at N/10 =" in run.stdout, run.stdout[-4000:]
    assert "critique 360 rows" in run.stdout  # 120 prompts x (initial, critique, revision)
    assert "cpu: " in run.stdout and "local dtype: " in run.stdout, run.stdout[:2000]
