"""The DuckDB connection discipline: open per unit of work, retry a held lock, migrate once.

DuckDB allows one read-write process or many read-only ones, never both, so nothing here
keeps the file open between units of work. Within a process every `connect()` shares the
same database instance (DuckDB's instance cache), and each caller gets its own connection, so
a `Store` is safe to share between threads.

Across processes, a unit of work first takes our own lock, an `flock` on `cai.duckdb.lock`
beside the database, and holds it from before DuckDB opens the file until after it closes;
within a process, threads take turns the same way (see `_ProcessLock`). DuckDB alone is not
enough: it reads the file's headers before it takes its own lock, so a process that opened
the file just as another one checkpointed and shrank it could read stale headers and fail with
"Could not read enough bytes" (found by the soak test, reproduced with plain duckdb). Waiting
on the flock is also fairer than retrying DuckDB's lock with backoff: a waiter polls every
few milliseconds.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cai_engine.errors import CaiError, StoreLockedError
from cai_engine.home import db_path, resolve_home
from cai_engine.store.migrations import MIGRATIONS

DUCKDB_HEADERS = 12_288  # bytes: a new, empty DuckDB file is exactly its three header blocks
DEFAULT_LOCK_TIMEOUT = 30.0  # seconds a unit of work waits for another process's lock

_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.+?) \(PID (?P<pid>\d+)\)")
_migrate_lock = threading.Lock()  # one migrating connection per process at a time


class StoreError(CaiError):
    """A DuckDB error, wrapped with the store's path."""


def _is_lock_conflict(err: Exception) -> bool:
    return "Could not set lock on file" in str(err) or "Conflicting lock" in str(err)


def describe_lock_holder(message: str) -> str:
    """Turn DuckDB's lock message into 'process <exe> (PID n)', or the raw message."""
    m = _HOLDER.search(message)
    if not m:
        return message
    return f"process {m['exe']} (PID {m['pid']})"


class Conn:
    """A DuckDB connection whose queries always run to completion.

    DuckDB 2 refuses further work on a connection whose last result was not fetched to the
    end, so every query here fetches fully: `rows` returns all rows, `one` the first (or
    None), `scalar` the first column of the first row.
    """

    def __init__(self, con):
        self.raw = con

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.raw.execute(sql, params or []).fetchall()

    def one(self, sql: str, params: list | None = None) -> tuple | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: list | None = None):
        row = self.one(sql, params)
        return row[0] if row else None

    def frame(self, sql: str, params: list | None = None):
        """The result as a pandas DataFrame."""
        return self.raw.execute(sql, params or []).df()

    def register(self, name: str, frame) -> None:
        self.raw.register(name, frame)

    def unregister(self, name: str) -> None:
        self.raw.unregister(name)


LOCK_WAIT_LOG = "CAI_LOCK_WAIT_LOG"  # a file: every open that waited for the lock adds a line


def _log_lock_wait(path: str, waited: float) -> None:
    """Append one JSON line (one write, so lines from many processes do not interleave)."""
    line = json.dumps({"pid": os.getpid(), "waited_s": round(waited, 4), "at": time.time()})
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # diagnostics never break a unit of work


