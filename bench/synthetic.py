"""Synthetic jobs of any size (critique, eval, pairs and labels with reviews), written and ingested as a real job's are: a prompt set
imported through the engine, trace rows in Parquet shards in the job's run folder, and
`jobs.ingest` (the path every page refresh takes). The text is random words with the lengths
of real answers, critiques and revisions; each revision changes a known share of the words of
the answer before it, which is what it records as its edit size.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import numpy as np

from cai_engine import jobs
from cai_engine.home import runs_dir
from cai_engine.models.base import CUT_OFF
from cai_engine.prompts import import_prompt_set, select_prompts
from cai_engine.runs import RunFolder

PRINCIPLES = [f"principle-{i:02d}" for i in range(16)]
CATEGORIES = ["crime", "violence", "privacy", "self-harm", "benign", "bias"]
VOCAB = np.array([f"w{i}" for i in range(5000)] + ["safe", "harm", "cannot", "help", "please"])
WORDS = {"initial": 110, "critique": 45, "revision": 110}  # about 600, 250, 600 characters


def _text(rng: np.random.Generator, words: int) -> str:
    return " ".join(VOCAB[rng.integers(0, len(VOCAB), words)])


def _revise(rng: np.random.Generator, before: str, share: float) -> str:
    words = before.split()
    for i in rng.choice(len(words), int(len(words) * share), replace=False):
        words[i] = str(VOCAB[rng.integers(0, len(VOCAB))])
    return " ".join(words)


def import_prompts(store, name: str, n: int, seed: int = 0, chunk: int = 40_000) -> list[str]:
    """`n` one-turn prompts imported as JSONL into set `name` (in chunks under the import
    size limit); their ids (content hashes) in import order."""
    import json

    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        lines = [
            {"prompt": f"{i}: {_text(rng, 20)}", "category": CATEGORIES[i % len(CATEGORIES)]}
            for i in range(start, min(start + chunk, n))
        ]
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        import_prompt_set(store, (f"{name}.jsonl", data), name, append=start > 0)
    prompts = select_prompts(store, name)
    return [p.prompt_id for p in sorted(prompts, key=lambda p: int(p.text.split(":")[0]))]


def critique_job(
    store,
    traces: int,
    *,
    rounds: int = 2,
    shards: int = 20,
    job_id: str = "critique-20260101-000000-synt",
    prompt_set: str = "synthetic",
    seed: int = 0,
) -> dict:
    """A finished critique job of `traces` traces (1 + 2 × `rounds` steps each), written in
    `shards` shards and ingested. Returns the job id and the ingest's rows and seconds."""
    prompt_ids = import_prompts(store, prompt_set, traces, seed)
    rng = np.random.default_rng(seed + 1)
    run = RunFolder(runs_dir(store.home) / job_id)
    run.create({"rounds": rounds, "prompts": prompt_set})
    store.insert_job(job_id, "critique", {"rounds": rounds}, str(run.path), "synthetic")
    base = {"job_id": job_id, "prompt_set": prompt_set, "constitution": "harmless"}
    base |= {"constitution_hash": "0" * 64, "model": "synthetic", "sampling": "{}", "seed": seed}
    base |= {"truncated_tokens": 0, "few_shots_dropped": 0, "latency_s": 0.5, "prompt_tokens": 300}
    per_shard = -(-traces // shards)
    written = 0
    for start in range(0, traces, per_shard):
        rows = []
        for i in range(start, min(start + per_shard, traces)):
            answer = _text(rng, WORDS["initial"])
            steps = [("initial", 0, None, answer, None, None)]
            for r in range(1, rounds + 1):
                principle = PRINCIPLES[int(rng.integers(0, len(PRINCIPLES)))]
                steps.append(("critique", r, principle, _text(rng, WORDS["critique"]), None, None))
                share = float(rng.choice([0.0, 0.05, 0.2, 0.5]))
                revised = _revise(rng, answer, share) if share else answer
                steps.append(("revision", r, principle, revised, share, revised != answer))
                answer = revised
            for step, r, principle, text, size, changed in steps:
                cut = rng.random() < 0.05
                rows.append(
                    {
                        **base,
                        "prompt_id": prompt_ids[i],
                        "sample": 0,
                        "round": r,
                        "step": step,
                        "principle_id": principle,
                        "text": text,
                        "completion_tokens": len(text) // 4,
                        "finish_reason": CUT_OFF if cut else "stop",
                        "flags": "",
                        "edit_size": size,
                        "changed": changed,
                    }
                )
        run.write_shard("traces", rows)
        written += len(rows)
    run.write_status(state="succeeded", done=written, total=written, unit="steps")
    ended = datetime.now()
    store.update_job(job_id, status="succeeded", started_at=ended - timedelta(hours=1))
    store.update_job(job_id, finished_at=ended)
    started = time.perf_counter()
    added = jobs.ingest(store, jobs.get_job(store, job_id))
    return {"job": job_id, "rows": added, "ingest_s": time.perf_counter() - started}


# -- eval jobs ----------------------------------------------------------------------------------

REFUSAL_OPENING = "I cannot help with that request. "  # matches the refusal rule "i can't..."


def eval_job(
    store,
    prompts: int,
    models: int | list[str],
    shards: int,
    job_id: str | None = None,
    *,
    prompt_set: str = "synthetic-eval",
    seed: int = 0,
) -> dict:
    """A finished eval job: every model (`models` specs, or that many `model:synthetic-i`; the
    first is the reference) answers `prompts` red-team prompts, the judge compares each
    non-reference answer with the reference's (`harmless`) and says whether each answer
    refuses (`refusal`), and the summary metrics are computed as the job computes them.
    Answers and verdicts are written in `shards` shards each, then ingested.

    About one answer in eight opens with a refusal, one in twenty is cut off at the token
    limit, and one refusal verdict in twenty is missing (the page then shows the rule). Returns
    the job id, its model specs and the ingest's rows and seconds."""
    import json

    from cai_engine.eval.config import EvalConfig
    from cai_engine.eval.metrics import summarise
    from cai_engine.eval.refusals import refusal_rule

    specs = models if isinstance(models, list) else [f"model:synthetic-{i}" for i in range(models)]
    job_id = job_id or "eval-20260101-000000-synt"
    prompt_ids = import_prompts(store, prompt_set, prompts, seed)
    config = EvalConfig(
        models=specs,
        harmful=prompt_set,
        helpful=None,
        limit=None,
        judge="model:synthetic-judge",
        bootstrap_rounds=100,
        sampling={"temperature": 0.7, "max_new_tokens": 128, "seed": seed},
    )
    clean = config.model_dump(mode="json")
    rng = np.random.default_rng(seed + 2)
    run = RunFolder(runs_dir(store.home) / job_id)
    run.create(clean)
    store.insert_job(job_id, "eval", clean, str(run.path), "synthetic")
    sampling = json.dumps(clean["sampling"], sort_keys=True)
    answer_base = {"job_id": job_id, "prompt_set": prompt_set, "sampling": sampling}
    answer_base |= {"prompt_tokens": 30, "latency_s": 0.5, "reused_from": None}
    verdict_base = {"job_id": job_id, "prompt_set": prompt_set, "item": 0, "judge": config.judge}
    verdict_base |= {"prompt_tokens": 400, "latency_s": 0.2, "flags": ""}
    per_shard = -(-prompts // shards)
    all_answers, all_verdicts = [], []
    for start in range(0, prompts, per_shard):
        answers, verdicts = [], []
        for i in range(start, min(start + per_shard, prompts)):
            for spec in specs:
                refuses = rng.random() < 0.125
                text = (REFUSAL_OPENING if refuses else "") + _text(rng, WORDS["initial"])
                answers.append(
                    {
                        **answer_base,
                        "model": spec,
                        "fingerprint": f"synthetic:{spec}",
                        "prompt_id": prompt_ids[i],
                        "text": text,
                        "completion_tokens": len(text) // 4,
                        "finish_reason": CUT_OFF if rng.random() < 0.05 else "stop",
                    }
                )
                if spec != config.ref_model:
                    p = rng.random(2).round(4)
                    verdicts.append(
                        {
                            **verdict_base,
                            "metric": "harmless",
                            "model": spec,
                            "prompt_id": prompt_ids[i],
                            "principle_id": PRINCIPLES[int(rng.integers(0, len(PRINCIPLES)))],
                            "p_first": float(p[0]),
                            "p_second": float(p[1]),
                            "value": float((p[0] + p[1]) / 2),
                            "rule": None,
                            "consistent": bool((p[0] - 0.5) * (p[1] - 0.5) > 0),
                        }
                    )
                if rng.random() < 0.95:
                    p = (rng.uniform(0.6, 1.0, 2) if refuses else rng.uniform(0.0, 0.4, 2)).round(4)
                    verdicts.append(
                        {
                            **verdict_base,
                            "metric": "refusal",
                            "model": spec,
                            "prompt_id": prompt_ids[i],
                            "principle_id": None,
                            "p_first": float(p[0]),
                            "p_second": float(p[1]),
                            "value": float((p[0] + p[1]) / 2),
                            "rule": refusal_rule(text),
                            "consistent": True,
                        }
                    )
        run.write_shard("eval_answers", answers)
        run.write_shard("eval_judgements", verdicts)
        all_answers += answers
        all_verdicts += verdicts
    run.write_shard("eval_results", summarise(config, job_id, all_answers, all_verdicts, {}))
    done = len(all_answers) + len(all_verdicts)
    run.write_status(state="succeeded", done=done, total=done, unit="answers and verdicts")
    ended = datetime.now()
    store.update_job(job_id, status="succeeded", started_at=ended - timedelta(hours=1))
    store.update_job(job_id, finished_at=ended)
    started = time.perf_counter()
    added = jobs.ingest(store, jobs.get_job(store, job_id))
    return {
        "job": job_id,
        "models": config.answering,
        "prompt_set": prompt_set,
        "rows": added,
        "ingest_s": time.perf_counter() - started,
    }


def label_job(
    store,
    labels: int,
    reviews: int,
    shards: int = 20,
    job_id: str | None = None,
    *,
    pairs_per_prompt: int = 2,
    reviewers: tuple[str, ...] = ("ann", "bob", "cy"),
    seed: int = 0,
) -> dict:
    """A finished pairs job and a finished label job of `labels` labels on it (both written in
    `shards` shards and ingested), and `reviews` human verdicts on its scored labels from a few
    `reviewers` (appended in one go: verdicts are not job shards). The labels are under the
    bundled `harmless` constitution, so a page can show their principles; about 3% are
    unscored (overflow), 2% compare identical answers and a tenth have an answer cut off.
    Returns the job ids, the rows ingested, the ingest's seconds and the verdicts added."""
    from cai_engine.bundled import install_bundled
    from cai_engine.judge import combine

    install_bundled(store)
    version = store.get_version("harmless")
    principles = [p.id for p in version.constitution.principles]
    job_id = job_id or "label-20260101-000000-synt"
    pairs_job = f"pairs-{job_id.removeprefix('label-')}"
    prompt_set = f"synthetic-{job_id}"
    n_prompts = -(-labels // pairs_per_prompt)
    prompt_ids = import_prompts(store, prompt_set, n_prompts, seed)
    keys = [(prompt_ids[i // pairs_per_prompt], i % pairs_per_prompt) for i in range(labels)]
    rng = np.random.default_rng(seed + 2)
    runs = {}
    for jid, kind, config in (
        (pairs_job, "pairs", {"prompts": prompt_set, "model": "synthetic", "samples": 3}),
        (
            job_id,
            "label",
            {"pairs": pairs_job, "constitution": f"harmless@{version.hash[:12]}",
             "model": "synthetic", "both_orders": True, "cot": False},
        ),
    ):  # fmt: skip
        runs[kind] = RunFolder(runs_dir(store.home) / jid)
        runs[kind].create(config)
        store.insert_job(jid, kind, config, str(runs[kind].path), "synthetic")
    per_shard = -(-labels // shards)
    scored = []
    for start in range(0, labels, per_shard):
        pairs_rows, label_rows = [], []
        for prompt_id, pair in keys[start : start + per_shard]:
            a = _text(rng, WORDS["initial"])
            identical = rng.random() < 0.02
            b = a if identical else _text(rng, WORDS["initial"])
            cut = [side for side in ("a", "b") if rng.random() < 0.05]
            pairs_rows.append(
                {
                    "job_id": pairs_job, "prompt_set": prompt_set, "prompt_id": prompt_id,
                    "pair": pair, "source": "samples", "source_job": None,
                    "a_ref": f"sample {pair}", "b_ref": f"sample {pair + 1}",
                    "response_a": a, "response_b": b, "model": "synthetic", "sampling": "{}",
                    "seed_a": seed, "seed_b": seed + 1, "constitution_hash": None,
                    "flags": ",".join((["identical"] if identical else [])
                                      + [f"{s}_cut_off" for s in cut]),
                }
            )  # fmt: skip
            overflow = not identical and rng.random() < 0.03
            if overflow:
                p_ab = p_ba = None
            elif identical:
                p_ab = p_ba = 0.5
            else:  # a judge that mostly prefers one answer in both orders, sometimes not
                lean = float(rng.beta(2, 2))
                p_ab = float(np.clip(lean + rng.normal(0, 0.15), 0.01, 0.99))
                p_ba = float(np.clip(lean + rng.normal(0, 0.15), 0.01, 0.99))
            c = combine(p_ab, p_ba) if p_ab is not None else None
            label_rows.append(
                {
                    "job_id": job_id, "pairs_job": pairs_job, "prompt_set": prompt_set,
                    "prompt_id": prompt_id, "pair": pair,
                    "principle_id": principles[int(rng.integers(0, len(principles)))],
                    "constitution": "harmless", "constitution_hash": version.hash,
                    "model": "synthetic", "mode": "logprob", "few_shots": 0,
                    "p_a_ab": p_ab, "p_a_ba": p_ba,
                    "soft_label": c.soft_label if c else None,
                    "winner": c.winner if c else None,
                    "confidence": c.confidence if c else None,
                    "consistent": c.consistent if c else None,
                    "cot_ab": None, "cot_ba": None, "prompt_tokens": 400, "cot_tokens": 0,
                    "latency_s": 0.05, "truncated_turns": 0,
                    "flags": "overflow" if overflow else "identical" if identical else "",
                }
            )  # fmt: skip
            if c is not None:
                scored.append((prompt_id, pair, c.winner))
        runs["pairs"].write_shard("pairs", pairs_rows)
        runs["label"].write_shard("labels", label_rows)
    ended = datetime.now()
    started = time.perf_counter()
    added = 0
    for kind, jid, total in (("pairs", pairs_job, labels), ("label", job_id, labels)):
        runs[kind].write_status(state="succeeded", done=total, total=total, unit="pairs")
        store.update_job(jid, status="succeeded", started_at=ended - timedelta(hours=1))
        store.update_job(jid, finished_at=ended)
        added += jobs.ingest(store, jobs.get_job(store, jid))
    ingest_s = time.perf_counter() - started
    # verdicts: a reviewer agrees with the AI three times in four, now and then calls a tie,
    # both bad or skips, and sometimes reviews a pair again (the latest verdict counts)
    verdicts = []
    picks = rng.integers(0, len(scored), reviews) if scored else []
    for n, i in enumerate(picks):
        prompt_id, pair, winner = scored[int(i)]
        draw = rng.random()
        other = "B" if winner == "A" else "A"
        verdict = (
            (winner if winner != "tie" else "A") if draw < 0.7 else other if draw < 0.88
            else "tie" if draw < 0.94 else "both_bad" if draw < 0.98 else "skip"
        )  # fmt: skip
        verdicts.append(
            {"prompt_id": prompt_id, "pair": pair, "reviewer": reviewers[n % len(reviewers)],
             "verdict": verdict, "display_order": "AB" if rng.random() < 0.5 else "BA"}
        )  # fmt: skip
    store.add_reviews(job_id, verdicts)
    return {
        "job": job_id,
        "pairs_job": pairs_job,
        "rows": added,
        "ingest_s": ingest_s,
        "reviews": len(verdicts),
    }


# -- many jobs ----------------------------------------------------------------------------------

MANY_KINDS = ("critique", "eval", "tick")  # job i is of kind i % 3 ...
MANY_STATUSES = ("succeeded", "failed", "cancelled", "interrupted")  # ... in status i % 4


def many_jobs(store, n: int = 10_000) -> None:
    """`n` finished jobs in one INSERT: job i is `<kind>-<i, 6 digits>`, created i seconds
    after 2025-01-01 (so job n-1 is the newest), of kind `MANY_KINDS[i % 3]`, in status
    `MANY_STATUSES[i % 4]`, labelled `Label <i>` when i is a multiple of 10, with a run folder
    that does not exist (no status file to read)."""
    with store.connect() as con:
        con.rows(
            """
            INSERT INTO jobs (id, kind, label, config, status, run_dir, created_at)
            SELECT printf('%s-%06d', k[i % 3 + 1], i), k[i % 3 + 1],
                   CASE WHEN i % 10 = 0 THEN 'Label ' || i END, '{}', s[i % 4 + 1],
                   '/nowhere/' || i, TIMESTAMP '2025-01-01' + to_seconds(i)
            FROM range(?) r(i), (SELECT ?::VARCHAR[] AS k, ?::VARCHAR[] AS s)
            """,
            [n, list(MANY_KINDS), list(MANY_STATUSES)],
        )
