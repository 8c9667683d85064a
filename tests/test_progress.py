"""Progress in words: what a job is doing, its counts, its pace and the time left.

The line (`progress.describe`) is what the Jobs page, every stage page and `--wait` show, so
it is tested here on hand-made jobs at a fixed clock; `JobContext` is tested for what it
writes into status.json (phase, setup, pace, tokens), in process, on a real run folder.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import pytest

from cai_engine import jobs
from cai_engine.cli import main
from cai_engine.home import runs_dir
from cai_engine.jobs import Job
from cai_engine.progress import (
    describe,
    format_duration,
    fraction,
    job_eta,
    terminal_text,
    token_rate,
)
from cai_engine.runner import JobContext
from cai_engine.runs import RunFolder
from tests.runners import finish
from tests.test_jobs import FakeModel

NOW = 1_000_000.0  # the wall clock of every hand-made job below


def made_job(store, job_id: str, kind: str, status: str, config: dict | None = None, **live):
    """A job row and run folder made by hand, with no process behind it (so only a finished
    status survives `reconcile`), whose status.json holds `live`."""
    run = RunFolder(runs_dir(store.home) / job_id)
    run.create(config or {})
    store.insert_job(job_id, kind, config or {}, str(run.path), None)
    run.write_status(state=status, **live)
    started = datetime.now() - timedelta(minutes=2)
    store.update_job(job_id, status=status, started_at=started, finished_at=datetime.now())
    return jobs.get_job(store, job_id)


def job(status: str = "running", elapsed: float = 60.0, **live) -> Job:
    """A job `elapsed` seconds into its work, whose status.json holds `live`."""
    started = datetime(2025, 1, 1, 12, 0, 0)
    ended = started + timedelta(seconds=elapsed) if status not in jobs.ACTIVE else None
    state = {"state": status if status not in jobs.ACTIVE else "running", **live}
    return Job(
        "train-1", "sft", None, {}, status, None, "/nowhere", 1,
        started, started, ended, None, state,
    )  # fmt: skip


# -- the ETA ----------------------------------------------------------------------------------


def test_the_eta_is_measured_from_the_pace_of_the_current_stretch_of_work():
    # The stretch began at NOW - 60 with 10 of 40 steps done; 6 more since: 10 s a step,
    # 24 steps left -> 240 s. (Counted from zero it would be 60/16*24 = 90 s: wrong.)
    live = {"done": 16, "total": 40, "pace": [NOW - 60, 10, 0]}
    assert job_eta("running", {"state": "running", **live}, NOW) == pytest.approx(240.0)
    assert describe(job(**live, unit="step"), NOW) == "running: step 16/40 · about 4 min 00 s left"


def test_a_cancelled_job_has_no_eta():
    live = {"done": 6, "total": 40, "unit": "step", "pace": [NOW - 60, 0, 0]}
    assert describe(job("cancelled", **live), NOW) == "cancelled: step 6/40"
    assert job_eta("cancelled", {"state": "cancelled", **live}, NOW) is None
    # ...nor one the store still calls running whose process already wrote its outcome
    assert job_eta("running", {**live, "state": "cancelled"}, NOW) is None
    for status in ("queued", "failed", "interrupted", "succeeded"):
        assert job_eta(status, {"state": "running", **live}, NOW) is None, status


def test_no_eta_before_the_first_unit_or_while_setting_up():
    assert job_eta("running", {"done": 4, "total": 40, "pace": [NOW - 60, 4, 0]}, NOW) is None
    setting_up = {"done": 6, "total": 40, "pace": [NOW - 60, 0, 0], "setup": True}
    assert job_eta("running", setting_up, NOW) is None
    assert job_eta("running", {"done": 6, "total": None, "pace": [NOW - 60, 0, 0]}, NOW) is None


def test_an_eta_of_days_reads_in_days():
    # 1 step a minute, 9,990 steps left: 599,400 s = 6 d 22 h 30 min
    live = {"done": 10, "total": 10_000, "unit": "step", "pace": [NOW - 600, 0, 0]}
    assert describe(job(**live), NOW) == "running: step 10/10000 · about 6 d 22 h left"
    assert format_duration(59.4) == "59 s" and format_duration(3599) == "59 min 59 s"


# -- the phase --------------------------------------------------------------------------------


def test_the_phase_is_said_until_the_first_unit_of_its_work_is_done():
    loading = {"done": 0, "total": 36, "unit": "pairs", "pace": [NOW - 30, 0, 0]}
    loading |= {"phase": "loading the model", "setup": True}
    assert describe(job(**loading), NOW) == "running: loading the model · 0/36 pairs"

    first = {**loading, "phase": "scoring the first batch of 8 pairs", "setup": False}
    assert describe(job(**first), NOW) == "running: scoring the first batch of 8 pairs · 0/36 pairs"

    # 8 pairs in 30 s: 28 left -> 105 s; the counts speak now, the phase is not said
    scored = {**first, "done": 8}
    assert describe(job(**scored), NOW) == "running: 8/36 pairs · about 1 min 45 s left"


def test_a_setup_phase_is_said_however_far_the_job_is():
    saving = {"done": 40, "total": 40, "unit": "step", "pace": [NOW - 30, 0, 0]}
    saving |= {"phase": "evaluating and saving the model", "setup": True}
    assert describe(job(**saving), NOW) == "running: evaluating and saving the model · step 40/40"


def test_a_job_that_has_said_nothing_yet_is_starting_and_a_queued_one_waits():
    assert describe(job(done=0, total=None), NOW) == "running: starting"
    assert describe(job("queued", done=0), NOW) == "queued: waiting for its process to start"
    assert describe(job("failed", done=0, phase="loading the model"), NOW) == "failed"


def test_the_rate_is_over_the_current_stretch_while_running_and_overall_after():
    # 1,200 tokens in the 60 s since the stretch began at 300 tokens: 15 tokens/s
    live = {"done": 6, "total": 40, "tokens": 1_200, "pace": [NOW - 60, 0, 300]}
    assert token_rate(job(**live), NOW) == pytest.approx(15.0)
    # finished: 1,200 tokens in 80 s of work -> 15 tokens/s
    assert token_rate(job("succeeded", elapsed=80.0, **live), NOW) == pytest.approx(15.0)
    assert describe(job("succeeded", elapsed=80.0, **live), NOW, rate=True) == (
        "succeeded: 6/40 · 15 tokens/s"
    )
    assert token_rate(job(done=0, tokens=0), NOW) is None


def test_a_succeeded_job_is_full_and_an_unknown_total_is_empty():
    assert fraction(job("succeeded", done=3, total=None)) == 1.0
    assert fraction(job(done=9, total=36)) == 0.25
    assert fraction(job(done=9, total=None)) == 0.0


# -- what JobContext writes -------------------------------------------------------------------


@pytest.fixture
def ctx(store):
    done = finish(store, jobs.submit(store, "tick", {"total": 4, "shard_size": 2, "delay_s": 0}).id)
    return JobContext(store, done, jobs.get_kind("tick"))


def test_a_phase_starts_a_stretch_of_work_and_a_setup_phase_does_not(ctx, monkeypatch):
    ctx.progress(done=4, total=10, unit="rows", tokens=50)
    ctx.phase("writing rows")
    status = ctx.run.status()
    since, at, tokens = status["pace"]
    assert (status["phase"], status["setup"], at, tokens) == ("writing rows", False, 4, 50)

    # loading a model is setup: said while it lasts, then the stage's phase is back, and the
    # pace starts after it, so the loading time is not counted as work
    seen = []

    def load(spec, home):
        seen.append(ctx.run.status())
        return FakeModel()

    monkeypatch.setattr("cai_engine.runner.load_model", load)
    with ctx.model("fake"):
        pass
    (during,) = seen
    assert (during["phase"], during["setup"], during["pace"]) == (
        "loading the model",
        True,
        [since, 4, 50],
    )
    after = ctx.run.status()
    assert (after["phase"], after["setup"]) == ("writing rows", False)
    assert after["pace"][0] >= during["updated_at"] and after["pace"][1:] == [4, 50]

    ctx.finish("cancelled")
    final = jobs.get_job(ctx.store, ctx.job_id).live
    assert (final["phase"], final["setup"], final["state"]) == (None, False, "cancelled")


def test_resuming_counts_from_the_shards_with_tokens_of_several_columns(ctx):
    # ticks (i, i*i) for i < 4: "i" + "value" sum to (0+1+2+3) + (0+1+4+9) = 20
    ctx.resume("ticks", key=("i",), total=6, tokens=("i", "value"), unit="rows")
    status = ctx.run.status()
    assert (status["done"], status["total"], status["tokens"], status["unit"]) == (4, 6, 20, "rows")
    assert status["pace"][1:] == [4, 20]  # this attempt's work starts from what the shards hold
    with ctx.writer("ticks", done=4, tokens=("i", "value")) as out:
        out.add([{"job_id": ctx.job_id, "i": 4, "value": 16}])
    assert (ctx.run.status()["done"], ctx.tokens) == (5, 40)  # 20 + 4 + 16


# -- the log ----------------------------------------------------------------------------------


def test_the_log_shows_a_rewritten_line_in_its_last_state_without_escape_codes():
    raw = (
        "[12:00:01] job: started (attempt 1)\n"
        "Loading weights:   0%|          | 0/4\rLoading weights:  50%|#####     | 2/4"
        "\rLoading weights: 100%|##########| 4/4\r\n"
        "\x1b[32mgreen\x1b[0m and \x1b[1mbold\x1b[0m\r\n"
        "tqdm leaves a blank tail\r   \n"
        "done\n"
    )
    assert terminal_text(raw) == (
        "[12:00:01] job: started (attempt 1)\n"
        "Loading weights: 100%|##########| 4/4\n"
        "green and bold\n"
        "tqdm leaves a blank tail\n"
        "done\n"
    )
    assert terminal_text("no carriage returns\nat all") == "no carriage returns\nat all"


# -- the CLI ----------------------------------------------------------------------------------


def cai(capsys, *args: str) -> tuple[int, str]:
    rc = main(list(args))
    return rc, capsys.readouterr().out


def test_cli_wait_says_what_the_job_does_then_its_counts_and_time_left(store, capsys):
    rc, out = cai(
        capsys, "jobs", "submit", "tick", "--wait",
        "--set", "total=20", "--set", "shard_size=2", "--set", "delay_s=0.2",
    )  # fmt: skip
    assert rc == 0, out
    lines = out.splitlines()
    job_id = lines[0].removeprefix("submitted ")
    assert lines[-1] == f"{job_id} succeeded"
    # a log (not a terminal) gets a line per change: before any row the job says what it is
    # doing; later lines carry a bar, the counts and the time left, never twice the same state
    assert any(re.fullmatch(rf"{job_id} (queued|running): (\[\.{{30}}\] )?(starting|waiting.*)( · 0/20)?", line)
               for line in lines), out  # fmt: skip
    counted = [
        re.fullmatch(rf"{job_id} running: \[[#.]{{30}}\] (\d+)/20 · about \d+ s left( · \d+ tokens/s)?", line)
        for line in lines
    ]  # fmt: skip
    done = [int(m[1]) for m in counted if m]
    assert done and done == sorted(set(done)), out


def test_cli_list_and_show_give_tokens_and_no_time_left_for_a_cancelled_job(store, capsys):
    live = {"done": 6, "total": 40, "unit": "step", "tokens": 1234, "pace": [time.time(), 0, 0]}
    made_job(store, "sft-20250101-000000-dddd", "sft", "cancelled", {"model": "hf:x"}, **live)

    rc, out = cai(capsys, "jobs", "list")
    assert rc == 0
    header, _, row = out.splitlines()
    assert header.split() == [
        "id",
        "kind",
        "status",
        "progress",
        "elapsed",
        "left",
        "tokens",
        "label",
    ]
    # elapsed 2 min (made_job's start), nothing left: the tokens come right after it
    assert row.split() == ["sft-20250101-000000-dddd", "sft", "cancelled", "step", "6/40", "(15%)", "2m00s", "1234"]  # fmt: skip

    rc, out = cai(capsys, "jobs", "show", "sft-20250101-000000-dddd")
    assert rc == 0
    assert "now:       cancelled: step 6/40\n" in out
    assert "left:" not in out
    assert "tokens:    1,234  (10 tokens/s)\n" in out  # 1,234 tokens in 120 s