class _ProcessLock:
    """One unit of work at a time on one store: across processes by an flock on the lock
    file, across this process's threads by a re-entrant lock (so a thread may nest units).

    Threads could share DuckDB's instance, but two transactions that write the same key at
    once (two studio sessions ingesting the same shard, or settling the same job) conflict in
    DuckDB instead of one waiting for the other; units of work are short, so they take turns.
    """

    def __init__(self):
        self.depth = 0  # nesting of the owning thread's units of work
        self.fd: int | None = None
        self.waited = 0.0  # how long the most recent outermost acquire waited
        self._owner = threading.RLock()

    def acquire(self, db: Path, timeout: float) -> None:
        import fcntl

        start = time.monotonic()
        if not self._owner.acquire(timeout=max(0.0, timeout)):
            raise StoreLockedError(
                _locked_message(db, time.monotonic() - start, "another thread of this process")
            )
        if self.depth:  # this thread already holds the store: a nested unit of work
            self.depth += 1
            return
        try:
            fd = os.open(_lock_path(db), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            delay = 0.002
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - start
                    if waited >= timeout:
                        holder = _read_holder(fd)
                        os.close(fd)
                        raise StoreLockedError(_locked_message(db, waited, holder)) from None
                    time.sleep(min(delay, max(0.0, timeout - waited)))
                    delay = min(delay * 2, 0.02)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # names the holder to waiters
        except BaseException:
            self._owner.release()
            raise
        self.fd, self.depth = fd, 1
        self.waited = time.monotonic() - start

    def release(self) -> None:
        import fcntl

        self.depth -= 1
        if self.depth == 0 and self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        self._owner.release()


_process_locks: dict[Path, _ProcessLock] = {}
_process_locks_guard = threading.Lock()


def _process_lock(db: Path) -> _ProcessLock:
    with _process_locks_guard:
        return _process_locks.setdefault(db, _ProcessLock())


def _lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        pid = ""
    if not pid.isdigit():
        return "another process"
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        name = "a process"
    return f"process {name} (PID {pid})"


def _locked_message(db: Path, waited: float, holder: str = "another process") -> str:
    return (
        f"the store {db} is locked by {holder}; gave up after {waited:.1f}s. Stop that "
        "process or wait for it to finish, then try again."
    )


class StoreCore:
    """Opens the DuckDB file under a data home for one unit of work at a time.

    Args:
        home (`str` or `Path`, *optional*):
            The data home; see `cai_engine.home.resolve_home`.
        lock_timeout (`float`, *optional*, defaults to `30.0`):
            Seconds to keep retrying while another process holds the file.
    """

    def __init__(self, home: str | Path | None = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT):
        self.home = resolve_home(home)
        self.path = db_path(self.home)
        self.lock_timeout = lock_timeout
        self.last_lock_wait = 0.0  # seconds the most recent open waited for a lock

    def __repr__(self) -> str:
        return f"Store({str(self.home)!r})"

    def _open(self):
        """Take the process's share of the file lock, then connect (retrying DuckDB's own lock,
        which a process outside this discipline may hold). The caller releases the lock."""
        import duckdb

        start = time.monotonic()
        lock = _process_lock(self.path)
        lock.acquire(self.path, self.lock_timeout)
        try:
            delay = 0.02
            while True:
                try:
                    con = duckdb.connect(str(self.path))
                    break
                except duckdb.IOException as e:
                    if "not a valid DuckDB database file" in str(e) and self._set_aside_unborn():
                        continue  # a creation cut short, set aside: create the store anew
                    if not _is_lock_conflict(e):
                        raise StoreError(f"cannot open the store {self.path}: {e}") from e
                    waited = time.monotonic() - start
                    if waited >= self.lock_timeout:
                        raise StoreLockedError(
                            f"the store {self.path} is locked by "
                            f"{describe_lock_holder(str(e))}; gave up after {waited:.1f}s. Stop "
                            "that process or wait for it to finish, then try again."
                        ) from e
                    time.sleep(min(delay, max(0.0, self.lock_timeout - waited)))
                    delay = min(delay * 2, 0.25)
        except BaseException:
            lock.release()
            raise
        self.last_lock_wait = lock.waited
        if lock.waited >= 0.001 and os.environ.get(LOCK_WAIT_LOG):
            _log_lock_wait(os.environ[LOCK_WAIT_LOG], lock.waited)
        return con, lock

    def _set_aside_unborn(self) -> bool:
        """A process killed while DuckDB was creating the file leaves at most the 12 KiB of
        headers, partly written, and no WAL: a file that never held data, which DuckDB then
        refuses forever. Rename it aside (never delete) so the store can be created again.
        Anything bigger, or with a WAL, may hold data and is left for a person to look at."""
        wal = self.path.with_name(self.path.name + ".wal")
        if wal.exists() or not self.path.exists() or self.path.stat().st_size > DUCKDB_HEADERS:
            return False
        aside = self.path.with_name(f"{self.path.name}.unfinished-{int(time.time())}")
        os.replace(self.path, aside)
        print(
            f"cai: {self.path} was a database whose creation was cut short (no data); "
            f"moved it to {aside.name} and created the store anew",
            file=sys.stderr,
        )
        return True

    @contextmanager
    def connect(self) -> Iterator[Conn]:
        """Yield a connection for one unit of work, with pending migrations applied."""
        raw, lock = self._open()
        con = Conn(raw)
        try:
            self._migrate(con)
            yield con
        finally:
            try:
                con.raw.close()
            finally:
                lock.release()

    @contextmanager
    def session(self) -> Iterator[StoreCore]:
        """Hold the store open across several units of work, such as the queries of one page
        render: opening the file costs tens of milliseconds each time the last connection
        closed, while a unit of work inside a session reuses the open database. The file lock
        is held throughout, so keep a session as short as the units it groups."""
        raw, lock = self._open()
        try:
            self._migrate(Conn(raw))
            yield self
        finally:
            try:
                raw.close()
            finally:
                lock.release()

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """Like `connect`, inside BEGIN/COMMIT; any exception rolls the whole unit back."""
        with self.connect() as con:
            con.rows("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.rows("ROLLBACK")
                raise
            con.rows("COMMIT")

    def _migrate(self, con: Conn) -> None:
        # Checking costs one small query, and it keeps a store that was replaced on disk
        # (restored from a backup, say) correct without any per-process cache to go stale.
        with _migrate_lock:
            self.migrate(con)

    @staticmethod
    def migrate(con: Conn) -> list[str]:
        """Apply pending migrations on `con`; return the names applied (empty when up to date)."""
        con.rows(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name VARCHAR PRIMARY KEY,"
            " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
        )
        done = {row[0] for row in con.rows("SELECT name FROM schema_migrations")}
        applied = []
        for fn in MIGRATIONS:
            if fn.__name__ in done:
                continue
            con.rows("BEGIN TRANSACTION")
            try:
                fn(con)
                con.rows("INSERT INTO schema_migrations (name) VALUES (?)", [fn.__name__])
            except BaseException:
                con.rows("ROLLBACK")
                raise
            con.rows("COMMIT")
            applied.append(fn.__name__)
        return applied

    def applied_migrations(self) -> list[str]:
        with self.connect() as con:
            return [r[0] for r in con.rows("SELECT name FROM schema_migrations ORDER BY name")]
