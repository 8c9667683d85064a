"""Jobs: pipeline stages run as subprocesses, watched through their run folders.

A job is submitted with a validated config, gets a row in the store and a run folder, and
runs as `python -m cai_engine.runner` in its own process group (`start_new_session=True`),
with stdout and stderr going to `run.log`. It reports through files (see `runs.py`) and
opens the store only for brief units of work. Cancelling sends SIGTERM to the group, then
SIGKILL after a grace period. Resuming restarts the same job in the same run folder; the
stage continues from the shards it already wrote. `reconcile` turns a "running" job whose
process is gone into `interrupted` (resumable) or `failed`, so nothing shows running forever.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from cai_engine.errors import CaiError
from cai_engine.home import runs_dir
from cai_engine.progress import ACTIVE, job_eta
from cai_engine.runs import RunFolder

if TYPE_CHECKING:
    from cai_engine.store import Store


TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
RESUMABLE = ("failed", "cancelled", "interrupted")
CANCEL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
START_TIMEOUT = 60.0  # a queued job with no process after this long never started

# kind -> "module" that defines `JOB: JobKind`, or "module:NAME" for another name (a dict there
# is indexed by the kind: the training kinds share one registry); imported only when used.
KIND_MODULES: dict[str, str] = {
    "critique": "cai_engine.critique",
    "demo": "cai_engine.demo",
    "dpo": "cai_engine.training.jobs:JOBS",
    "eval": "cai_engine.eval.job",
    "generate": "cai_engine.generate",
    "judge-check": "cai_engine.judge_check",
    "label": "cai_engine.labels",
    "pairs": "cai_engine.pairs",
    "reward": "cai_engine.training.jobs:JOBS",
    "rl": "cai_engine.training.jobs:JOBS",
    "sft": "cai_engine.training.jobs:JOBS",
    "tick": "cai_engine.tick",
}


class JobConfigError(CaiError):
    """A job config that does not validate; raised before any process starts."""


@dataclass(frozen=True)
class JobKind:
    """What a stage registers: its config model, its entry point and the tables it fills."""

    name: str
    config: type[BaseModel]
    run: Callable  # run(ctx: JobContext, config) -> None
    description: str = ""
    tables: tuple[str, ...] = ()
    resumable: bool = True
    cancel_grace: float = CANCEL_GRACE  # seconds from SIGTERM to SIGKILL (training checkpoints)
    launcher: Callable | None = None  # launcher(config: dict) -> argv prefix before the module


def get_kind(name: str) -> JobKind:
    if name not in KIND_MODULES:
        raise CaiError(f"unknown job kind '{name}'; known kinds: {', '.join(sorted(KIND_MODULES))}")
    module, _, attr = KIND_MODULES[name].partition(":")
    found = getattr(importlib.import_module(module), attr or "JOB")
    return found[name] if isinstance(found, dict) else found


def validate_config(kind: str, config: dict) -> BaseModel:
    """Validate `config` for `kind`, naming unknown keys and bad values."""
    spec = get_kind(kind)
    try:
        return spec.config.model_validate(config)
    except ValidationError as e:
        allowed = ", ".join(spec.config.model_fields)
        problems = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "config"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{where}' (allowed: {allowed})")
            else:
                problems.append(f"{where}: {err['msg']}")
        raise JobConfigError(f"invalid {kind} job config: " + "; ".join(problems)) from None


@dataclass
class Job:
    id: str
    kind: str
    label: str | None
    config: dict
    status: str
    pid: int | None
    run_dir: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    # status.json (progress, tokens, phase, pace), read when first asked for: a list of jobs
    # (a page's job picker) reads no run folder, a page of them one file per job shown
    _live: dict | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: tuple) -> Job:
        return cls(*row[:3], json.loads(row[3]), *row[4:])

    @property
    def live(self) -> dict:
        if self._live is None:
            self._live = self.run.status()
        return self._live

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def cursor(self) -> tuple[datetime, str]:
        """Where a list of jobs (newest first) continues after this one: `job_page(after=)`."""
        return (self.created_at, self.id)

    @property
    def done(self) -> int:
        return int(self.live.get("done") or 0)

    @property
    def total(self) -> int | None:
        return self.live.get("total")

    @property
    def tokens(self) -> int:
        return int(self.live.get("tokens") or 0)

    @property
    def elapsed(self) -> float | None:
        """Seconds of work: from start to finish, or to now while it runs."""
        if not self.started_at:
            return None
        end = self.finished_at or datetime.now()
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def progress(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    @property
    def unit(self) -> str:
        """What `done` counts: "pairs", "steps"... ("step" for training: "step 6/40")."""
        return self.live.get("unit") or ""

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace of its current work; None unless it is running."""
        return job_eta(self.status, self.live, time.time())


