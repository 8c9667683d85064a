"""The job runtime: real `python -m cai_engine.runner` subprocesses, watched through run folders.

Most tests use the model-free `tick` kind, whose rows land in `ticks` as (i, i*i). Waits are
bounded polls on the run folder or the store, never long fixed sleeps. Every runner started here
names this test's throwaway data home on its command line, so the `reap_runners` finalizer
can find and stop any that a failing test leaves behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from bench import synthetic
from cai_engine import jobs
from cai_engine.cli import main
from cai_engine.errors import CaiError
from cai_engine.home import db_path, runs_dir
from cai_engine.jobs import JobConfigError
from cai_engine.models import ModelInfo
from cai_engine.prompts import Prompt
from cai_engine.runner import JobContext
from cai_engine.runs import RunFolder
from tests.runners import (
    DEADLINE,
    alive,
    finish,
    group_members,
    kill_runners,
    runner_pids,
    wait_until,
)

# -- helpers ------------------------------------------------------------------------------


def squares(n: int, start: int = 0) -> list[tuple[int, int]]:
    """The rows a tick job writes for i in [start, n): (i, i*i)."""
    return [(i, i * i) for i in range(start, n)]


def event_names(job) -> list[str]:
    return [e["event"] for e in job.run.events()]


def wait_started(job) -> None:
    """Until the runner has installed its SIGTERM handler (it logs `started` right after)."""
    wait_until(lambda: "started" in event_names(job), f"{job.id} to start")


def wait_shards(job, n: int, table: str = "ticks") -> None:
    wait_until(lambda: len(job.run.shards(table)) >= n, f"{n} shards of {job.id}")


def job_count(store) -> int:
    return len(store.job_rows())


@pytest.fixture(autouse=True)
def reap_runners(cai_home):
    """No job process started by a test outlives it, whether the test passed or not."""
    yield
    kill_runners(cai_home)


# -- submit: validation before anything starts ---------------------------------------------


@pytest.mark.parametrize(
    "config, named",
    [
        ({"total": 5, "bogus": 1}, "unknown key 'bogus'"),
        ({"total": -1}, "total"),
        ({"shard_size": 0}, "shard_size"),
        ({"delay_s": "soon"}, "delay_s"),
    ],
)
def test_a_bad_config_is_refused_naming_the_key_and_starts_nothing(store, cai_home, config, named):
    with pytest.raises(JobConfigError, match=named) as caught:
        jobs.submit(store, "tick", config)
    assert "invalid tick job config" in str(caught.value)
    assert job_count(store) == 0
    assert not runs_dir(cai_home).exists() or not any(runs_dir(cai_home).iterdir())
    assert runner_pids(cai_home) == []


def test_an_unknown_key_lists_the_allowed_keys(store):
    with pytest.raises(JobConfigError) as caught:
        jobs.submit(store, "tick", {"totl": 5})
    assert "allowed: total, shard_size, delay_s, fail_at" in str(caught.value)


def test_an_unknown_kind_lists_the_known_kinds(store, cai_home):
    with pytest.raises(
        CaiError,
        match=r"unknown job kind 'nope'; known kinds: critique, demo, dpo, eval, generate, judge-check, label, pairs, reward, rl, sft, tick",
    ):
        jobs.submit(store, "nope", {})
    assert job_count(store) == 0
    assert not runs_dir(cai_home).exists()


# -- a clean run ---------------------------------------------------------------------------


def test_a_tick_job_succeeds_with_every_row_and_a_complete_run_folder(store, cai_home):
    job = jobs.submit(store, "tick", {"total": 7, "shard_size": 3, "delay_s": 0.01})
    assert job.status in jobs.ACTIVE and job.pid
    job = finish(store, job.id)

    assert job.status == "succeeded", job.error
    assert (job.attempts, job.error) == (1, None)
    assert job.started_at and job.finished_at and job.started_at <= job.finished_at
    assert store.ticks(job.id) == squares(7)  # (0,0) (1,1) (2,4) ... (6,36)

    run = Path(job.run_dir)
    assert run == runs_dir(cai_home) / job.id
    assert json.loads((run / "config.json").read_text()) == {
        "total": 7,
        "shard_size": 3,
        "delay_s": 0.01,
        "fail_at": None,  # defaults are written out: the folder records what ran
    }
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "succeeded"
    assert (status["done"], status["total"], status["tokens"]) == (7, 7, 7)
    assert status["error"] is None

    assert event_names(job) == ["submitted", "started", "finished"]
    events = job.run.events()
    assert events[0]["config"] == job.config
    assert events[2]["state"] == "succeeded"
    assert events[0]["time"] <= events[1]["time"] <= events[2]["time"]

    log = (run / "run.log").read_text()
    assert f"{job.id}: started (attempt 1)" in log
    assert f"{job.id}: succeeded" in log

    # 7 rows in shards of 3: rows 0-2, 3-5 and the short last shard with row 6.
    shard_dir = run / "shards" / "ticks"
    assert sorted(os.listdir(shard_dir)) == ["000001.parquet", "000002.parquet", "000003.parquet"]
    leftovers = [p for p in run.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []
    assert len(store.ingested_paths(job.id)) == 3
    # The row says succeeded a moment before the runner process has finished exiting.
    wait_until(lambda: not runner_pids(cai_home), "the runner to exit", timeout=10)


# -- cancel --------------------------------------------------------------------------------


def test_cancel_stops_a_job_cleanly_keeping_its_finished_shards(store, cai_home):
    job = jobs.submit(store, "tick", {"total": 400, "shard_size": 5, "delay_s": 0.05})
    wait_shards(job, 2)

    began = time.monotonic()
    job = jobs.cancel(store, job.id)  # the default 10 s grace
    took = time.monotonic() - began

    assert job.status == "cancelled"
    assert took < 3.0, f"cancel took {took:.1f}s; the runner checks the flag every 0.05 s"
    names = event_names(job)
    assert "killed" not in names  # SIGTERM was handled: no SIGKILL needed
    assert names[-2:] == ["cancel_requested", "finished"]
    assert job.run.events()[-1]["state"] == "cancelled"  # written by the runner itself
    assert job.live["state"] == "cancelled"

    rows = store.ticks(job.id)
    assert len(rows) >= 10 and len(rows) % 5 == 0  # whole shards only; the open batch is dropped
    assert rows == squares(len(rows))
    assert len(job.run.shards("ticks")) == len(rows) // 5
    assert job.live["done"] == job.live["tokens"] == len(rows)
    assert group_members(job.pid) == []
    assert runner_pids(cai_home) == []


def test_a_job_that_outlasts_the_grace_period_is_killed(store):
    # The runner checks its SIGTERM flag only between rows; a 3 s row outlasts a 0.5 s grace.
    job = jobs.submit(store, "tick", {"total": 3, "shard_size": 1, "delay_s": 3})
    # Its first progress report (total known) comes just before the first check and sleep;
    # a SIGTERM before that check would stop it cleanly, so give it a moment to get there.
    wait_until(lambda: job.run.status().get("total") == 3, "the first row to begin")
    time.sleep(0.2)

    began = time.monotonic()
    job = jobs.cancel(store, job.id, grace=0.5)
    took = time.monotonic() - began

    assert 0.5 <= took < 2.5
    assert job.status == "cancelled"
    events = job.run.events()
    killed = [e for e in events if e["event"] == "killed"]
    assert len(killed) == 1 and killed[0]["after_s"] == 0.5
    assert "finished" not in event_names(job)  # the runner never got to record an outcome
    assert job.live["state"] == "cancelled"
    assert store.ticks(job.id) == []  # the first row was still sleeping
    assert group_members(job.pid) == []


def test_a_succeeded_job_can_be_neither_cancelled_nor_resumed(store):
    job = finish(store, jobs.submit(store, "tick", {"total": 2, "delay_s": 0}).id)
    with pytest.raises(CaiError, match=r"is succeeded, not running; nothing to cancel"):
        jobs.cancel(store, job.id)
    with pytest.raises(CaiError, match=r"is succeeded; only failed, cancelled, interrupted"):
        jobs.resume(store, job.id)
    job = jobs.get_job(store, job.id)
    assert (job.status, job.attempts) == ("succeeded", 1)
    assert event_names(job) == ["submitted", "started", "finished"]


# -- resume --------------------------------------------------------------------------------


def test_a_cancelled_job_resumes_to_exactly_every_row_once(store):
    job = jobs.submit(store, "tick", {"total": 40, "shard_size": 5, "delay_s": 0.03})
    wait_shards(job, 2)
    job = jobs.cancel(store, job.id)
    kept = len(store.ticks(job.id))
    assert job.status == "cancelled" and 10 <= kept < 40 and kept % 5 == 0
    assert job.live["tokens"] == kept  # tokens count whole shards, so they match the rows

    resumed = jobs.resume(store, job.id)
    assert resumed.status in jobs.ACTIVE
    job = finish(store, job.id)

    assert job.status == "succeeded", job.error
    assert job.attempts == 2
    assert store.ticks(job.id) == squares(40)  # no gaps, no duplicates
    assert (job.live["done"], job.live["total"], job.live["tokens"]) == (40, 40, 40)
    events = job.run.events()
    assert [e["attempt"] for e in events if e["event"] == "started"] == [1, 2]
    assert [e["rows"] for e in events if e["event"] == "resumed_from"] == [kept]
    assert [e["attempt"] for e in events if e["event"] == "resumed"] == [2]
    # Shards continue the numbering: 40 rows / 5 = 8 shards, 000001 ... 000008.
    assert [n for n, _ in job.run.shards("ticks")] == list(range(1, 9))


def test_a_killed_job_shows_running_until_reconciled_then_resumes(store, cai_home):
    job = jobs.submit(store, "tick", {"total": 40, "shard_size": 5, "delay_s": 0.03})
    wait_shards(job, 2)
    pid = jobs.get_job(store, job.id).pid
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), "the killed runner to die")

    # Nothing has looked yet: the row still says running.
    assert jobs.get_job(store, job.id).status == "running"

    (listed,) = jobs.list_jobs(store)  # listing settles it
    assert listed.id == job.id
    assert listed.status == "interrupted"
    assert f"pid {pid}" in listed.error and "resume it to continue" in listed.error
    assert listed.live["state"] == "interrupted"
    assert event_names(listed)[-1] == "reconciled"
    kept = store.ticks(job.id)  # reconcile ingested the whole shards the job left
    assert len(kept) >= 10 and len(kept) % 5 == 0 and kept == squares(len(kept))
    assert jobs.reconcile(store) == []  # settled once; a second pass changes nothing

    jobs.resume(store, job.id)
    job = finish(store, job.id)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2
    assert store.ticks(job.id) == squares(40)  # exactly the keys a clean run writes
    # The row says succeeded a moment before the runner process has finished exiting.
    wait_until(lambda: not runner_pids(cai_home), "the runner to exit", timeout=10)


def test_tokens_stay_exact_when_a_job_dies_right_after_writing_a_shard(store, cai_home):
    job = jobs.submit(store, "tick", {"total": 10, "shard_size": 5, "delay_s": 0.2})
    wait_started(job)
    # Hold the store the way a busy CLI or studio would. The runner then sits in
    # `try_ingest` (up to 5 s) after renaming a shard and before counting its tokens.
    holder = duckdb.connect(str(db_path(cai_home)))
    try:
        wait_shards(job, 1)
        os.killpg(job.pid, signal.SIGKILL)
        wait_until(lambda: not alive(job.pid), "the killed runner to die")
    finally:
        holder.close()
    assert job.run.status()["tokens"] == 0  # the shard of 5 rows was never counted

    assert jobs.reconcile(store) == [job.id]
    jobs.resume(store, job.id)
    job = finish(store, job.id)
    assert job.status == "succeeded", job.error
    assert store.ticks(job.id) == squares(10)
    assert job.live["done"] == 10
    assert job.live["tokens"] == 10  # actually 5: the first shard's rows are never counted


def test_reconcile_does_not_mistake_a_reused_pid_for_the_job(store):
    job = jobs.submit(store, "tick", {"total": 40, "shard_size": 5, "delay_s": 0.05})
    wait_started(job)
    os.killpg(job.pid, signal.SIGKILL)
    wait_until(lambda: not alive(job.pid), "the killed runner to die")

    # After a restart the job's pid belongs to another program.
    other = subprocess.Popen(["sleep", "30"])
    try:
        store.update_job(job.id, pid=other.pid)
        assert jobs.get_job(store, job.id).status == "running"

        assert jobs.reconcile(store) == [job.id]
        job = jobs.get_job(store, job.id)
        assert job.status == "interrupted"
        assert f"pid {other.pid}" in job.error
        assert other.poll() is None and alive(other.pid)  # left alone

        # Cancelling it now signals nothing either: it is no longer active.
        with pytest.raises(CaiError, match="is interrupted, not running"):
            jobs.cancel(store, job.id, grace=0.1)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_job_that_never_got_a_process_is_settled_after_the_start_timeout(store, monkeypatch):
    # What a `submit` that died between recording the job and launching it leaves behind.
    run = RunFolder(runs_dir(store.home) / "tick-orphan")
    config = jobs.validate_config("tick", {"total": 3, "delay_s": 0}).model_dump(mode="json")
    run.create(config)
    run.write_status(state="queued")
    store.insert_job("tick-orphan", "tick", config, str(run.path), None)

    assert jobs.reconcile(store) == []  # young: it may be starting right now
    assert jobs.get_job(store, "tick-orphan").status == "queued"

    monkeypatch.setattr(jobs, "START_TIMEOUT", 0.0)
    assert jobs.reconcile(store) == ["tick-orphan"]
    job = jobs.get_job(store, "tick-orphan")
    assert job.status == "interrupted" and "resume it to continue" in job.error

    jobs.resume(store, job.id)
    job = finish(store, job.id)
    assert job.status == "succeeded", job.error
    assert store.ticks(job.id) == squares(3)


def test_a_dead_job_whose_run_folder_was_deleted_does_not_break_listing(store):
    job = jobs.submit(store, "tick", {"total": 100, "delay_s": 0.05})
    wait_started(job)
    os.killpg(job.pid, signal.SIGKILL)
    wait_until(lambda: not alive(job.pid), "the killed runner to die")
    shutil.rmtree(job.run_dir)  # someone cleaned up runs/ by hand

    (listed,) = jobs.list_jobs(store)
    assert listed.status == "failed"
    assert "run folder" in listed.error and "is gone" in listed.error


# -- concurrency and ingestion -------------------------------------------------------------


def test_two_jobs_run_at_once_each_with_its_own_rows(store):
    a = jobs.submit(store, "tick", {"total": 12, "shard_size": 4, "delay_s": 0.05})
    b = jobs.submit(store, "tick", {"total": 9, "shard_size": 3, "delay_s": 0.05})
    a, b = finish(store, a.id), finish(store, b.id)

    assert (a.status, b.status) == ("succeeded", "succeeded")
    assert store.ticks(a.id) == squares(12)
    assert store.ticks(b.id) == squares(9)

    def span(job):
        times = {e["event"]: e["time"] for e in job.run.events()}
        return times["started"], times["finished"]

    (a0, a1), (b0, b1) = span(a), span(b)
    assert a0 < b1 and b0 < a1, "the two jobs did not overlap"


def test_ingesting_again_adds_nothing(store):
    job = finish(store, jobs.submit(store, "tick", {"total": 6, "shard_size": 2, "delay_s": 0}).id)
    assert job.status == "succeeded"
    ingested = store.ingested_paths(job.id)
    assert len(ingested) == 3

    assert jobs.ingest(store, job) == 0
    (_, first), *_ = job.run.shards("ticks")
    assert store.ingest_shards(job.id, "ticks", [first]) == 0  # by hand, bypassing the record
    assert store.ticks(job.id) == squares(6)
    assert store.ingested_paths(job.id) == ingested


# -- failure -------------------------------------------------------------------------------


def test_a_failing_job_records_its_error_and_keeps_earlier_shards(store):
    config = {"total": 10, "shard_size": 3, "delay_s": 0.01, "fail_at": 7}
    job = finish(store, jobs.submit(store, "tick", config).id)

    assert job.status == "failed"
    assert job.error == "RuntimeError: fail_at=7 reached"
    assert job.live["state"] == "failed" and job.live["error"] == job.error
    log = job.run.log_tail()
    assert "Traceback (most recent call last)" in log
    assert "RuntimeError: fail_at=7 reached" in log
    last = job.run.events()[-1]
    assert (last["event"], last["state"], last["error"]) == ("finished", "failed", job.error)
    # Rows 0-2 and 3-5 made whole shards; row 6 was in the open batch when row 7 raised.
    assert store.ticks(job.id) == squares(6)

    # Resuming runs the same config, so it fails again at the same row and adds nothing.
    jobs.resume(store, job.id)
    job = finish(store, job.id)
    assert job.status == "failed"
    assert job.error == "RuntimeError: fail_at=7 reached"
    assert job.attempts == 2
    assert store.ticks(job.id) == squares(6)
    assert [e["rows"] for e in job.run.events() if e["event"] == "resumed_from"] == [6]


# -- the stage skeleton (JobContext.resume / writer / model) ---------------------------------


class FakeModel:
    """Stands in for a loaded model: the skeleton only asks for its details and closes it."""

    def __init__(self):
        self.closed = False

    def info(self):
        return ModelInfo(spec="fake", backend="fake", details={"device": "cpu"})

    def close(self):
        self.closed = True


def test_the_stage_skeleton_resumes_keeps_rows_on_failure_and_always_closes_the_model(
    store, monkeypatch
):
    job = finish(store, jobs.submit(store, "tick", {"total": 4, "shard_size": 2, "delay_s": 0}).id)
    ctx = JobContext(store, job, jobs.get_kind("tick"))

    # resume: the shards' rows and keys; progress restarts from them (4 of 6, tokens = 0+1+4+9)
    previous = ctx.resume("ticks", key=("i",), total=6, tokens="value")
    assert previous.done == {(0,), (1,), (2,), (3,)}
    assert previous.pending([{"i": 3}, {"i": 4}]) == [{"i": 4}]
    assert (ctx.run.status()["done"], ctx.run.status()["total"], ctx.tokens) == (4, 6, 14)

    # writer: a failure inside the block still writes what was added, and counts it
    with pytest.raises(RuntimeError), ctx.writer("ticks", flush_rows=100, done=4) as out:
        out.add([{"job_id": job.id, "i": 4, "value": 16}])
        raise RuntimeError("the model server went away")
    assert sorted(r["i"] for r in job.run.read_shard_rows("ticks")) == [0, 1, 2, 3, 4]
    assert ctx.run.status()["done"] == 5

    # model: loaded with an event, closed on the way out, also on failure; lazy: only if used
    loaded = []
    monkeypatch.setattr(
        "cai_engine.runner.load_model", lambda spec, home: loaded.append(FakeModel()) or loaded[-1]
    )
    with pytest.raises(RuntimeError), ctx.model("fake", model="fake") as model:
        raise RuntimeError("cancelled mid-batch")
    assert model.closed
    with ctx.lazy_model("fake", "judge_loaded") as judge:
        pass
    assert len(loaded) == 1
    with ctx.lazy_model("fake", "judge_loaded") as judge:
        assert judge() is judge()
    assert len(loaded) == 2 and loaded[1].closed
    events = [e for e in job.run.events() if e["event"] in ("model_loaded", "judge_loaded")]
    assert [(e["event"], e.get("model"), e["device"]) for e in events] == [
        ("model_loaded", "fake", "cpu"),
        ("judge_loaded", None, "cpu"),
    ]


# -- the CLI -------------------------------------------------------------------------------


def cai(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_submit_list_show_logs_and_refusals(store, capsys):
    rc, out, _ = cai(
        capsys, "jobs", "submit", "tick", "--set", "total=6", "--set", "delay_s=0.01", "--wait"
    )
    assert rc == 0, out
    first = out.splitlines()[0]
    assert first.startswith("submitted tick-")
    job_id = first.removeprefix("submitted ")
    assert out.splitlines()[-1] == f"{job_id} succeeded"
    assert store.ticks(job_id) == squares(6)

    rc, out, _ = cai(capsys, "jobs", "list")
    assert rc == 0
    (row,) = [line.split() for line in out.splitlines() if line.startswith(job_id)]
    assert row[:4] == [job_id, "tick", "succeeded", "6/6"]

    rc, out, _ = cai(capsys, "jobs", "show", job_id)
    assert rc == 0
    assert "status:    succeeded" in out
    assert 'config:    {"delay_s": 0.01, "fail_at": null, "shard_size": 5, "total": 6}' in out
    shown = [line.split()[1] for line in out.split("events:\n", 1)[1].splitlines()]
    assert shown == ["submitted", "started", "finished"]

    rc, out, _ = cai(capsys, "jobs", "logs", job_id)
    assert rc == 0
    assert f"{job_id}: started (attempt 1)" in out and f"{job_id}: succeeded" in out

    rc, out, err = cai(capsys, "jobs", "cancel", job_id)
    assert (rc, out) == (1, "")
    assert err == f"error: job {job_id} is succeeded, not running; nothing to cancel\n"

    rc, out, err = cai(capsys, "jobs", "resume", job_id)
    assert (rc, out) == (1, "")
    assert err.startswith(f"error: job {job_id} is succeeded; only failed") and err.count("\n") == 1


def test_cli_submit_refuses_a_bad_value_in_one_line(store, capsys):
    rc, out, err = cai(capsys, "jobs", "submit", "tick", "--set", "total=-1")
    assert (rc, out) == (1, "")
    assert err.startswith("error: invalid tick job config: total:") and err.count("\n") == 1
    assert job_count(store) == 0


def test_cli_logs_follow_returns_when_the_job_ends(store, capsys):
    job = jobs.submit(store, "tick", {"total": 10, "shard_size": 5, "delay_s": 0.1})
    wait_started(job)
    result = {}
    follower = threading.Thread(
        target=lambda: result.update(rc=main(["jobs", "logs", job.id, "-f"]))
    )
    follower.start()
    follower.join(DEADLINE)
    assert not follower.is_alive(), "`jobs logs -f` did not return after the job ended"
    out, _ = capsys.readouterr()

    assert result["rc"] == 0
    assert jobs.get_job(store, job.id).status == "succeeded"
    assert f"{job.id}: started (attempt 1)" in out
    assert out.rstrip().endswith(f"{job.id}: succeeded")  # the log to its last line


# -- reading run folders -------------------------------------------------------------------


def test_events_skip_a_torn_last_line_until_it_is_complete(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.create({})
    run.event("a")
    run.event("b", n=1)
    with open(run.events_path, "a") as f:
        f.write('{"time": 1.0, "event": "c"')  # a writer mid-line, or one that crashed
    assert [e["event"] for e in run.events()] == ["a", "b"]
    assert run.events()[1]["n"] == 1

    with open(run.events_path, "a") as f:
        f.write("}\n")
    run.event("d")
    assert [e["event"] for e in run.events()] == ["a", "b", "c", "d"]
    assert [e["event"] for e in run.events(limit=2)] == ["c", "d"]


def test_a_garbled_line_in_the_middle_is_skipped_and_the_rest_read(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.create({})
    run.event("a")
    with open(run.events_path, "a") as f:
        f.write('{"time": 1.0, "ev\n')  # torn by a crash, then appended after
    run.event("b")
    assert [e["event"] for e in run.events()] == ["a", "b"]


def test_status_of_a_missing_or_half_written_file_is_empty(tmp_path):
    run = RunFolder(tmp_path / "nowhere")
    assert run.status() == {}
    assert run.events() == [] and run.metrics() == []
    assert run.shards("ticks") == [] and run.tables() == []
    assert run.log_tail() == ""

    run.create({})
    run.status_path.write_text('{"state": "runn')
    assert run.status() == {}
    run.write_status(state="running", done=3)
    assert run.status()["done"] == 3


def test_shards_written_while_the_store_is_locked_are_ingested_by_the_next_reader(store, cai_home):
    job = jobs.submit(store, "tick", {"total": 40, "shard_size": 5, "delay_s": 0.1})
    wait_started(job)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('ok', flush=True); time.sleep(60)",
         str(db_path(cai_home))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ok"
        wait_shards(job, 2)  # the job goes on writing shards; it cannot ingest them
    finally:
        holder.kill()
        holder.wait()
    jobs.list_jobs(store)  # a reader: ingests whatever complete shards exist right now
    rows = store.ticks(job.id)
    assert len(rows) >= 10 and len(rows) % 5 == 0  # whole shards only
    assert rows == squares(len(rows))
    assert finish(store, job.id).status == "succeeded"
    assert store.ticks(job.id) == squares(40)


def test_a_prompt_longer_than_the_context_is_truncated_with_an_event(seeded_store, tiny_model_dir):
    long = "Please read this carefully. " * 60  # about 360 tokens
    seeded_store.add_prompts(
        "long",
        [Prompt("p-long", [{"role": "user", "content": long}])],
        split_seed=1,
        test_fraction=0.0,
    )
    spec = f"hf:{tiny_model_dir}?dtype=float32&max_context=128"
    job = jobs.submit(
        seeded_store,
        "generate",
        {"prompts": "long", "model": spec, "sampling": {"max_new_tokens": 8}},
    )
    job = finish(seeded_store, job.id)
    assert job.status == "succeeded", job.error
    (row,) = seeded_store.generations(job.id)
    assert row["prompt_tokens"] == 120  # 128 - 8 new tokens
    truncated = [e for e in job.run.events() if e["event"] == "truncated"]
    assert truncated and truncated[0]["prompt_id"] == "p-long"
    assert truncated[0]["tokens"] == row["truncated_tokens"] > 200


# -- many jobs: a page at a time --------------------------------------------------------------

MANY_KINDS, many_jobs = synthetic.MANY_KINDS, synthetic.many_jobs  # tests/ui imports them here


def many_id(i: int) -> str:
    return f"{MANY_KINDS[i % 3]}-{i:06d}"


def test_a_page_of_ten_thousand_jobs_is_the_newest_and_pages_follow_without_a_gap(store):
    many_jobs(store)
    page, total = jobs.job_page(store, limit=50)
    assert total == 10_000
    assert [j.id for j in page] == [many_id(i) for i in range(9_999, 9_949, -1)]
    seen = [j.id for j in page]
    for _ in range(2):
        page, total = jobs.job_page(store, after=page[-1].cursor, limit=50)
        seen += [j.id for j in page]
    assert seen == [many_id(i) for i in range(9_999, 9_849, -1)]  # 150, newest first
    # a deep page costs one keyset step: the 50 after job 100 are 99..50
    deep = jobs.get_job(store, many_id(100))
    page, _ = jobs.job_page(store, after=deep.cursor, limit=50)
    assert [j.id for j in page] == [many_id(i) for i in range(99, 49, -1)]
    page, _ = jobs.job_page(store, after=jobs.get_job(store, many_id(1)).cursor, limit=50)
    assert [j.id for j in page] == [many_id(0)]


def test_filters_and_counts_of_ten_thousand_jobs(store):
    many_jobs(store)
    # kind eval (i % 3 == 1) and failed (i % 4 == 1): i % 12 == 1 -> 1, 13, ..., 9_997: 834
    page, total = jobs.job_page(store, kind="eval", statuses=["failed"], limit=3)
    assert total == 834
    assert [j.id for j in page] == [many_id(i) for i in (9_997, 9_985, 9_973)]
    assert all((j.kind, j.status) == ("eval", "failed") for j in page)
    # two kinds in two statuses: i % 3 in (0, 2) and i % 4 in (2, 3), so i % 12 in (2, 3, 6,
    # 11): 833 whole cycles of 12 give 3,332, and 9,998 and 9,999 two more
    _, total = jobs.job_page(
        store, kind=["critique", "tick"], statuses=["cancelled", "interrupted"], limit=1
    )
    assert total == 3_334
    assert jobs.job_counts(store) == {
        "total": 10_000,
        "status": dict.fromkeys(sorted(synthetic.MANY_STATUSES), 2_500),  # 2,500 each, then by name
        "kind": {"critique": 3_334, "eval": 3_333, "tick": 3_333},  # i % 3 == 0 has one more
    }


@pytest.mark.parametrize(
    "search, found",
    [
        ("eval-00999", [9_997, 9_994, 9_991]),  # an id's part: 9_990..9_999 of kind eval
        ("label 999", [9_990]),  # a label's part, case-insensitive: Label 9990
        ("  LABEL 99  ", [9_990, 9_980, 9_970, 9_960, 9_950]),  # 990, 9_900..9_990: 11
        ("%", []),  # no character is a pattern
        ("_", []),
        ("eval-.*", []),
        ("0999[0-9]", []),
    ],
)
def test_searching_ten_thousand_jobs_by_id_or_label_is_plain_text(store, search, found):
    many_jobs(store)
    page, total = jobs.job_page(store, search=search, limit=5)
    assert [j.id for j in page] == [many_id(i) for i in found]
    assert total == {"  LABEL 99  ": 11}.get(search, len(found))


def test_a_search_longer_than_the_limit_is_an_error_not_a_scan(store):
    with pytest.raises(
        CaiError, match="search the jobs: 10,000 characters; search for at most 200"
    ):
        jobs.job_page(store, search="x" * 10_000)


def test_listing_jobs_reads_no_run_folder_until_a_jobs_progress_is_asked_for(store, monkeypatch):
    many_jobs(store, 500)
    reads = []
    real = RunFolder.status
    monkeypatch.setattr(RunFolder, "status", lambda self: reads.append(self.path) or real(self))
    listed = jobs.list_jobs(store, kind="eval")
    assert len(listed) == 167  # i % 3 == 1 below 500
    page, _ = jobs.job_page(store, limit=50)
    assert reads == []  # a picker of 200 jobs, a page of 50: no status file read
    assert (page[0].done, page[0].total, page[0].live) == (0, None, {})
    assert reads == [page[0].run.path]  # read once, when asked for, and kept
    assert jobs.list_jobs(store, kind=["eval", "tick"], limit=None)[-1].id == many_id(1)
