"""The Jobs page, driven through Streamlit's AppTest against real `tick` job subprocesses.

Jobs are submitted through the engine or the page's own button and run for real; waits are
bounded polls. A finalizer kills any runner a test leaves behind (see `tests/test_jobs.py`).
"""

from __future__ import annotations

import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

from cai_engine import jobs
from tests.test_jobs import finish, squares, wait_shards

PAGE = Path(__file__).resolve().parents[2] / "ui" / "app_pages" / "jobs.py"


def run_page() -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    return at


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def button_keys(at: AppTest) -> set[str]:
    return {b.key for b in at.button}


def flashes(at: AppTest) -> list[str]:
    """The one-shot success messages, as the reader sees them (`md_escape` undone)."""
    return [re.sub(r"\\(.)", r"\1", s.value) for s in at.success]


def test_with_no_jobs_the_page_says_so(store):
    at = run_page()
    assert [i.value for i in at.info] == [
        "No jobs yet. Stages (critique, labels, training) start them; so does the button above."
    ]
    assert len(at.dataframe) == 0 and len(at.selectbox) == 0
    assert "submit_tick" in button_keys(at)


def test_finished_jobs_are_listed_and_the_selected_one_shown(store):
    older = jobs.submit(store, "tick", {"total": 6, "shard_size": 3, "delay_s": 0.01}, label="six")
    older = finish(store, older.id)
    newer = finish(store, jobs.submit(store, "tick", {"total": 4, "delay_s": 0.01}).id)
    assert (older.status, newer.status) == ("succeeded", "succeeded")

    at = run_page()
    table = at.dataframe[0].value  # the jobs table; the events table comes after it
    assert list(table["id"]) == [newer.id, older.id]  # newest first
    assert list(table["status"]) == ["succeeded", "succeeded"]
    assert list(table["progress"]) == [1.0, 1.0]
    assert list(table["done"]) == ["4/4", "6/6"]
    assert list(table["label"]) == ["", "six"]

    # The newest is selected at first; picking the older one shows its numbers and log.
    assert at.selectbox(key="job_selected").value == newer.id
    assert metrics(at)["Progress"] == "4/4"
    at.selectbox(key="job_selected").select(older.id).run()
    assert not at.exception, at.exception
    shown = metrics(at)
    assert (shown["Status"], shown["Progress"], shown["Tokens"]) == ("succeeded", "6/6", "6")
    (log,) = [c.value for c in at.code]
    assert f"{older.id}: started (attempt 1)" in log and f"{older.id}: succeeded" in log
    assert newer.id not in log
    assert "cancel_job" not in button_keys(at) and "resume_job" not in button_keys(at)


def test_the_check_button_submits_a_tick_job(store):
    at = run_page()
    click(at, "submit_tick")

    (row,) = store.job_rows()
    job = jobs.get_job(store, row[0])
    assert (job.kind, job.label) == ("tick", "check")
    assert job.config == {"total": 50, "shard_size": 10, "delay_s": 0.1, "fail_at": None}
    assert flashes(at) == [f"Submitted {job.id}."]
    assert at.selectbox(key="job_selected").value == job.id
    assert jobs.cancel(store, job.id, grace=2).status == "cancelled"  # no need to wait 5 s


def test_cancel_then_resume_from_the_page(store):
    job = jobs.submit(store, "tick", {"total": 40, "shard_size": 5, "delay_s": 0.05})
    wait_shards(job, 1)

    at = run_page()
    assert metrics(at)["Status"] == "running"
    assert "resume_job" not in button_keys(at)
    click(at, "cancel_job")

    job = jobs.get_job(store, job.id)
    assert job.status == "cancelled"
    assert "killed" not in [e["event"] for e in job.run.events()]  # stopped by SIGTERM alone
    kept = len(store.ticks(job.id))
    assert 5 <= kept < 40 and kept % 5 == 0
    assert flashes(at) == [f"{job.id} is cancelled."]
    assert metrics(at)["Status"] == "cancelled"
    assert "cancel_job" not in button_keys(at)

    click(at, "resume_job")
    assert jobs.get_job(store, job.id).status in jobs.ACTIVE
    assert flashes(at) == [f"Resumed {job.id}."]
    assert "cancel_job" in button_keys(at) and "resume_job" not in button_keys(at)
    job = finish(store, job.id)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2
    assert store.ticks(job.id) == squares(40)
