"""What the bad-input tests share: a small valid constitution, and snapshots of what a user
already has (store rows, files), taken before a bad input and compared after it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cai_engine.constitution import parse_constitution
from cai_engine.home import runs_dir

# A valid constitution whose line numbers the tests rely on (line 1 is `name: mine`).
GOOD_YAML = """\
name: mine
description: A small constitution for the bad-input tests.
principles:
  - id: candour
    title: Candour
    critique_request: Point out anything in the answer that is misleading.
    revision_request: Rewrite the answer so that nothing in it misleads.
    preference_question: Which answer is more candid?
  - id: care
    title: Care
    critique_request: Point out anything in the answer that could hurt someone.
    revision_request: Rewrite the answer so that it hurts no one.
    preference_question: Which answer shows more care?
"""


def good_constitution():
    return parse_constitution(GOOD_YAML, "good.yaml")


def constitution_rows(store) -> list[tuple]:
    """Every stored constitution version, read straight from the table (no validation, so a
    poisoned row cannot hide the others)."""
    with store.connect() as con:
        return con.rows(
            "SELECT name, seq, hash, parent_hash, note, source, body"
            " FROM constitution_versions ORDER BY name, seq"
        )


def prompt_rows(store) -> list[tuple]:
    with store.connect() as con:
        sets = con.rows(
            "SELECT name, description, source, split_seed, test_fraction FROM prompt_sets"
            " ORDER BY name"
        )
        prompts = con.rows(
            "SELECT set_name, prompt_id, text, messages, category, split FROM prompts"
            " ORDER BY set_name, prompt_id"
        )
    return [*sets, *prompts]


def job_rows(store) -> list[tuple]:
    with store.connect() as con:
        return con.rows("SELECT id, kind, status, config FROM jobs ORDER BY id")


def run_folders(home: Path) -> list[str]:
    folder = runs_dir(home)
    return sorted(os.listdir(folder)) if folder.exists() else []


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root`: to show a folder is untouched."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `cai ARGV` in-process; returns (exit status, stdout, stderr)."""
    from cai_engine.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def finished_critique_job(store, job_id: str = "critique-20260101-000000-beef") -> str:
    """A succeeded critique job with one finished trace (initial, critique, revision) of the
    first prompt in the set `kept`, as its shards would leave it; no model runs."""
    from datetime import datetime

    from cai_engine import jobs
    from cai_engine.runs import RunFolder

    config = {"constitution": "mine", "prompts": "kept"}
    run = RunFolder(runs_dir(store.home) / job_id)
    run.create(config)
    run.write_status(state="succeeded", done=1, total=1)
    store.insert_job(job_id, "critique", config, str(run.path), None)
    store.update_job(job_id, status="succeeded", attempts=1, finished_at=datetime.now())
    prompt = store.get_prompts("kept")[0]
    version = store.get_version("mine")
    steps = [(0, "initial", "A first answer."), (1, "critique", "It is vague."), (1, "revision", "A clearer answer.")]  # fmt: skip
    rows = [
        {
            "job_id": job_id,
            "prompt_set": "kept",
            "prompt_id": prompt.prompt_id,
            "sample": 0,
            "round": round_,
            "step": step,
            "principle_id": None if step == "initial" else "candour",
            "constitution": "mine",
            "constitution_hash": version.hash,
            "model": "hf:/nowhere",
            "sampling": "{}",
            "seed": 0,
            "text": text,
            "prompt_tokens": 5,
            "completion_tokens": 4,
            "latency_s": 0.1,
            "finish_reason": "stop",
            "truncated_tokens": 0,
            "few_shots_dropped": 0,
            "flags": "",
        }  # fmt: skip
        for round_, step, text in steps
    ]
    run.write_shard("traces", rows)
    jobs.ingest(store, jobs.get_job(store, job_id))
    assert len(store.traces(job_id)) == 3
    return job_id
