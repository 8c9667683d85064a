"""Synthetic label jobs for the export tests, written as a real job writes them: a pairs job
and a label job whose rows go into Parquet shards in their run folders, then `jobs.ingest`."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from cai_engine import jobs
from cai_engine.home import runs_dir
from cai_engine.judge import combine
from cai_engine.runs import RunFolder
from cai_engine.store import Store

PAIRS_JOB = "pairs-20260101-000000-synt"
LABEL_JOB = "label-20260101-000000-synt"

# Texts an export must carry through unchanged: JSON escapes, line separators, non-ASCII.
AWKWARD = 'quote " backslash \\ tab \t newline \n nul-ish \x01 sep \u2028 emoji 🙂 é 中文'


def label_job(store: Store, prompts: int, pairs: int = 2, seed: int = 0) -> list[dict]:
    """A finished pairs job and a finished label job over it (`prompts` x `pairs` labels),
    written as shards and ingested. The labels cover unscored (overflow) pairs, exact ties,
    one-order labels, inconsistent orders and cut-off answers. Returns the label rows."""
    from bench import synthetic

    ids = synthetic.import_prompts(store, "synthetic-labels", prompts, seed)
    rng = np.random.default_rng(seed)
    pair_rows, label_rows = [], []
    for i, pid in enumerate(ids):
        for pair in range(pairs):
            n = i * pairs + pair
            a = f"answer A {n} " + (AWKWARD if n % 97 == 0 else "")
            cut = {1: "a_cut_off", 2: "b_cut_off", 3: "identical,a_cut_off,b_cut_off"}
            flags = cut.get(n % 20, "")  # 15% of the pairs have an answer cut off
            pair_rows.append({
                "job_id": PAIRS_JOB, "prompt_set": "synthetic-labels", "prompt_id": pid,
                "pair": pair, "source": "samples", "source_job": None, "a_ref": "sample 0",
                "b_ref": "sample 1", "response_a": a, "response_b": f"answer B {n}",
                "model": "synthetic-policy", "sampling": "{}", "seed_a": n, "seed_b": n + 1,
                "constitution_hash": None, "flags": flags,
            })  # fmt: skip
            p_ab = float(rng.choice([0.5, *rng.random(6)]))
            p_ba = None if n % 7 == 0 else float(rng.random())
            if n % 11 == 0:
                p_ab = p_ba = 0.5 if n % 3 else None  # exact ties, and unscored pairs
            c = combine(p_ab, p_ba) if p_ab is not None else None
            label_rows.append({
                "job_id": LABEL_JOB, "pairs_job": PAIRS_JOB, "prompt_set": "synthetic-labels",
                "prompt_id": pid, "pair": pair, "principle_id": f"principle-{n % 16:02d}",
                "constitution": "harmless", "constitution_hash": "0" * 64,
                "model": "synthetic-judge", "mode": "logprob", "few_shots": 0,
                "p_a_ab": p_ab, "p_a_ba": p_ba,
                "soft_label": c.soft_label if c else None, "winner": c.winner if c else None,
                "confidence": c.confidence if c else None,
                "consistent": c.consistent if c else None,
                "cot_ab": None, "cot_ba": None, "prompt_tokens": 300, "cot_tokens": 0,
                "latency_s": 0.01, "truncated_turns": 0, "flags": "" if c else "overflow",
            })  # fmt: skip
    for job_id, kind, table, rows in [
        (PAIRS_JOB, "pairs", "pairs", pair_rows),
        (LABEL_JOB, "label", "labels", label_rows),
    ]:
        run = RunFolder(runs_dir(store.home) / job_id)
        run.create({})
        store.insert_job(job_id, kind, {}, str(run.path), "synthetic")
        for start in range(0, len(rows), 1000):
            run.write_shard(table, rows[start : start + 1000])
        run.write_status(state="succeeded", done=len(rows), total=len(rows))
        store.update_job(job_id, status="succeeded", finished_at=datetime.now())
        jobs.ingest(store, jobs.get_job(store, job_id))
    return label_rows
