"""The job process: `python -m cai_engine.runner --home H --job ID`.

It loads the job's config, runs its stage with a `JobContext`, and records the outcome. The
stage reports through the context, which writes the run folder; the store is opened only
for brief units of work (reading inputs, ingesting a finished shard, the final status).
SIGTERM sets a flag that the stage checks between (or inside) batches, so a cancelled job
stops cleanly with its finished shards kept.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from cai_engine.errors import CaiError, JobCancelled, StoreLockedError
from cai_engine.jobs import get_job, get_kind, ingest
from cai_engine.models import load_model
from cai_engine.runs import RunFolder
from cai_engine.store import Store
from cai_engine.store.shards import ShardIndex

if TYPE_CHECKING:
    from cai_engine.jobs import Job


STATUS_EVERY = 0.5  # seconds between status.json rewrites for progress updates
INGEST_LOCK_TIMEOUT = 5.0  # a job does not wait long for the store; readers ingest too


class JobContext:
    """What a running stage sees: its config, its run folder, progress and shard writers."""

    def __init__(self, store: Store, job: Job, kind, lead: bool = True):
        self.store = store
        self.job = job
        self.job_id = job.id
        self.kind = kind
        self.lead = lead  # rank 0 of a multi-process launch (or the only process) reports
        self.run = RunFolder(job.run_dir)
        self.attempt = job.attempts
        self._cancelled = False
        previous = self.run.status()  # a resumed job keeps counting where it stopped
        self._live = {
            "state": "running",
            "pid": os.getpid(),
            "attempt": self.attempt,
            "done": previous.get("done") or 0,
            "total": previous.get("total"),
            "tokens": previous.get("tokens") or 0,
            "unit": previous.get("unit"),
            "phase": None,
            "setup": False,
        }
        self._restart_pace()  # this attempt is timed from its own start
        self._last_status = 0.0

    # -- cancellation ---------------------------------------------------------------------

    def request_cancel(self, *_):
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def check_cancelled(self) -> None:
        if self._cancelled:
            raise JobCancelled()

    # -- reporting ------------------------------------------------------------------------

    def progress(
        self,
        done: int | None = None,
        total: int | None = None,
        tokens: int | None = None,
        force: bool = False,
        *,
        unit: str | None = None,
        **extra,
    ) -> None:
        """Update live progress; status.json is rewritten at most every STATUS_EVERY seconds.

        Args:
            unit (`str`, *optional*):
                What `done` counts, plural ("pairs", "answers"), or "step" for training,
                which reads "step 6/40".
        """
        for key, value in (("done", done), ("total", total), ("tokens", tokens), ("unit", unit)):
            if value is not None:
                self._live[key] = value
        self._live.update(extra)
        now = time.monotonic()
        if not self.lead:
            return
        if force or now - self._last_status >= STATUS_EVERY:
            self.run.write_status(**self._live)
            self._last_status = now

    def phase(self, text: str | None, *, setup: bool = False) -> None:
        """Say what the job is doing now, e.g. "loading the model" or "scoring the first
        batch of pairs". Pages and the CLI show it until the first unit of work after it is
        done (a setup phase, for as long as it lasts), so a job never sits at 0/N unexplained.

        A phase that is not `setup` starts a new stretch of work: the ETA is measured from
        here, so loading a model (a setup phase) does not count as working time.
        """
        self._live.update(phase=text, setup=setup)
        if not setup:
            self._restart_pace()
        self.progress(force=True)

    def _restart_pace(self) -> None:
        self._live["pace"] = [time.time(), self._live.get("done") or 0, self.tokens]

    @property
    def tokens(self) -> int:
        return int(self._live.get("tokens") or 0)

    def add_tokens(self, n: int) -> None:
        self._live["tokens"] = int(self._live.get("tokens") or 0) + n

    def event(self, name: str, /, **data) -> None:
        if self.lead:
            self.run.event(name, **data)

    def metric(self, **values) -> None:
        if self.lead:
            self.run.metric(**values)

    def write_shard(self, table: str, rows: list[dict], schema=None):
        """Write a complete shard, then try to ingest it (readers will if the store is busy)."""
        path = self.run.write_shard(table, rows, schema)
        self.try_ingest()
        return path

    # -- the stage skeleton: resume, write, load a model ---------------------------------

    def resume(
        self,
        table: str,
        key: Sequence[str] | Callable[[dict], Hashable] | None = None,
        *,
        total: int | None = None,
        tokens: str | tuple[str, ...] | None = None,
        unit: str | None = None,
    ) -> Resume:
        """The rows earlier attempts of this job left in `table`'s shards, and their keys.

        Args:
            key (`Sequence[str]` or `Callable`, *optional*):
                The columns (or a function of a row) that name one unit of work; `done` holds
                them. Without it, `done` is empty and progress counts rows.
            total (`int`, *optional*):
                When given, progress restarts from the shards: `done` counts what they hold
                (keys, or rows without a key), out of `total`.
            tokens (`str` or `tuple[str, ...]`, *optional*):
                With `total`, the column (or columns) whose sum is the job's token count so far.
            unit (`str`, *optional*):
                With `total`, what the count counts (see `progress`).
        """
        rows = self.run.read_shard_rows(table)
        key_of = _key_function(key)
        found = Resume(rows, {key_of(r) for r in rows} if key_of else set(), key_of)
        if total is not None:
            # Counts come from the shards, not from status.json, which can lag them after a crash.
            self._live.update(
                done=len(found.done) if key_of else len(rows),
                total=total,
                tokens=sum(row_tokens(r, tokens) for r in rows) if tokens else self.tokens,
                unit=unit or self._live.get("unit"),
            )
            self._restart_pace()  # the work of this attempt starts from these counts
            self.progress(force=True)
        return found

    def resume_index(
        self,
        table: str,
        key: Sequence[str],
        *,
        total: int | None = None,
        tokens: str | tuple[str, ...] | None = None,
        unit: str | None = None,
        count: str = "keys",
    ) -> ShardIndex:
        """Like `resume`, for a stage that streams: what earlier attempts left in `table`'s
        shards, as a `ShardIndex` to ask chunk by chunk, instead of every row in memory.

        Args:
            key (`Sequence[str]`):
                The columns that name one unit of work.
            total (`int`, *optional*):
                When given, progress restarts from the shards, out of `total`.
            tokens (`str` or `tuple[str, ...]`, *optional*):
                With `total`, the column (or columns) whose sum is the job's token count so far.
            unit (`str`, *optional*):
                With `total`, what the count counts (see `progress`).
            count (`str`, *optional*, defaults to `"keys"`):
                With `total`, whether progress counts distinct `"keys"` or shard `"rows"`.
        """
        index = ShardIndex([p for _, p in self.run.shards(table)], key)
        if total is not None:
            columns = (tokens,) if isinstance(tokens, str) else tuple(tokens or ())
            self._live.update(
                done=index.rows if count == "rows" else index.keys,
                total=total,
                tokens=index.total(*columns) if tokens else self.tokens,
                unit=unit or self._live.get("unit"),
            )
            self._restart_pace()
            self.progress(force=True)
        return index

    def writer(
        self,
        table: str,
        *,
        flush_rows: int = 64,
        flush_s: float = 2.0,
        checkpoint: bool = False,
        done: int | None = None,
        tokens: str | tuple[str, ...] | None = None,
    ) -> ShardBuffer:
        """A streaming shard writer, used as `with ctx.writer(table) as out: out.add(rows)`.

        Rows become a shard every `flush_rows` rows or `flush_s` seconds, and leaving the block
        writes the rest, also on an error or a cancel, so that finished work survives.

        Args:
            checkpoint (`bool`, *optional*, defaults to `False`):
                Write every `add` at once (a scored batch is a checkpoint).
            done (`int`, *optional*):
                Count progress from here: each added row adds one, and leaving the block
                reports the count at once.
            tokens (`str` or `tuple[str, ...]`, *optional*):
                The column (or columns) of added rows whose sum is added to the job's tokens.
        """
        return ShardBuffer(self, table, flush_rows, flush_s, checkpoint, done, tokens)

    @contextmanager
    def model(self, spec: str, event: str = "model_loaded", **details) -> Iterator:
        """Load model `spec`, record `event` with its details, and always close it."""
        with self.lazy_model(spec, event, **details) as get:
            yield get()

    @contextmanager
    def aside(self) -> Iterator[None]:
        """A detour (loading a model, checking the judge) that says its own phases: after it,
        the job says again what it was saying before."""
        before = self._live.get("phase"), bool(self._live.get("setup"))
        try:
            yield
        finally:
            self.phase(before[0], setup=before[1])

    @contextmanager
    def lazy_model(
        self, spec: str, event: str = "model_loaded", **details
    ) -> Iterator[Callable[[], object]]:
        """Like `model`, for a stage that may not need the model: it yields a function that
        loads the model on its first call (and returns the same one after); leaving the
        block closes it if it was loaded."""
        loaded = []

        def get():
            if not loaded:
                with self.aside():
                    self.phase("loading the model", setup=True)
                    loaded.append(load_model(spec, self.store.home))
                    self.event(event, **details, **loaded[0].info().details)
            return loaded[0]

        try:
            yield get
        finally:
            if loaded:
                loaded[0].close()

    def try_ingest(self) -> None:

        try:
            quick = Store(self.store.home, lock_timeout=INGEST_LOCK_TIMEOUT)
            ingest(quick, get_job(quick, self.job_id))
        except StoreLockedError:
            pass  # the next reader ingests it

    def finish(self, state: str, error: str | None = None) -> None:
        self._live.update(state=state, error=error, phase=None, setup=False)
        if self.lead:
            self.run.write_status(**self._live)


class Resume(NamedTuple):
    """What earlier attempts of a job left in one table: its rows and their keys."""

    rows: list[dict]
    done: set
    key: Callable[[dict], Hashable] | None = None

    def pending(self, items: list[dict]) -> list[dict]:
        """The `items` (rows with the key's columns) that no earlier attempt finished."""
        return [item for item in items if self.key(item) not in self.done]


def row_tokens(row: dict, columns: str | tuple[str, ...]) -> int:
    """The tokens a row counts: one column's value, or the sum of several."""
    if isinstance(columns, str):
        return int(row[columns] or 0)
    return sum(int(row[c] or 0) for c in columns)


def _key_function(key) -> Callable[[dict], Hashable] | None:
    if key is None or callable(key):
        return key
    columns = tuple(key)
    return lambda row: tuple(row[c] for c in columns)


class ShardBuffer:
    """Rows waiting to become a shard (see `JobContext.writer`). `flush()` writes them; leaving
    its `with` block flushes too, so that finished work survives a failure."""

    def __init__(
        self,
        ctx: JobContext,
        table: str,
        flush_rows: int,
        flush_s: float,
        checkpoint: bool = False,
        done: int | None = None,
        tokens: str | tuple[str, ...] | None = None,
    ):
        self.ctx, self.table = ctx, table
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.checkpoint = checkpoint
        self.done, self.tokens = done, tokens
        self.rows: list[dict] = []
        self._since = time.monotonic()

    def add(self, rows: list[dict]) -> None:
        self.rows += rows
        if (
            self.checkpoint
            or len(self.rows) >= self.flush_rows
            or time.monotonic() - self._since >= self.flush_s
        ):
            self.flush()
        if self.tokens:
            self.ctx.add_tokens(sum(row_tokens(r, self.tokens) for r in rows))
        if self.done is not None:
            self.done += len(rows)
            self.ctx.progress(done=self.done)

    def flush(self) -> None:
        if self.rows:
            self.ctx.write_shard(self.table, self.rows)
            self.rows = []
        self._since = time.monotonic()

    def __enter__(self) -> ShardBuffer:
        return self

    def __exit__(self, *exc) -> None:
        self.flush()
        if self.done is not None:
            self.ctx.progress(done=self.done, force=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cai_engine.runner")
    parser.add_argument("--home", required=True)
    parser.add_argument("--job", required=True)
    args = parser.parse_args(argv)

    store = Store(args.home)
    job = get_job(store, args.job)
    kind = get_kind(job.kind)
    if int(os.environ.get("RANK", "0")) > 0:
        return _follow(store, job, kind)
    attempts = job.attempts + 1
    # Started by a launcher (torchrun, accelerate), the job's pid stays the launcher's: it is
    # the process that cancelling signals, and it outlives this rank.
    launched = os.environ.get("CAI_LAUNCHER") not in (None, "", "python")
    store.update_job(
        job.id,
        status="running",
        **({} if launched else {"pid": os.getpid()}),
        attempts=attempts,
        started_at=job.started_at or datetime.now(),
        error=None,
    )
    job.attempts = attempts
    ctx = JobContext(store, job, kind)
    signal.signal(signal.SIGTERM, ctx.request_cancel)
    ctx.phase("starting")  # until the stage says what it is doing
    ctx.event("started", pid=os.getpid(), attempt=attempts)
    partial = ctx.run.remove_partial_shards()  # left by an attempt killed mid-write
    if partial:
        ctx.event("partial_shards_removed", files=partial)
    print(f"[{datetime.now():%H:%M:%S}] {job.id}: started (attempt {attempts})", flush=True)

    state, error, code = "succeeded", None, 0
    try:
        kind.run(ctx, kind.config.model_validate(job.config))
    except JobCancelled:
        state = "cancelled"
    except CaiError as e:
        state, error, code = "failed", str(e), 1
    except BaseException as e:  # noqa: BLE001 - every failure must be recorded
        state, error, code = "failed", f"{type(e).__name__}: {e}", 1
        traceback.print_exc()
    ctx.finish(state, error)
    ctx.event("finished", state=state, error=error)
    print(
        f"[{datetime.now():%H:%M:%S}] {job.id}: {state}" + (f": {error}" if error else ""),
        flush=True,
    )
    try:
        ctx.try_ingest()
        store.update_job(job.id, status=state, error=error, finished_at=datetime.now())
    except StoreLockedError:
        pass  # status.json holds the outcome; reconcile copies it into the store
    _destroy_process_group()
    return code


def _follow(store: Store, job: Job, kind) -> int:
    """A rank other than 0 under torchrun or accelerate: it trains, and rank 0 reports."""
    ctx = JobContext(store, job, kind, lead=False)
    signal.signal(signal.SIGTERM, ctx.request_cancel)
    code = 0
    try:
        kind.run(ctx, kind.config.model_validate(job.config))
    except JobCancelled:
        pass
    except BaseException:  # noqa: BLE001 - rank 0 records the job's outcome
        traceback.print_exc()
        code = 1
    _destroy_process_group()
    return code


def _destroy_process_group() -> None:
    """Under torchrun, rank 0 crashes on shutdown unless the process group is destroyed."""
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
