"""Crash torture (issue 8): jobs and the store killed with SIGKILL at random points.

1. A critique job and a label job (the tiny random model, one conversation per forward pass,
   one row per shard) are each killed 10 times, while a clean run of the same config runs
   alongside. A seeded `random.Random` aims 3 kills at the start-up (a moment between the
   (re)start and the job's start-up time: importing, reading the shards, loading the model)
   and 7 at the work (a moment within a tenth of the job's work time, its rows times its
   fastest pace per row, after the attempt loaded its model). The whole process group gets
   SIGKILL; the job is reconciled and resumed. After every kill the store holds exactly the
   rows of the complete shards (every recorded shard is a complete Parquet file under its
   final name, every key once across the shards); once the job succeeds it holds the same
   natural keys as the clean run with the same texts and scores, no gaps, no duplicates.
   At least 5 of the 10 kills must land mid-run (after the attempt loaded its model, before
   the job's rows were all written), so the test cannot pass by killing nothing; a kill
   after the job finished ends the kills.
2. An SFT job is killed inside a checkpoint save: the run folder is polled every 2 ms for a
   `checkpoint-N` folder without its `trainer_state.json` (written last; `complete_checkpoints`
   treats such a folder as incomplete) while an older complete checkpoint exists, and the
   group is killed right then. A save takes about 150 ms on the tiny model; if the save still
   won the race, the job is resumed and the next save is tried. The previous complete
   checkpoint must still load with transformers, its trainer_state.json must parse, and
   `jobs.resume` must finish the job from it with every step logged once. A second job is
   killed inside its first save (no complete checkpoint yet) and must restart from scratch
   with every step logged once.
3. The store is killed during ingestion (a `python -c` child ingesting shards through
   `Store.ingest_shards`, a few shards per unit of work, or all pending ones in one) and
   during migrations (a fresh home, and a home with user data whose last migrations are still
   pending). Each next open must be consistent: every recorded shard's rows are present and
   no row of an unrecorded shard; a unit of work is recorded whole or not at all; every
   recorded migration has its tables and no unrecorded one has any; and the user's
   constitution versions and reviews are identical to before.
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from cai_engine import critique, jobs
from cai_engine.constitution import Constitution
from cai_engine.home import db_path, runs_dir
from cai_engine.labels import submit_labels
from cai_engine.pairs import submit_pairs
from cai_engine.runs import SHARD_NAME, RunFolder
from cai_engine.store import Store
from cai_engine.store.core import DUCKDB_HEADERS, Conn
from cai_engine.store.migrations import MIGRATIONS
from cai_engine.training import jobs as training_jobs
from cai_engine.training.run import checkpoint_step, complete_checkpoints
from tests.conftest import ROOT
from tests.runners import alive, finish, kill_runners, wait_until

DEADLINE = 120.0  # seconds any one wait on a job may take (two busy cores)
KILLS = 10  # kills per tortured job
MID_RUN_AT_LEAST = 5  # kills that must land mid-run, so the test cannot pass vacuously
EARLY = 3  # kills aimed at the start-up; the others are aimed at the work
EXCLUDED = {"job_id", "latency_s"}  # which job wrote a row, and how long it took


@pytest.fixture(autouse=True)
def reap_runners(cai_home):
    yield
    kill_runners(cai_home)


# -- helpers ---------------------------------------------------------------------------------


def stored(store: Store, table: str, job_id: str) -> list[dict]:
    """Every row of `table` that belongs to `job_id`, as dicts."""
    with store.connect() as con:
        cur = con.raw.execute(f"SELECT * FROM {table} WHERE job_id = ?", [job_id])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in EXCLUDED}


def events_named(job: jobs.Job, name: str) -> list[dict]:
    return [e for e in job.run.events() if e.get("event") == name]


def check_shards_and_rows(store: Store, job: jobs.Job, table: str, key: tuple[str, ...]):
    """The store holds exactly the rows of the job's complete shards, each once; every shard
    it recorded is a complete Parquet file under its final name. Returns the stored rows."""
    with store.connect() as con:
        recorded = con.rows(
            "SELECT path, tbl, rows FROM ingested_shards WHERE job_id = ? ORDER BY path", [job.id]
        )
    folder = job.run.shard_dir(table)
    for rel, tbl, rows in recorded:
        path = store.home / rel
        assert tbl == table, rel
        assert SHARD_NAME.match(path.name) and path.parent == folder, (
            f"{rel}: a recorded shard that is not a complete shard's final name"
        )
        assert path.is_file(), f"{rel}: recorded as ingested but missing"
        assert pq.read_metadata(path).num_rows == rows, f"{rel}: recorded {rows} rows"
    complete = {str(p.resolve().relative_to(store.home)) for _, p in job.run.shards(table)}
    assert {r[0] for r in recorded} == complete, "a complete shard was not ingested"

    written = Counter(tuple(r[k] for k in key) for r in job.run.read_shard_rows(table))
    doubled = [k for k, n in written.items() if n > 1]
    assert not doubled, f"keys written to more than one shard: {doubled[:5]}"
    rows = stored(store, table, job.id)
    keys = Counter(tuple(r[k] for k in key) for r in rows)
    assert max(keys.values(), default=1) == 1
    assert set(keys) == set(written), "the store's keys differ from the shards' keys"
    assert sum(r[2] for r in recorded) == len(rows)
    return rows


def assert_same_rows(got: list[dict], want: list[dict], key: tuple[str, ...]):
    """`got` equals `want` row for row: the same natural keys, the same values."""
    got_by = {tuple(r[k] for k in key): comparable(r) for r in got}
    want_by = {tuple(r[k] for k in key): comparable(r) for r in want}
    extra = set(got_by) - set(want_by)
    assert not extra, f"keys a clean run does not have: {sorted(extra)[:5]}"
    missing = set(want_by) - set(got_by)
    assert not missing, f"gaps: {sorted(missing)[:5]}"
    for k, row in got_by.items():
        assert row == want_by[k], f"{k} differs from the clean run"


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended on its own just now
    wait_until(lambda: not alive(pid), f"the killed job process {pid} to die", timeout=10)


def torture(store, job, *, table, key, seed) -> tuple[Counter, float, float]:
    """Kill `job` KILLS times at seeded random points, reconciling, checking and resuming
    after each kill. A point aimed at the start-up is a moment between the (re)start and the
    job's start-up time; one aimed at the work is a moment within a tenth of the job's work
    time (its rows times its fastest pace so far) after the attempt loaded its model. The
    pace comes from the job itself (the clean run beside it competes for the same store, so
    its pace is not this job's), which is why the first kill is aimed at the work and waits
    for the attempt's first row. Returns how the kills landed, the start-up and the pace."""
    rng = random.Random(seed)
    aims = ["start-up"] * EARLY + ["work"] * (KILLS - EARLY - 1)
    rng.shuffle(aims)
    landed = Counter()
    launched, loaded_before, rows_before = time.time(), 0, 0
    startup = pace = None  # seconds to load the model; seconds per row, the fastest seen
    for aim in ["work", *aims]:
        pid = jobs.get_job(store, job.id).pid
        anchor = None
        if aim == "start-up":
            at = launched + rng.uniform(0, startup)
        else:
            wait_until(
                lambda pid=pid, n=loaded_before: (
                    len(events_named(job, "model_loaded")) > n or not alive(pid)
                ),
                "the job to load its model",
                timeout=DEADLINE,
            )
            loads = events_named(job, "model_loaded")[loaded_before:]
            anchor = loads[0]["time"] if loads else time.time()
            startup = startup or anchor - launched
            if pace is None:  # the first attempt: its first row gives the pace
                wait_until(
                    lambda pid=pid: job.run.shards(table) or not alive(pid),
                    "the job's first row",
                    timeout=DEADLINE,
                )
                pace = time.time() - anchor
            total = job.run.status().get("total") or 0
            at = anchor + rng.uniform(0, pace * total / KILLS)
        time.sleep(max(0.0, at - time.time()))
        loaded = len(events_named(job, "model_loaded")) > loaded_before
        killed_at = time.time()
        kill_group(pid)
        jobs.reconcile(store)
        state = jobs.get_job(store, job.id)
        rows = check_shards_and_rows(store, state, table, key)
        if state.status == "succeeded":
            landed["after the end"] += 1
            break
        assert state.status == "interrupted", (state.status, state.error)
        if not loaded:
            landed["during start-up"] += 1
        elif len(rows) < (state.live.get("total") or 0):
            landed["mid-run"] += 1
        else:
            landed["while finishing"] += 1
        if anchor is not None and len(rows) > rows_before:
            pace = min(pace, (killed_at - anchor) / (len(rows) - rows_before))
        loaded_before = len(events_named(job, "model_loaded"))
        rows_before = len(rows)
        launched = time.time()
        jobs.resume(store, job.id)
    return landed, startup, pace


def run_torture(store, submit, *, table, key, seed):
    """The same config twice, side by side: one clean run and one tortured; both end with
    the same rows."""
    clean, job = submit(), submit()
    landed, startup, pace = torture(store, job, table=table, key=key, seed=seed)
    clean = finish(store, clean.id, timeout=DEADLINE)
    assert clean.status == "succeeded", clean.error
    want = check_shards_and_rows(store, clean, table, key)
    job = finish(store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error
    got = check_shards_and_rows(store, job, table, key)
    assert len(got) == len(want)
    assert_same_rows(got, want, key)
    assert (job.live["done"], job.live["total"]) == (len(want), len(want))
    leftovers = list(job.run.shard_dir(table).glob("*.tmp"))
    print(
        f"\n{job.id}: kills {dict(landed)}; {job.attempts} attempts; start-up {startup:.1f}s, "
        f"{pace:.2f}s a row, {len(want)} rows; {len(leftovers)} half-written shard(s) left"
    )
    assert landed["mid-run"] >= MID_RUN_AT_LEAST, f"too few kills landed mid-run: {landed}"


# -- 1. critique and label jobs killed at random points --------------------------------------


def test_a_critique_job_killed_ten_times_ends_with_exactly_a_clean_runs_rows(
    seeded_store, peaked_model_dir
):
    """The clean run keeps each trace's keys between steps; a resumed one computes them again
    from the text: the peaked tiny model, whose draws float rounding does not move."""
    config = {
        "constitution": "harmless",
        "prompts": "red-team:train",
        "model": f"hf:{peaked_model_dir}?dtype=float32&batch_size=1",
        "limit": 5,
        "rounds": 2,
        "few_shots": 0,
        "shard_rows": 1,
        "sampling": {"max_new_tokens": 8},
    }
    run_torture(
        seeded_store,
        lambda: critique.submit(seeded_store, config),
        table="traces",
        key=("prompt_id", "sample", "round", "step"),
        seed=8,
    )


@pytest.fixture
def pairs_job(seeded_store, tiny_spec):
    """6 prompts x 4 samples: 36 pairs for the label jobs (a label takes about as long as
    killing takes to land, so the job needs more rows than the critique job to outlast ten
    kills)."""
    job = submit_pairs(
        seeded_store,
        {
            "prompts": "red-team:train",
            "model": tiny_spec,
            "samples": 4,
            "limit": 6,
            "sampling": {"max_new_tokens": 4},
        },
    )
    job = finish(seeded_store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error
    return job


def test_a_label_job_killed_ten_times_ends_with_exactly_a_clean_runs_labels(
    seeded_store, pairs_job, tiny_model_dir
):
    config = {
        "pairs": pairs_job.id,
        "constitution": "harmless",
        "model": f"hf:{tiny_model_dir}?dtype=float32&batch_size=1",
        "few_shots": 0,
        "batch_pairs": 1,
        # the labels are what is tortured here; a check killed mid-way is test_judge_check's
        "judge_check": False,
    }
    run_torture(
        seeded_store,
        lambda: submit_labels(seeded_store, config),
        table="labels",
        key=("prompt_id", "pair"),
        seed=9,
    )


# -- 2. a training job killed inside a checkpoint save ----------------------------------------


def write_sft_export(folder: Path, n: int = 16) -> Path:
    """An export folder as `cai export sft` writes it."""
    folder.mkdir(parents=True)
    with open(folder / "data.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            messages = [
                {"role": "user", "content": f"Question {i}: how do I stay safe online?"},
                {"role": "assistant", "content": f"Answer {i}: use strong passwords."},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    manifest = {
        "kind": "sft",
        "job": "sft-test",
        "constitution_hash": "sha256:test",
        "examples": n,
        "files": ["data.jsonl"],
        "format": "jsonl",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def saving(folder: Path, after_a_complete_one: bool) -> Path | None:
    """A checkpoint being written (no trainer_state.json yet): one with an older complete
    checkpoint beside it, or the first one."""
    if not folder.is_dir():
        return None
    done = [checkpoint_step(p) for p in complete_checkpoints(folder)]
    for entry in os.scandir(folder):
        step = entry.name.removeprefix("checkpoint-")
        if (
            step.isdigit()
            and entry.is_dir()
            and not os.path.exists(os.path.join(entry.path, "trainer_state.json"))
            and any(d < int(step) for d in done) == after_a_complete_one
        ):
            return Path(entry.path)
    return None


def submit_sft(store, tmp_path, tiny_model_dir, steps: int):
    return training_jobs.submit(
        store,
        "sft",
        {
            "data": str(write_sft_export(tmp_path / "sft")),
            "model": f"hf:{tiny_model_dir}",
            "max_steps": steps,
            "save_steps": 2,
            "batch_size": 2,
            "grad_accum": 1,
            "learning_rate": 1e-3,
            "eval_fraction": 0,
            "sample_every": 0,
            "sample_prompts": 0,
            "precision": "fp32",
        },
    )


def kill_inside_a_save(store, job, after_a_complete_one: bool) -> tuple[Path, list[str]]:
    """Poll for a save in progress and SIGKILL the job's group right then. A save takes
    about 150 ms on the tiny model; if it still wins the race, resume and try the next one.
    Returns the cut checkpoint and the files it was left with."""
    folder = job.run.path / "checkpoints"
    for _ in range(3):
        pid = jobs.get_job(store, job.id).pid
        target = wait_until(
            lambda pid=pid: saving(folder, after_a_complete_one) or (not alive(pid) and "ended"),
            "a checkpoint save to start",
            timeout=DEADLINE,
            poll=0.002,
        )
        if target == "ended":
            break
        kill_group(pid)
        if not (target / "trainer_state.json").exists():
            return target, sorted(os.listdir(target))
        jobs.reconcile(store)
        jobs.resume(store, job.id)
    raise AssertionError("no kill landed inside a checkpoint save in 3 tries")


def loss_steps(job: jobs.Job) -> list[int]:
    return [m["step"] for m in job.run.metrics() if "loss" in m]


def test_a_training_job_killed_inside_a_checkpoint_save_resumes_from_the_last_complete_one(
    store, tiny_model_dir, tmp_path
):
    from transformers import AutoModelForCausalLM

    steps = 8
    job = submit_sft(store, tmp_path, tiny_model_dir, steps)
    folder = job.run.path / "checkpoints"
    cut, left = kill_inside_a_save(store, job, after_a_complete_one=True)

    assert jobs.reconcile(store) == [job.id]
    assert jobs.get_job(store, job.id).status == "interrupted"
    kept = complete_checkpoints(folder)
    assert cut not in kept, f"{cut.name} ({left}) is treated as complete"
    previous = kept[-1]
    state = json.loads((previous / "trainer_state.json").read_text())
    assert state["global_step"] == checkpoint_step(previous) < int(cut.name.split("-")[1])
    model = AutoModelForCausalLM.from_pretrained(previous)
    assert all(p.isfinite().all() for p in model.parameters())
    del model

    jobs.resume(store, job.id)
    job = finish(store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error
    resuming = events_named(job, "resuming")[-1]
    assert (resuming["checkpoint"], resuming["step"]) == (previous.name, state["global_step"])
    assert loss_steps(job) == list(range(1, steps + 1)), "steps lost or logged twice"
    assert [m["step"] for m in job.run.metrics() if m.get("final")] == [steps]
    assert checkpoint_step(complete_checkpoints(folder)[-1]) == steps
    assert store.model_named(job.id) is not None, "the trained model was not registered"
    print(
        f"\n{job.id}: killed inside the save of {cut.name} (it held {left}); resumed from "
        f"{previous.name}"
    )


def test_a_training_job_killed_inside_its_first_checkpoint_save_restarts_with_each_step_once(
    store, tiny_model_dir, tmp_path
):
    steps = 4
    job = submit_sft(store, tmp_path, tiny_model_dir, steps)
    folder = job.run.path / "checkpoints"
    cut, left = kill_inside_a_save(store, job, after_a_complete_one=False)
    assert jobs.reconcile(store) == [job.id]
    assert complete_checkpoints(folder) == [], f"{cut.name} ({left}) is treated as complete"

    jobs.resume(store, job.id)
    job = finish(store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error
    assert not events_named(job, "resuming"), "resumed from a checkpoint that was cut"
    assert checkpoint_step(complete_checkpoints(folder)[-1]) == steps
    assert store.model_named(job.id) is not None, "the trained model was not registered"
    assert loss_steps(job) == list(range(1, steps + 1)), "steps lost or logged twice"


# -- 3. the store killed during ingestion and migration --------------------------------------

USER_CONSTITUTION = """\
name: mine
principles:
  - id: kind
    title: Kind
    critique_request: Say how the answer was unkind.
    revision_request: Rewrite it kindly.
    preference_question: Which response is kinder?
"""


def add_user_data(store: Store) -> None:
    """Two versions of the user's own constitution and a few reviews."""
    data = yaml.safe_load(USER_CONSTITUTION)
    first, _ = store.save_constitution(Constitution.model_validate(data), note="first")
    data["principles"][0]["title"] = "Kindness"
    store.save_constitution(
        Constitution.model_validate(data), note="second", parent_hash=first.hash
    )
    for prompt_id, pair, verdict in (("p1", 0, "A"), ("p1", 1, "B"), ("p2", 0, "tie")):
        store.add_review("label-x", prompt_id, pair, "ann", verdict, "AB", note=f"{verdict}!")


def user_data(store: Store) -> tuple:
    return store.list_versions("mine"), store.reviews("label-x")


class Child:
    """A `python -c` child whose stdout lines arrive on a queue (reads never block)."""

    def __init__(self, code: str, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(ROOT),
            start_new_session=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = 30) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the child printed nothing for {timeout:.0f}s") from None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


INGEST = """
import sys
from pathlib import Path
from cai_engine.runs import RunFolder
from cai_engine.store import Store
home, job_id, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
store = Store(home, lock_timeout=30)
done = store.ingested_paths(job_id)
pending = [
    p for _, p in RunFolder(home / "runs" / job_id).shards("ticks")
    if str(p.resolve().relative_to(home)) not in done
]
print("ready", flush=True)
for i in range(0, len(pending), batch):
    store.ingest_shards(job_id, "ticks", pending[i : i + batch])
    print("unit", flush=True)
print("done", flush=True)
"""

SHARDS, ROWS_PER_SHARD, BATCH = 60, 50, 3


def check_ingestion(store: Store, run: RunFolder, job_id: str) -> int:
    """Every recorded shard's rows are present, none from an unrecorded shard; returns the
    number of shards recorded."""
    with store.connect() as con:
        recorded = {
            r[0] for r in con.rows("SELECT path FROM ingested_shards WHERE job_id = ?", [job_id])
        }
        rows = set(con.rows("SELECT i, value FROM ticks WHERE job_id = ?", [job_id]))
    want = set()
    for _, path in run.shards("ticks"):
        if str(path.resolve().relative_to(store.home)) in recorded:
            want |= {(r["i"], r["value"]) for r in pq.read_table(path).to_pylist()}
    assert rows == want, (
        f"{len(recorded)} shards recorded but {len(rows)} rows present "
        f"(want {len(want)}): the rows and the record of a shard were not committed together"
    )
    return len(recorded)


def test_a_store_killed_during_ingestion_reopens_consistent_with_user_data_intact(store, cai_home):
    add_user_data(store)
    before = user_data(store)
    job_id = "tick-torture"
    run = RunFolder(runs_dir(cai_home) / job_id)
    run.create({})
    store.insert_job(job_id, "tick", {}, str(run.path), None)
    store.update_job(job_id, status="succeeded")
    for s in range(SHARDS):
        base = s * ROWS_PER_SHARD
        run.write_shard(
            "ticks",
            [
                {"job_id": job_id, "i": base + k, "value": 7 * (base + k)}
                for k in range(ROWS_PER_SHARD)
            ],
        )

    rng = random.Random(3)
    landed = Counter()
    per_shard = 0.03  # seconds a shard takes to ingest; replaced by what is measured
    # Six kills with a few shards per unit of work, then two with every pending shard in one.
    for batch in [BATCH] * 6 + [SHARDS] * 2:
        had = check_ingestion(store, run, job_id)
        child = Child(INGEST, str(cai_home), job_id, str(batch))
        try:
            assert child.line() == "ready"
            last = time.monotonic()
            for _ in range(rng.randint(0, 3) if batch == BATCH else 0):
                if child.line() != "unit":
                    break
                now = time.monotonic()
                per_shard, last = (now - last) / BATCH, now
            time.sleep(rng.uniform(0, per_shard * min(batch, SHARDS - had)))
            wal = Path(f"{db_path(cai_home)}.wal").exists()  # killed with the database open
        finally:
            child.kill()
        now = check_ingestion(store, run, job_id)
        assert now == SHARDS or (now - had) % batch == 0, (
            f"{now - had} shards recorded from units of {batch}: a unit was recorded in part"
        )
        assert user_data(store) == before, "the user's constitutions or reviews changed"
        if had < now < SHARDS or (had == now < SHARDS and wal):
            landed["mid-ingestion"] += 1
        else:
            landed["before or after"] += 1
    print(f"\ningestion kills: {dict(landed)}")
    assert landed["mid-ingestion"] >= 3, landed

    child = Child(INGEST, str(cai_home), job_id, str(BATCH))  # the rest, uninterrupted
    assert child.proc.wait(timeout=60) == 0
    assert check_ingestion(store, run, job_id) == SHARDS
    assert len(stored(store, "ticks", job_id)) == SHARDS * ROWS_PER_SHARD
    assert user_data(store) == before


# The child announces each migration as it starts it (the list is wrapped in place), so the
# parent can kill it inside a chosen one, whatever the load on the machine.
MIGRATE = """
import sys
import cai_engine.store.core as core
from cai_engine.store import Store

def announced(fn):
    def run(con):
        print("migrating", fn.__name__, flush=True)
        fn(con)
    run.__name__ = fn.__name__
    return run

core.MIGRATIONS[:] = [announced(fn) for fn in core.MIGRATIONS]
print("ready", flush=True)
Store(sys.argv[1]).applied_migrations()
print("done", flush=True)
"""


def tables_of_each_migration() -> dict[str, set[str]]:
    out, seen = {}, set()
    con = Conn(duckdb.connect())
    for fn in MIGRATIONS:
        fn(con)
        now = {r[0] for r in con.rows("SELECT table_name FROM duckdb_tables()")}
        out[fn.__name__] = now - seen
        seen = now
    con.raw.close()
    return out


def state_left(home: Path, scratch: Path) -> tuple[set[str], set[str]] | None:
    """(recorded migrations, tables) as the kill left them, read from a copy (so that this
    look neither migrates nor checkpoints the original); None when no database was made."""
    source = db_path(home)
    if not source.exists():
        return None
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    for f in home.glob(f"{source.name}*"):
        shutil.copy(f, scratch / f.name)
    try:
        con = duckdb.connect(str(scratch / source.name))
    except duckdb.IOException as e:
        # Killed while DuckDB was creating the file: at most its headers, partly written, and
        # no data; the next Store open sets it aside and creates the store anew (checked by
        # the caller, which opens the real home next).
        unborn = source.stat().st_size <= DUCKDB_HEADERS and not Path(f"{source}.wal").exists()
        if "not a valid DuckDB database file" in str(e) and unborn:
            return None
        raise
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        names = set()
        if "schema_migrations" in tables:
            names = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
        return names, tables
    finally:
        con.close()


def test_a_store_killed_during_migration_reopens_fully_migrated_with_user_data_intact(
    tmp_path, monkeypatch
):
    made_by = tables_of_each_migration()
    everything = [fn.__name__ for fn in MIGRATIONS]
    rng = random.Random(5)
    landed = Counter()
    for n in range(12):
        home = tmp_path / f"home-{n}"
        before = None
        if n % 3 == 2:  # a home made by an older version: user data, migrations pending
            with monkeypatch.context() as m:
                m.setattr("cai_engine.store.core.MIGRATIONS", MIGRATIONS[:2])
                old = Store(home)
                add_user_data(old)
                before = user_data(old)
                assert old.applied_migrations() == everything[:2]
        pending = everything[2:] if before is not None else everything
        # Most kills go inside a pending migration (right after it starts, or a moment into
        # it); every fourth goes at a random moment of the whole run instead.
        target = rng.choice(pending) if n % 4 != 3 else None
        child = Child(MIGRATE, str(home))
        try:
            assert child.line() == "ready"
            if target is None:
                time.sleep(rng.uniform(0, 0.3))
            else:
                while child.line() not in (f"migrating {target}", "done", None):
                    pass
                time.sleep(rng.choice([0, rng.uniform(0, 0.01)]))
        finally:
            child.kill()

        left = state_left(home, tmp_path / "scratch")
        if left is None:
            landed["before the database was complete"] += 1
        else:
            recorded, tables = left
            for name, made in made_by.items():
                if name in recorded:
                    assert made <= tables, f"{name} is recorded but {made - tables} are missing"
                else:
                    assert not made & tables, f"{name} is not recorded but made {made & tables}"
            if len(recorded) == len(everything):
                landed["fully migrated"] += 1
            elif before is None or len(recorded) > 2:  # an old home's child may not have begun
                landed["mid-migration"] += 1
            else:
                landed["before or during the first pending migration"] += 1

        store = Store(home)
        assert store.applied_migrations() == everything
        with store.connect() as con:
            tables = {r[0] for r in con.rows("SELECT table_name FROM duckdb_tables()")}
        assert set().union(*made_by.values()) <= tables
        if before is not None:
            assert user_data(store) == before, "the user's constitutions or reviews changed"
    print(f"\nmigration kills: {dict(landed)}")
    assert landed["mid-migration"] >= 2, landed
