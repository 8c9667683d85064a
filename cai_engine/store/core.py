"""The DuckDB connection discipline: open per unit of work, retry a held lock, migrate once.

DuckDB allows one read-write process or many read-only ones, never both, so nothing here
keeps the file open between units of work. Within a process every `connect()` shares the
same database instance (DuckDB's instance cache), and each caller gets its own connection,
which makes a `Store` safe to share between threads.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cai_engine.errors import CaiError, StoreLockedError
from cai_engine.home import db_path, resolve_home
from cai_engine.store.migrations import MIGRATIONS

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
        import duckdb

        start = time.monotonic()
        delay = 0.02
        while True:
            try:
                con = duckdb.connect(str(self.path))
                self.last_lock_wait = time.monotonic() - start
                if self.last_lock_wait > 0 and os.environ.get(LOCK_WAIT_LOG):
                    _log_lock_wait(os.environ[LOCK_WAIT_LOG], self.last_lock_wait)
                return con
            except duckdb.IOException as e:
                if not _is_lock_conflict(e):
                    raise StoreError(f"cannot open the store {self.path}: {e}") from e
                waited = time.monotonic() - start
                if waited >= self.lock_timeout:
                    raise StoreLockedError(
                        f"the store {self.path} is locked by {describe_lock_holder(str(e))}; "
                        f"gave up after {waited:.1f}s. Stop that process or wait for it to "
                        "finish, then try again."
                    ) from e
                time.sleep(min(delay, max(0.0, self.lock_timeout - waited)))
                delay = min(delay * 2, 1.0)

    @contextmanager
    def connect(self) -> Iterator[Conn]:
        """Yield a connection for one unit of work, with pending migrations applied."""
        con = Conn(self._open())
        try:
            self._migrate(con)
            yield con
        finally:
            con.raw.close()

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
