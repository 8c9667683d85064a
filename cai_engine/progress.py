"""How far a job is, in words: its counts, what it is doing now, its pace and the time left.

A running job writes into status.json (see `JobContext.progress` and `JobContext.phase`):
`done` and `total` in its `unit`, a `phase` that says what it is doing, whether that phase is
`setup` (loading a model: no unit of work moves), and its `pace`: the wall-clock time, count
and tokens when the current stretch of work began. From these, `describe` writes the one line
that the Jobs page, every stage page (through `ui/progress.py`) and the CLI's `--wait` bar show:

    running: loading the model · 0/36 pairs
    running: scoring pairs, first batch · 0/36 pairs
    running: 12/36 pairs · about 1 min 10 s left
    cancelled: step 6/40

Only an active job has a phase or an ETA. Light: no streamlit, no torch.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cai_engine.jobs import Job

ACTIVE = ("queued", "running")


def format_duration(seconds: float) -> str:
    """12 s, 3 min 20 s, 2 h 05 min, 4 d 03 h."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h {m:02d} min"
    d, h = divmod(h, 24)
    return f"{d} d {h:02d} h"


def eta_seconds(done: int, total: int | None, elapsed: float | None) -> float | None:
    """Seconds left at the pace so far; None until a unit has finished."""
    if not total or not done or not elapsed or done >= total:
        return None
    return elapsed / done * (total - done)


def pace(live: dict) -> tuple[float, int, int] | None:
    """(since, done, tokens) when the job's current stretch of work began, or None."""
    found = live.get("pace")
    if not isinstance(found, list | tuple) or len(found) != 3:
        return None
    since, done, tokens = found
    return float(since), int(done or 0), int(tokens or 0)


def active(status: str, live: dict) -> bool:
    """The store says queued or running, and the job has not written its outcome yet."""
    return status in ACTIVE and live.get("state") in (None, "queued", "running")


def job_eta(status: str, live: dict, now: float) -> float | None:
    """Seconds left for a running job, at the pace of its current stretch of work.

    Only a running job has one: not a queued, finished, cancelled or failed one, nor one in a
    setup phase (loading a model). The pace starts when the work does (see
    `JobContext.phase`), so the time spent loading a model is not counted as work, and a
    resumed job is timed from its resume, not from its first start.
    """
    if status != "running" or not active(status, live) or live.get("setup"):
        return None
    found = pace(live)
    total, done = live.get("total"), int(live.get("done") or 0)
    if found is None or not total:
        return None
    since, at, _ = found
    return eta_seconds(done - at, int(total) - at, now - since)


def token_rate(job: Job, now: float) -> float | None:
    """Tokens per second: over the current stretch of work while the job runs, over its
    whole elapsed time once it has ended; None before any token."""
    if active(job.status, job.live):
        found = pace(job.live)
        if found:
            since, _, tokens = found
            if job.tokens > tokens and now > since:
                return (job.tokens - tokens) / (now - since)
    if job.tokens and job.elapsed:
        return job.tokens / job.elapsed
    return None


def counts(done: int, total: int | None, unit: str | None) -> str:
    """'12/36 pairs', or 'step 6/40' for a singular unit (training counts steps)."""
    unit = unit or ""
    if total:
        numbers = f"{done}/{total}"
    elif done:
        numbers = str(done)
    else:
        return ""
    if not unit:
        return numbers
    return f"{unit} {numbers}" if unit == "step" else f"{numbers} {unit}"


def shown_phase(job: Job) -> str | None:
    """The phase worth saying: while the job is active and either setting up or not yet past
    the first unit of its current stretch of work (afterwards the counts and ETA speak)."""
    live = job.live
    if not active(job.status, live):
        return None
    if job.status == "queued":
        return live.get("phase") or "waiting for its process to start"
    phase = live.get("phase")
    if not phase:
        return None if job.total else "starting"
    found = pace(live)
    if live.get("setup") or found is None or job.done <= found[1]:
        return phase
    return None


def describe(job: Job, now: float | None = None, *, rate: bool = False, status: bool = True) -> str:
    """The job's progress line: status, then what it is doing, counts, and time left.

    Args:
        now (`float`, *optional*):
            The wall-clock time to measure the pace to; defaults to now.
        rate (`bool`, *optional*, defaults to `False`):
            Add its tokens per second at the end (pages about generation show it).
        status (`bool`, *optional*, defaults to `True`):
            Lead with the job's status ("running: ").
    """
    now = time.time() if now is None else now
    parts = [shown_phase(job), counts(job.done, job.total, job.live.get("unit"))]
    left = job_eta(job.status, job.live, now)
    if left:
        parts.append(f"about {format_duration(left)} left")
    if rate:
        per_s = token_rate(job, now)
        if per_s:
            parts.append(f"{per_s:.0f} tokens/s")
    shown = " · ".join(p for p in parts if p)
    if not status:
        return shown or job.status
    return f"{job.status}: {shown}" if shown else job.status


def fraction(job: Job) -> float:
    """How much of the job is done, 0..1, for a progress bar (a succeeded job is full)."""
    if job.status == "succeeded":
        return 1.0
    if not job.total:
        return 0.0
    return max(0.0, min(1.0, job.done / job.total))


# -- the log as a terminal would show it ------------------------------------------------------

_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def terminal_text(raw: str) -> str:
    """`raw` log text as a reader wants it: a line rewritten with carriage returns (tqdm
    bars, download meters) shows only its last state, and terminal escape codes (colours,
    cursor moves) are dropped."""
    lines = []
    for line in _ANSI.sub("", raw.replace("\r\n", "\n")).split("\n"):
        if "\r" in line:
            line = next((s for s in reversed(line.split("\r")) if s.strip()), "")
        lines.append(line)
    return "\n".join(lines)
