"""The Jobs page, driven through Streamlit's AppTest against real `tick` job subprocesses.

Jobs are submitted through the engine or the page's own button and run for real; waits are
bounded polls. A finalizer kills any runner a test leaves behind (see `tests/test_jobs.py`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cai_engine import jobs
from tests.test_jobs import finish, squares, wait_shards, wait_until
from tests.test_progress import made_job

ROUTER = Path(__file__).resolve().parents[2] / "ui" / "app.py"


def run_page() -> AppTest:
    """The Jobs page, through the router: its links to other pages resolve against it."""
    at = AppTest.from_file(str(ROUTER), default_timeout=30)
    at.run()
    at.switch_page("app_pages/jobs.py").run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Jobs"]
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
    # 0.4 s a row: it is still running when the page (through the router) has drawn it
    job = jobs.submit(store, "tick", {"total": 40, "shard_size": 5, "delay_s": 0.4})
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


# -- what a job says about itself: progress, log, where its results are ---------------------


def test_the_log_shows_rewritten_lines_in_their_last_state_and_wraps_long_lines(store):
    job = finish(store, jobs.submit(store, "tick", {"total": 2, "delay_s": 0.01}).id)
    long_line = "x" * 400
    with open(job.run.log_path, "a") as f:
        f.write("Loading weights: 0%|  | 0/4\rLoading weights: 50%|# | 2/4")
        f.write("\rLoading weights: 100%|##| 4/4\n" + long_line + "\n")

    at = run_page()
    (log,) = at.code
    assert "\r" not in log.value
    assert "succeeded\nLoading weights: 100%|##| 4/4\n" + long_line in log.value
    assert "Loading weights: 0%" not in log.value and "50%" not in log.value
    assert log.proto.wrap_lines  # the long line wraps instead of scrolling sideways


# kind -> (the page its link opens, its link's label, the picker that picks the job there)
RESULTS = {
    "critique": ("app_pages/traces.py", "See its results on the Traces page", "trace_job"),
    "pairs": ("app_pages/labels.py", "Label its pairs on the Labels page", "label_pairs_job"),
    "label": ("app_pages/labels.py", "See its results on the Labels page", "label_job"),
    "eval": ("app_pages/eval.py", "See its results on the Eval page", "eval_job"),
    "sft": ("app_pages/training.py", "See its results on the Training page", "training_job"),
}


@pytest.mark.parametrize("kind", list(RESULTS))
def test_each_job_links_to_the_page_of_its_results_with_the_job_picked_there(store, kind):
    page, label, picker = RESULTS[kind]
    config = {"eval": {"models": ["hf:x"]}, "sft": {"model": "hf:x"}}.get(kind, {})
    older = made_job(store, f"{kind}-20250101-000000-aaaa", kind, "succeeded", config, done=1)
    newer = made_job(store, f"{kind}-20250101-000001-bbbb", kind, "succeeded", config, done=1)

    at = run_page()
    at.selectbox(key="job_selected").select(older.id).run()
    assert not at.exception, at.exception
    (link,) = at.page_link
    assert link.value == label

    # following it opens that page with this job picked, not the newest one (the link carries
    # the job as `?job=`, which the page's picker reads once)
    assert "job=" + older.id in str(link.proto)
    at.query_params["job"] = older.id
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert at.selectbox(key=picker).value == older.id != newer.id


def test_a_cancelled_job_shows_its_counts_and_no_time_left(store):
    # cancelled at step 6 of 40 after a minute of work: the pace would say 34 steps are left
    live = {"done": 6, "total": 40, "unit": "step", "pace": [time.time() - 60, 0, 0]}
    job = made_job(store, "sft-20250101-000000-cccc", "sft", "cancelled", {"model": "hf:x"}, **live)

    at = run_page()
    (bar,) = at.progress
    assert bar.text == "cancelled: step 6/40"
    assert bar.value == 15  # 6/40 as a percentage
    assert metrics(at)["Time left"] == "-"
    assert "left" not in "".join(str(v) for v in at.dataframe[0].value["left"])

    # the Training page's bar is the same widget
    at.switch_page("app_pages/training.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="training_job").value == job.id
    assert [p.text for p in at.progress] == ["cancelled: step 6/40"]


def test_a_running_job_says_what_it_is_doing_then_how_long_is_left(store):
    job = jobs.submit(store, "tick", {"total": 40, "shard_size": 5, "delay_s": 0.1})
    wait_until(lambda: jobs.get_job(store, job.id).done >= 10, f"{job.id} to write 10 rows")

    at = run_page()
    (bar,) = at.progress
    assert re.fullmatch(r"running: \d+/40 · about \d+ s left", bar.text), bar.text
    assert re.fullmatch(r"\d+ s", metrics(at)["Time left"]), metrics(at)
    assert jobs.cancel(store, job.id, grace=2).status == "cancelled"


# -- ten thousand jobs: filters and a page at a time ------------------------------------------

JOBS_CAPTION = re.compile(r"Jobs (?:[\d,]+–[\d,]+|0) of [\d,]+(?: \(filtered from [\d,]+\))?")


def jobs_caption(at: AppTest) -> str:
    (found,) = [c.value for c in at.caption if JOBS_CAPTION.fullmatch(c.value)]
    return found


def table_ids(at: AppTest) -> list[str]:
    (frame,) = [d.value for d in at.dataframe if "progress" in d.value.columns]
    return list(frame["id"])


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def test_ten_thousand_jobs_are_filtered_and_paged_and_no_query_reads_more_than_a_page(
    store, monkeypatch
):
    from tests.test_jobs import many_id, many_jobs
    from tests.ui.row_counter import RowCounter

    many_jobs(store)
    counter = RowCounter(monkeypatch)
    at = run_page()
    assert jobs_caption(at) == "Jobs 1–50 of 10,000"
    newest = [many_id(i) for i in range(9_999, 9_949, -1)]
    assert table_ids(at) == newest
    picker = at.selectbox(key="job_selected")
    assert (picker.value, picker.options) == (newest[0], newest)  # the page's jobs only
    assert counter.most()[1] <= 50, counter.most()

    # pick one, then page on: the pick stays (first in the picker), beside the new page's jobs
    at.selectbox(key="job_selected").select(newest[3])
    rerun(at)
    at.selectbox(key="jobs_page_size").set_value(25)
    rerun(at)
    counter.calls.clear()
    at.button(key="jobs_next").click()
    rerun(at)
    assert jobs_caption(at) == "Jobs 26–50 of 10,000"
    assert table_ids(at) == newest[25:50]
    picker = at.selectbox(key="job_selected")
    assert (picker.value, picker.options) == (newest[3], [newest[3], *newest[25:50]])
    assert metrics(at)["Status"] == "succeeded"  # job 9_996: i % 4 == 0
    at.button(key="jobs_prev").click()
    rerun(at)
    assert jobs_caption(at) == "Jobs 1–25 of 10,000"
    assert at.selectbox(key="job_selected").options == newest[:25]

    # kind eval (i % 3 == 1), failed (i % 4 == 1): i % 12 == 1 -> 834, from page 1 again
    at.selectbox(key="jobs_kind").select("eval")
    rerun(at)
    assert jobs_caption(at) == "Jobs 1–25 of 3,333 (filtered from 10,000)"
    at.selectbox(key="jobs_status").select("failed")
    rerun(at)
    assert jobs_caption(at) == "Jobs 1–25 of 834 (filtered from 10,000)"
    assert table_ids(at)[:2] == [many_id(9_997), many_id(9_985)]
    at.text_input(key="jobs_search").set_value("EVAL-0099")  # ids eval-009900..eval-009999
    rerun(at)
    # i % 12 == 1 between 9_900 and 9_999: 9_901, 9_913, ..., 9_997 -> 9
    assert jobs_caption(at) == "Jobs 1–9 of 9 (filtered from 10,000)"
    at.text_input(key="jobs_search").set_value("eval-0099%")  # % is a character: no job
    rerun(at)
    assert jobs_caption(at) == "Jobs 0 of 0 (filtered from 10,000)"
    assert at.selectbox(key="job_selected").options == [newest[3]]  # the pick, kept alone

    name, rows = counter.most()
    assert rows <= 25, (name, rows)


def test_a_job_linked_from_elsewhere_is_picked_though_not_on_the_page(store):
    from tests.test_jobs import many_id, many_jobs

    many_jobs(store, 200)
    at = AppTest.from_file(str(ROUTER), default_timeout=30)
    at.query_params["job"] = many_id(7)
    at.run()
    at.switch_page("app_pages/jobs.py")
    rerun(at)
    picker = at.selectbox(key="job_selected")
    assert picker.value == many_id(7) and picker.options[0] == many_id(7)
    assert len(picker.options) == 51  # it, and the page's 50


def test_home_counts_ten_thousand_jobs_without_reading_them(store, monkeypatch):
    from tests.test_jobs import many_jobs
    from tests.ui.row_counter import RowCounter

    many_jobs(store)
    counter = RowCounter(monkeypatch)
    at = AppTest.from_file(str(ROUTER), default_timeout=30)
    rerun(at)  # the router opens Home
    assert [t.value for t in at.title] == ["CAI Studio"]
    assert metrics(at)["Jobs"] == "10,000"
    name, rows = counter.most()
    assert rows <= 10, (name, rows)  # counts and the newest demo job, not the jobs
