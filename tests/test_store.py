"""The store: migrations, per-unit-of-work opening, and lock retry against a real second process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from cai_engine.errors import CaiError, StoreLockedError
from cai_engine.store import Store
from cai_engine.store.migrations import MIGRATIONS

ROOT = Path(__file__).resolve().parent.parent

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)


def hold_lock(path, seconds: float) -> subprocess.Popen:
    """Start a real process that holds the DuckDB file read-write for `seconds`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_opening_a_new_home_applies_every_migration(store):
    assert store.applied_migrations() == [m.__name__ for m in MIGRATIONS]
    assert store.path == store.home / "cai.duckdb"
    assert store.counts() == {
        "constitutions": 0,
        "versions": 0,
        "prompt_sets": 0,
        "prompts": 0,
        "jobs": 0,
    }


def test_migrating_twice_is_a_noop(store):
    store.counts()  # first open migrates
    with store.connect() as con:
        assert Store.migrate(con) == []
        assert con.scalar("SELECT count(*) FROM schema_migrations") == len(MIGRATIONS)


def test_the_store_holds_no_connection_between_units_of_work(store):
    store.counts()
    # Another process can open the file read-write right away: nothing here holds it.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import duckdb; duckdb.connect({str(store.path)!r}).close(); print('ok')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_a_held_lock_is_retried_until_the_holder_lets_go(store):
    store.counts()
    holder = hold_lock(store.path, 1.5)
    try:
        started = time.monotonic()
        counts = Store(store.home, lock_timeout=30).counts()
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert counts["prompts"] == 0
    assert waited > 0.5  # it really had to wait for the other process


def test_a_lock_held_past_the_timeout_names_the_holder(store):
    store.counts()
    holder = hold_lock(store.path, 30)
    try:
        with pytest.raises(StoreLockedError) as err:
            Store(store.home, lock_timeout=0.5).counts()
    finally:
        holder.kill()
        holder.wait()
    message = str(err.value)
    assert f"PID {holder.pid}" in message
    assert str(store.path) in message
    assert "gave up after" in message


HOLD_STORE = textwrap.dedent(
    """
    import sys, time
    from cai_engine.store import Store
    with Store(sys.argv[1]).connect():
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def test_a_unit_of_work_in_another_process_is_waited_for_then_named(store):
    """Our own lock (an flock beside the file) covers a unit of work from before DuckDB opens
    the file until after it closes; a waiter past its timeout names the holder."""
    store.counts()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_STORE, str(store.home), "30"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError) as err:
            Store(store.home, lock_timeout=0.5).counts()
    finally:
        holder.kill()
        holder.wait()
    message = str(err.value)
    assert f"(PID {holder.pid})" in message and str(store.path) in message
    assert Store(store.home, lock_timeout=5).counts()["prompts"] == 0  # free again after a kill


HAMMER = textwrap.dedent(
    """
    import json, sys, time
    import pyarrow as pa, pyarrow.parquet as pq
    from cai_engine.store import Store
    home, tag, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    shard = f"{home}/{tag}.parquet"
    pq.write_table(pa.table({"tag": [tag] * 20, "pad": ["x" * 4000] * 20}), shard)
    store, done, errors, i = Store(home), 0, [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        i += 1
        try:
            with store.transaction() as con:
                if i % 5 == 0:  # deletes make DuckDB shrink the file at checkpoints
                    con.rows("DELETE FROM hammer WHERE tag = ?", [tag])
                    done = 0
                else:
                    con.rows("INSERT INTO hammer SELECT * FROM read_parquet(?)", [shard])
                    done += 20
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}"[:300])
    print(json.dumps({"tag": tag, "rows": done, "errors": errors}))
    """
)


def test_processes_taking_turns_on_the_store_never_read_a_stale_file(store):
    """Plain DuckDB, opened by processes in turn, sometimes fails with "Could not read enough
    bytes" (a process reads the headers before it takes DuckDB's lock, while another shrinks
    the file). Through the store's own lock, three processes writing and deleting for a while
    never fail, and every row they report is there."""
    with store.connect() as con:
        con.rows("CREATE TABLE hammer (tag VARCHAR, pad VARCHAR)")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, str(store.home), tag, "12"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for tag in ("a", "b", "c")
    ]
    reports = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [r["errors"] for r in reports] == [[], [], []]
    with store.connect() as con:
        counts = dict(con.rows("SELECT tag, count(*) FROM hammer GROUP BY tag"))
    assert {r["tag"]: r["rows"] for r in reports if r["rows"]} == counts


def test_a_failed_unit_of_work_rolls_back_entirely(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as con:
            con.rows(
                "INSERT INTO prompt_sets (name, source, split_seed, test_fraction) VALUES (?, ?, ?, ?)",
                ["half-done", "test", 1, 0.2],
            )
            raise RuntimeError("crash mid-transaction")
    assert store.list_prompt_sets() == []


def test_a_migration_that_fails_leaves_no_trace(store, monkeypatch):
    store.counts()

    def m999_broken(con):
        con.rows("CREATE TABLE half_made (x INTEGER)")
        raise RuntimeError("boom")

    monkeypatch.setattr("cai_engine.store.core.MIGRATIONS", [*MIGRATIONS, m999_broken])
    with pytest.raises(RuntimeError, match="boom"):
        store.counts()
    monkeypatch.undo()
    with duckdb.connect(str(store.path)) as con:
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        names = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
    assert "half_made" not in tables
    assert "m999_broken" not in names


def test_cai_home_moves_the_whole_data_home(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("CAI_HOME", str(elsewhere))
    assert Store().path == elsewhere / "cai.duckdb"
    explicit = tmp_path / "explicit"
    assert Store(explicit).path == explicit / "cai.duckdb"  # an explicit home wins over CAI_HOME


def test_threads_share_one_store(seeded_store):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: seeded_store.counts()["prompts"], range(16)))
    assert len(set(results)) == 1 and results[0] > 0


def test_a_database_whose_creation_was_cut_short_is_set_aside_and_made_anew(tmp_path, capsys):
    """A process killed while DuckDB was creating the file leaves part of its 12 KiB of headers
    and no data, which DuckDB refuses forever; the store moves it aside (never deletes it)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "cai.duckdb").write_bytes(b"DUCK" + b"\0" * 4092)
    store = Store(home)
    assert store.applied_migrations() == [m.__name__ for m in MIGRATIONS]
    (aside,) = home.glob("cai.duckdb.unfinished-*")
    assert aside.read_bytes() == b"DUCK" + b"\0" * 4092
    assert "creation was cut short" in capsys.readouterr().err


def test_a_damaged_database_that_may_hold_data_is_left_alone_and_named(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    damaged = b"\x01" * 40_000  # bigger than the headers: it may hold data
    (home / "cai.duckdb").write_bytes(damaged)
    with pytest.raises(CaiError, match=r"cannot open the store .*cai.duckdb"):
        Store(home).counts()
    assert (home / "cai.duckdb").read_bytes() == damaged
    assert not list(home.glob("cai.duckdb.unfinished-*"))