def new_job_id(kind: str) -> str:
    return f"{kind}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


# -- process helpers ----------------------------------------------------------------------

_children: dict[str, subprocess.Popen] = {}  # jobs this process started; polled to reap them


def _process_is_job(pid: int | None, job_id: str) -> bool:
    """True if `pid` is alive, not a zombie, and is this job's process (its cmdline names it)."""
    if not pid:
        return False
    child = _children.get(job_id)
    if child is not None and child.pid == pid and child.poll() is not None:
        return False  # reaped just now
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return False
    return state != b"Z" and job_id.encode() in cmdline


def _launch(store: Store, job_id: str, run: RunFolder, kind: str) -> int:
    spec = get_kind(kind)
    prefix = spec.launcher(run.config()) if spec.launcher else [sys.executable, "-m"]
    log = open(run.log_path, "ab")
    try:
        proc = subprocess.Popen(
            [*prefix, "cai_engine.runner", "--home", str(store.home), "--job", job_id],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(store.home),
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "CAI_LAUNCHER": run.config().get("launcher", "python")
                if spec.launcher
                else "python",
            },
        )
    finally:
        log.close()
    _children[job_id] = proc
    return proc.pid


# -- the parent side ------------------------------------------------------------------------


def submit(store: Store, kind: str, config: dict, *, label: str | None = None) -> Job:
    """Validate `config`, record the job, create its run folder and start its process."""
    cfg = validate_config(kind, config)
    job_id = new_job_id(kind)
    run = RunFolder(runs_dir(store.home) / job_id)
    clean = cfg.model_dump(mode="json")
    run.create(clean)
    run.write_status(state="queued")
    store.insert_job(job_id, kind, clean, str(run.path), label)
    run.event("submitted", kind=kind, config=clean)
    pid = _launch(store, job_id, run, kind)
    store.update_job(job_id, pid=pid)
    return get_job(store, job_id)


def get_job(store: Store, job_id: str) -> Job:
    return Job.from_row(store.job_row(job_id))


def list_jobs(
    store: Store,
    *,
    kind: str | list[str] | None = None,
    limit: int | None = 200,
    reconcile_first=True,
) -> list[Job]:
    """The newest `limit` jobs, of `kind` (one, or any of a list) if given. Reads no run
    folder: a job's `live` status is read when it is first asked for."""
    if reconcile_first:
        reconcile(store)
    return [Job.from_row(r) for r in store.job_rows(kind=kind, limit=limit)]


def job_page(
    store: Store,
    *,
    kind: str | list[str] | None = None,
    statuses: list[str] | None = None,
    search: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
    reconcile_first=True,
) -> tuple[list[Job], int]:
    """One page of jobs, newest first, that match the filters (see `Store.job_page`), and how
    many match in all. The next page starts `after` the last job of this one: pass its
    `cursor`."""
    if reconcile_first:
        reconcile(store)
    rows, total = store.job_page(
        kind=kind, statuses=statuses, search=search, after=after, limit=limit
    )
    return [Job.from_row(r) for r in rows], total


def job_counts(store: Store) -> dict:
    """How many jobs there are: {"total": n, "status": {status: n}, "kind": {kind: n}}."""
    return store.job_counts()


