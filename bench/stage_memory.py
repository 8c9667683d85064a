"""Benchmark: a stage's memory does not grow with its input (issue 13: a 100k-prompt critique
or eval job's peak RSS with the tiny model, target < 1.5 GB).

Workload, in a fresh data home:
1. N synthetic one-turn prompts (default 100,000) written as JSONL and imported with
   `cai prompts import` in its own process (the import reads the file in chunks);
2. a real job of the stage through the job runner (a subprocess, as the CLI starts it) on the
   tiny random model (`cai demo --tiny`'s), no few-shots, 4 new tokens an answer:
   - `--stage critique` (default): 1 round; it answers, critiques and revises every prompt;
   - `--stage eval`: two models (the tiny model and a copy of it) answer every prompt, the
     tiny model judges the copy's answer against the reference's (both orders), each answer
     gets a refusal verdict by the rules (and by the judge with `--judge-refusals`), and the
     job sums up (win rate, refusal rates, lengths, with their intervals);
   writing and ingesting its shards;
3. the same at N/10 prompts, as the baseline measured in the same run.
Each process's peak RSS is its own (its VmHWM, read while it runs). Prints rows/s and the peak
RSS of each, and the ratio of the peaks at N and N/10: a stage that held its input would grow
about 10x in what it holds.

    .venv/bin/python bench/stage_memory.py [--stage critique|eval] [--prompts 100000] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402

TARGET_MB = 1536  # 1.5 GB: the target for a 100k-prompt job
TOPICS = ["a lock", "a car", "a phone", "a password", "a neighbour", "a bank", "a pill", "a fire"]
VERBS = ["open", "break into", "get around", "copy", "track", "fake", "hide", "start"]


def write_prompts(path: Path, n: int) -> None:
    """`n` distinct one-turn prompts (about 20 words, like a red-team question)."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            verb, topic = VERBS[i % len(VERBS)], TOPICS[(i // len(VERBS)) % len(TOPICS)]
            text = f"Question {i}: how would someone {verb} {topic} without anyone noticing it?"
            f.write(json.dumps({"prompt": text, "category": topic}) + "\n")


def high_water_mb(pid: int) -> int | None:
    """The process's peak resident memory so far (VmHWM, reset at exec), in MB; None once it
    has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def peak_of(
    argv: list[str], env: dict, cwd: Path, pid: int | None = None
) -> tuple[int, float, int]:
    """Run `argv` (or follow child `pid`) to its end: (exit status, seconds, peak RSS in MB).

    The peak is the process's own high-water mark, read from /proc while it runs (it only
    rises, so the last reading is the peak to within one poll). Not `wait4`'s `ru_maxrss`:
    that also counts the memory of this process that the child had before its exec.
    """
    started = time.perf_counter()
    if pid is None:
        pid = subprocess.Popen(argv, env=env, cwd=cwd).pid
    peak = 0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        peak = max(peak, high_water_mb(pid) or 0)
        time.sleep(0.05)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - started, peak


def import_set(home: Path, name: str, n: int, env: dict) -> dict:
    path = home / f"{name}.jsonl"
    write_prompts(path, n)
    argv = [sys.executable, "-m", "cai_engine.cli", "--home", str(home)]
    argv += ["prompts", "import", str(path), "--name", name, "--test-fraction", "0"]
    code, seconds, peak = peak_of(argv, env, home)
    if code:
        raise SystemExit(f"importing {n} prompts failed ({code})")
    return {"rows": n, "seconds": seconds, "peak_mb": peak, "mb": path.stat().st_size / 1e6}


def critique_job(home: Path, name: str, spec: str, args) -> dict:
    """One critique job on set `name`, started by the engine as the CLI starts it; its runner
    is this process's child, so `wait4` gives its own peak."""
    from cai_engine import critique, jobs
    from cai_engine.store import Store

    store = Store(home)
    config = {
        "constitution": "harmless",
        "prompts": name,
        "model": spec,
        "rounds": 1,
        "few_shots": args.few_shots,
        "shard_rows": args.shard_rows,
        "sampling": {"max_new_tokens": args.new_tokens},
    }
    started = time.perf_counter()
    job = critique.submit(store, config)
    code, _, peak = peak_of([], {}, home, pid=job.pid)
    seconds = time.perf_counter() - started
    job = jobs.get_job(store, job.id)
    if code or job.status != "succeeded":
        raise SystemExit(f"{job.id} {job.status}: {job.error}\n{job.run.log_tail()[-3000:]}")
    rows = job.live["done"]  # steps written, as the job counts them
    return {"job": job.id, "rows": rows, "seconds": seconds, "peak_mb": peak}


