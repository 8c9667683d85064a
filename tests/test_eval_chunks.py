"""An eval job holds one chunk of prompts at a time (issue 13: stages stream their inputs): it
answers, reads back and judges a chunk of each set, every store read it makes is at most a
chunk, and its summary, SQL over its own shards, is what the same SQL gives over every row in
a list. The job runs in this process on model doubles, so each read can be counted."""

from __future__ import annotations

import hashlib
import math
import shutil

import pytest

from cai_engine import jobs
from cai_engine.eval import EvalConfig, summarise
from cai_engine.eval.job import run_eval
from cai_engine.home import runs_dir
from cai_engine.models.base import ChatModel, Completion, ModelInfo
from cai_engine.runner import JobContext
from cai_engine.runs import RunFolder
from cai_engine.store.shards import ShardIndex
from tests.ui.row_counter import RowCounter

CHUNK, BATCH, LIMIT = 3, 2, 8  # 8 prompts per set: chunks of 3, 3 and 2


def _unit(*parts) -> float:
    """A number in (0, 1) fixed by `parts`."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return (int.from_bytes(digest[:4], "big") + 1) / (2**32 + 2)


class Double(ChatModel):
    """A model double: its answers and its judge's probabilities depend only on the text and
    the model's folder name (so not on the chunk, the batch or the temporary path); it
    records each call's size, and fails on its `fail_at`-th scoring call when given."""

    def __init__(self, spec: str, calls: dict, fail_at: int | None = None):
        self.spec, self.calls, self.fail_at = spec, calls, fail_at
        # the texts depend on the model's folder name, not on pytest's temporary path: the
        # batches the judge scores (an identical pair is not scored) are the same on every run
        self.name = spec.split("?")[0].rstrip("/").rsplit("/", 1)[-1]

    def chat(self, conversations, sampling=None, *, should_stop=None, on_batch=None):
        self.calls.setdefault("chat", []).append(len(conversations))
        out = []
        for start in range(0, len(conversations), BATCH):
            batch = conversations[start : start + BATCH]
            done = []
            for c in batch:
                words = 1 + int(9 * _unit(self.name, c[-1]["content"]))
                text = ("I'm sorry, but no. " if words % 3 == 0 else "") + "word " * words
                text += self.name  # never the other model's text: no pair is 'identical'
                done.append(Completion(text.strip(), 7, words, "length" if words > 7 else "stop"))
            if on_batch:
                on_batch(list(range(start, start + len(batch))), done)
            out += done
        return out

    def score_choices(self, prompts, choices):
        scored = self.calls.setdefault("score", [])
        scored.append(len(prompts))
        if self.fail_at is not None and len(scored) >= self.fail_at:
            raise RuntimeError("the judge went away")
        out = []
        for p in prompts:
            p_a = 0.05 + 0.9 * _unit("judge", p[-2]["content"])
            out.append([math.log(p_a), math.log(1 - p_a)])
        return out

    def score(self, prompts, continuations):
        raise AssertionError("verdicts are read through score_choices")

    def info(self):
        return ModelInfo(spec=self.spec, backend="double", details={"device": "cpu"})


@pytest.fixture
def specs(tiny_model_dir, tmp_path):
    """Two model specs on disk (the job checks they exist and fingerprints their weights)."""
    copy = tmp_path / "tiny-copy"
    shutil.copytree(tiny_model_dir, copy)
    return f"hf:{tiny_model_dir}?dtype=float32", f"hf:{copy}?dtype=float32"


def new_eval_job(store, config: dict, job_id: str):
    run = RunFolder(runs_dir(store.home) / job_id)
    run.create(config)
    store.insert_job(job_id, "eval", config, str(run.path), "made by hand")
    return jobs.get_job(store, job_id)


def run_here(store, job_id: str, config: dict, monkeypatch, calls: dict, fail_at=None) -> None:
    """One attempt of the eval job in this process, its models the doubles."""
    monkeypatch.setattr(
        "cai_engine.runner.load_model", lambda spec, home: Double(spec, calls, fail_at)
    )
    monkeypatch.setattr(JobContext, "try_ingest", lambda self: None)  # readers ingest
    job = jobs.get_job(store, job_id)
    run_eval(JobContext(store, job, jobs.get_kind("eval")), EvalConfig(**config))


def count_reads(monkeypatch) -> list[tuple[int, int]]:
    """(prompt ids asked, rows read back) of each read of the job's own shards."""
    asked: list[tuple[int, int]] = []
    rows_for = ShardIndex.rows_for

    def counted(self, column, values):
        rows = rows_for(self, column, values)
        asked.append((len(values), len(rows)))
        return rows

    monkeypatch.setattr(ShardIndex, "rows_for", counted)
    return asked


