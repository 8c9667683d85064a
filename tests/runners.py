"""Helpers for tests that start real job processes: waiting on them, and making sure none
outlives its test."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from cai_engine import jobs

DEADLINE = 30.0  # seconds any one wait may take before the test fails


def wait_until(predicate, what: str, timeout: float = DEADLINE, poll: float = 0.02):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def finish(store, job_id: str, timeout: float = DEADLINE) -> jobs.Job:
    """Wait for the job to leave queued/running; fail if it has not within `timeout`."""
    job = jobs.wait(store, job_id, timeout=timeout, poll=0.2)
    assert job.status not in jobs.ACTIVE, f"{job_id} still {job.status} after {timeout:.0f}s"
    return job


def _stat(pid: int) -> list[bytes] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ...; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped) counts as gone."""
    fields = _stat(pid)
    return fields is not None and fields[0] != b"Z"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields and fields[0] != b"Z" and int(fields[2]) == pgid:
                found.append(int(name))
    return found


def runner_pids(home: Path) -> list[int]:
    """Live runner processes working for data home `home` (its path is on their cmdline)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if b"cai_engine.runner" in argv and str(home).encode() in argv and alive(int(name)):
            found.append(int(name))
    return found


def kill_runners(home: Path) -> None:
    """SIGKILL the process group of every runner still working for `home`, and wait."""
    for pid in runner_pids(home):
        try:
            if os.getpgid(pid) == pid:  # its own session (start_new_session): only its group
                os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not runner_pids(home), "leftover runners to die", timeout=10)
