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
    "generation": (["--prompts", "4", "--naive-prompts", "1", "--no-vllm"], "local / naive ="),
    "critique": (
        ["--prompts", "2", "--naive-prompts", "1", "--new-tokens", "16"],
        "critique / plain generation =",
    ),
    "labels": (["--pairs", "2", "--baseline-pairs", "1"], "ratio (ours / baseline)"),
    "store": (
        ["--rows", "20000", "--shards", "4", "--repeat", "3", "--browser"],
        "first page p95 / baseline =",
    ),
    "training": (
        ["--steps", "1", "--examples", "8", "--kinds", "sft", "--answer-tokens", "16"],
        "sft: ours / TRL defaults =",
    ),
}


MODEL_RUNS = {"generation", "critique", "labels", "training"}  # the rest build no model


@pytest.mark.parametrize("name", list(RUNS))
def test_the_benchmark_runs_at_a_tiny_size(name, tmp_path):
    args, expect = RUNS[name]
    args = [*args, "--random-init", "tiny"] if name in MODEL_RUNS else args
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
    if name in MODEL_RUNS:
        assert (
            "model: random-tiny (random weights, tiny's shape; 2 layers x 64 hidden" in run.stdout
        )


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