def settings(specs, **extra) -> dict:
    return {
        "models": list(specs),
        "judge": specs[0],
        "limit": LIMIT,
        "few_shots": 0,
        "chunk_prompts": CHUNK,
        "batch": BATCH,
        "bootstrap_rounds": 200,
        "judge_check": False,  # the judge's calls here are the eval's own (test_judge_check)
        **extra,
    }


def numbers(rows: list[dict]) -> dict:
    """Each result's value, interval and n, but the seconds (wall time, never the same)."""
    return {
        (r["model"], r["metric"]): (r["value"], r["low"], r["high"], r["n"])
        for r in rows
        if r["metric"] != "seconds_per_answer"
    }


def test_an_eval_job_reads_and_judges_a_chunk_at_a_time_and_sums_up_in_sql(
    seeded_store, specs, monkeypatch
):
    config = settings(specs)
    job = new_eval_job(seeded_store, config, "eval-00000000-000000-chunks")
    counter = RowCounter(monkeypatch)
    asked = count_reads(monkeypatch)
    calls: dict = {}
    run_here(seeded_store, job.id, config, monkeypatch, calls)

    # 2 models x 2 sets x 8 prompts = 32 answers; a refusal verdict each, and model B
    # against the reference A on each of 16 prompts: 32 + 16 = 48 verdicts
    answers = job.run.read_shard_rows("eval_answers")
    verdicts = job.run.read_shard_rows("eval_judgements")
    assert (len(answers), len(verdicts)) == (32, 48)
    # every store read was at most a chunk of prompts (the prompt pages, the reuse asks)
    assert {"prompt_page", "reusable_answers"} <= counter.names()
    assert counter.most()[1] <= CHUNK, counter.calls
    # the answers were read back a chunk at a time: 3 ids, so at most 3 x 2 models' rows
    assert [ids for ids, _ in asked] == [3, 3, 2] * 2  # 3 chunks per set
    assert max(n for _, n in asked) == CHUNK * 2
    # each model answered a chunk at a time; the judge scored a batch (both orders) at a time
    assert max(calls["chat"]) == CHUNK and max(calls["score"]) == 2 * BATCH

    # the summary (SQL over the shards) is what the same SQL gives over every row in a list
    results = job.run.read_shard_rows("eval_results")
    in_lists = summarise(EvalConfig(**config), job.id, answers, verdicts, {})
    # per set: refusal rates (rules, judge) and length, and B's win rate; then 3 costs:
    # A 2 x 3 + 3 = 9 rows, B 2 x 4 + 3 = 11
    assert len(results) == len(in_lists) == 9 + 11
    assert numbers(results) == numbers(in_lists)
    assert jobs.get_job(seeded_store, job.id).live["done"] == 32 + 48


def test_the_numbers_do_not_depend_on_the_chunk_and_a_failed_judge_resumes_judging_each_once(
    seeded_store, specs, monkeypatch
):
    whole = settings(specs, chunk_prompts=256)
    one_go = new_eval_job(seeded_store, whole, "eval-00000000-000000-whole")
    run_here(seeded_store, one_go.id, whole, monkeypatch, {})
    expected = numbers(one_go.run.read_shard_rows("eval_results"))

    # chunks of 3; the judge fails on its 8th batch: the first chunk took 5 (3 batches of
    # refusals, 2 of comparisons), so it fails in the second chunk
    config = settings(specs, reuse_answers=False)
    job = new_eval_job(seeded_store, config, "eval-00000000-000000-resumed")
    # shards by rows only: a flush on the 2 s timer (a loaded machine) would keep more verdicts
    writer = JobContext.writer
    monkeypatch.setattr(
        JobContext, "writer", lambda self, table, **kw: writer(self, table, **kw, flush_s=3600.0)
    )
    with pytest.raises(RuntimeError, match="the judge went away"):
        run_here(seeded_store, job.id, config, monkeypatch, {}, fail_at=8)
    kept = job.run.read_shard_rows("eval_judgements")
    assert len(kept) == 3 * 2 + 3 + 2 * 2  # chunk 1 (6 refusals, 3 comparisons), 2 batches
    assert len(job.run.read_shard_rows("eval_answers")) == 32
    asked = count_reads(monkeypatch)
    calls: dict = {}
    run_here(seeded_store, job.id, config, monkeypatch, calls)
    assert "chat" not in calls  # every answer was there: none generated again
    # the first chunk was judged whole: its answers were not read back
    assert [ids for ids, _ in asked] == [3, 2] + [3, 3, 2]
    verdicts = job.run.read_shard_rows("eval_judgements")
    keys = [(v["metric"], v["model"], v["prompt_set"], v["prompt_id"]) for v in verdicts]
    assert len(keys) == len(set(keys)) == 48  # each judged once, across the two attempts
    assert numbers(job.run.read_shard_rows("eval_results")) == expected