def reconcile(store: Store) -> list[str]:
    """Settle jobs marked queued/running whose process is gone. Returns the ids changed.

    A job whose status.json reached a final state gets that state. Otherwise it becomes
    `interrupted` when its kind can resume, else `failed`. Every active job's finished
    shards are ingested on the way, so whoever reads next sees them.
    """
    changed = []
    for row in store.job_rows(statuses=list(ACTIVE)):
        job = Job.from_row(row)
        if _process_is_job(job.pid, job.id):
            ingest(store, job)  # readers ingest what a busy job could not: views stay live
            continue
        if job.status == "queued" and not job.pid:
            age = (datetime.now() - job.created_at).total_seconds()
            if age < START_TIMEOUT:
                continue  # being started right now
        final = job.live.get("state")
        if not job.run.path.exists():
            store.update_job(
                job.id,
                status="failed",
                finished_at=datetime.now(),
                error=f"its run folder {job.run_dir} is gone; submit the job again",
            )
            changed.append(job.id)
            continue
        if final in ("succeeded", "failed", "cancelled"):
            fields = {"status": final, "error": job.live.get("error")}
        else:
            resumable = _kind_resumable(job.kind)
            fields = {
                "status": "interrupted" if resumable else "failed",
                "error": f"the job process (pid {job.pid}) ended without reporting a result"
                + ("; resume it to continue" if resumable else "")
                + "; see run.log",
            }
            job.run.write_status(
                **{**job.live, "state": fields["status"], "error": fields["error"]}
            )
            job.run.event("reconciled", status=fields["status"])
        store.update_job(job.id, finished_at=datetime.now(), **fields)
        ingest(store, job)
        changed.append(job.id)
    return changed


def _kind_resumable(kind: str) -> bool:
    try:
        return get_kind(kind).resumable
    except CaiError:
        return False


def ingest(store: Store, job: Job) -> int:
    """Ingest the job's complete shards that the store does not have yet (idempotent)."""
    done = store.ingested_paths(job.id)
    added = 0
    for table in job.run.tables():
        pending = [
            p
            for _, p in job.run.shards(table)
            if str(p.resolve().relative_to(store.home)) not in done
        ]
        if pending:
            added += store.ingest_shards(job.id, table, pending)
    return added


def cancel(store: Store, job_id: str, grace: float | None = None) -> Job:
    """SIGTERM the job's process group; SIGKILL it if it has not exited after `grace` seconds
    (default: the kind's grace, which gives training time to write a checkpoint)."""
    job = get_job(store, job_id)
    if grace is None:
        grace = get_kind(job.kind).cancel_grace if job.kind in KIND_MODULES else CANCEL_GRACE
    if job.status not in ACTIVE:
        raise CaiError(f"job {job_id} is {job.status}, not running; nothing to cancel")
    job.run.event("cancel_requested")
    if _process_is_job(job.pid, job.id):
        os.killpg(job.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _process_is_job(job.pid, job.id) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _process_is_job(job.pid, job.id):
            os.killpg(job.pid, signal.SIGKILL)
            job.run.event("killed", after_s=grace)
            while _process_is_job(job.pid, job.id):
                time.sleep(0.05)
        else:
            try:  # the leader is gone; stragglers it started (data loaders, ranks) go too
                os.killpg(job.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    live = job.run.status()
    if live.get("state") not in ("cancelled", "succeeded", "failed"):
        job.run.write_status(**{**live, "state": "cancelled"})
    store.update_job(job_id, status=job.run.status()["state"], finished_at=datetime.now())
    ingest(store, get_job(store, job_id))
    return get_job(store, job_id)


def resume(store: Store, job_id: str) -> Job:
    """Restart a failed, cancelled or interrupted job in its run folder."""
    reconcile(store)
    job = get_job(store, job_id)
    if job.status not in RESUMABLE:
        raise CaiError(
            f"job {job_id} is {job.status}; only {', '.join(RESUMABLE)} jobs can be resumed"
        )
    if not get_kind(job.kind).resumable:
        raise CaiError(f"{job.kind} jobs cannot be resumed; submit a new one")
    job.run.write_status(**{**job.live, "state": "queued", "error": None})
    store.update_job(job_id, status="queued", error=None, finished_at=None)
    job.run.event("resumed", attempt=job.attempts + 1)
    pid = _launch(store, job_id, job.run, job.kind)
    store.update_job(job_id, pid=pid)
    return get_job(store, job_id)


def wait(
    store: Store, job_id: str, timeout: float | None = None, poll: float = 0.5, on_update=None
) -> Job:
    """Block until the job leaves queued/running (or `timeout` passes); returns it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        reconcile(store)
        job = get_job(store, job_id)
        if on_update:
            on_update(job)
        if job.status not in ACTIVE:
            return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(poll)


def kinds() -> list[str]:
    return sorted(KIND_MODULES)


def run_folder(store: Store, job_id: str) -> Path:
    return Path(get_job(store, job_id).run_dir)