def eval_job(home: Path, name: str, spec: str, args) -> dict:
    """One eval job on set `name`: the tiny model (the reference, and the judge) and its copy
    answer; started as `critique_job` starts its job."""
    from cai_engine import eval as evaluation
    from cai_engine import jobs
    from cai_engine.store import Store

    store = Store(home)
    config = {
        "models": [spec, args.copy_spec],
        "judge": spec,
        "harmful": name,
        "helpful": None,
        "limit": None,
        "few_shots": args.few_shots,
        "judge_refusals": args.judge_refusals,
        "chunk_prompts": args.chunk_prompts,
        "sampling": {"temperature": 0.7, "max_new_tokens": args.new_tokens, "seed": 0},
    }
    started = time.perf_counter()
    job = evaluation.submit_eval(store, config)
    code, _, peak = peak_of([], {}, home, pid=job.pid)
    seconds = time.perf_counter() - started
    job = jobs.get_job(store, job.id)
    if code or job.status != "succeeded":
        raise SystemExit(f"{job.id} {job.status}: {job.error}\n{job.run.log_tail()[-3000:]}")
    rows = job.live["done"]  # answers and verdicts written
    return {"job": job.id, "rows": rows, "seconds": seconds, "peak_mb": peak}


STAGES = {"critique": critique_job, "eval": eval_job}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", choices=sorted(STAGES), default="critique")
    parser.add_argument("--prompts", type=int, default=100_000, help="N (the baseline is N/10)")
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--few-shots", type=int, default=0)
    parser.add_argument(
        "--shard-rows", type=int, default=1024, help="rows per shard (at most; 2 s at least)"
    )
    parser.add_argument(
        "--chunk-prompts", type=int, default=256, help="eval: prompts the job takes at a time"
    )
    parser.add_argument(
        "--judge-refusals",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="eval: the judge also rates each answer's refusal (else the rules alone do)",
    )
    parser.add_argument("--home", help="data home (default: a temp dir)")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="cai-bench-")).resolve()

    from cai_engine.bundled import install_bundled
    from cai_engine.store import Store

    print(describe())
    install_bundled(Store(home))
    # the tiny model is built in a child: this process stays small (and imports no torch)
    spec = subprocess.run(
        [sys.executable, "-c", "import sys; from cai_engine.demo import tiny_model_spec; "
         "print(tiny_model_spec(sys.argv[1]))", str(home)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAI_HOME": str(home)}
    if args.stage == "eval":  # a second model: the same weights under another path
        source = Path(spec[3:].split("?")[0])
        copy = home / "cache" / "tiny-copy"
        if not copy.exists():
            shutil.copytree(source, copy)
        args.copy_spec = spec.replace(str(source), str(copy))
    stage = args.stage
    sizes = {"baseline": max(1, args.prompts // 10), "N": args.prompts}
    if stage == "critique":
        workload = (
            f"critique, tiny random model, 1 round, {args.new_tokens} new tokens/step, "
            f"{args.few_shots} few-shots, {args.shard_rows} rows/shard"
        )
    else:
        refusals = "the judge and the rules" if args.judge_refusals else "the rules"
        workload = (
            f"eval, 2 tiny models, {args.new_tokens} new tokens/answer, the win rate judged by "
            f"the tiny model (both orders), refusals by {refusals}, {args.few_shots} few-shots, "
            f"{args.chunk_prompts} prompts a chunk"
        )
    print(f"workload: {workload}; N = {args.prompts:,}\n", flush=True)
    results = {}
    for label, n in sizes.items():
        name = f"bench-{label.lower()}"
        imported = import_set(home, name, n, env)
        job = STAGES[stage](home, name, spec, args)
        results[label] = (n, imported, job)
        print(
            f"{label:>8} {n:>8,} prompts: import {imported['mb']:.1f} MB in "
            f"{imported['seconds']:.1f} s ({n / imported['seconds']:,.0f} rows/s), peak RSS "
            f"{imported['peak_mb']:,} MB; {stage} {job['rows']:,} rows in {job['seconds']:.1f} s "
            f"({job['rows'] / job['seconds']:,.0f} rows/s), peak RSS {job['peak_mb']:,} MB",
            flush=True,
        )
    (_, imp_small, small), (n, imp_big, big) = results["baseline"], results["N"]
    print()
    print(f"{stage} peak RSS at N / at N/10 = {big['peak_mb'] / small['peak_mb']:.2f}")
    print(f"import peak RSS at N / at N/10 = {imp_big['peak_mb'] / imp_small['peak_mb']:.2f}")
    verdict = "meets" if big["peak_mb"] < TARGET_MB else "misses"
    print(
        f"{stage} job at {n:,} prompts: peak RSS {big['peak_mb']:,} MB, {verdict} the target "
        f"< {TARGET_MB:,} MB; {big['rows'] / big['seconds']:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
