"""Jobs: every job with its progress, and one job's live log, events, cancel and resume, with
a link to the page that shows what it made."""

import json
import time
from datetime import datetime

import pandas as pd
import streamlit as st

from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.progress import terminal_text, token_rate
from cai_engine.search import search_needle
from cai_engine.traces import SEARCH_MAX
from ui.common import (
    JOB_COLUMNS,
    RESULTS_PAGE,
    duration,
    flash,
    get_store,
    jobs_frame,
    linked_job,
    md_escape,
    page_controls,
    page_start,
    results_link,
    show_error,
    show_flash,
    time_left,
)
from ui.progress import show_progress

REFRESH_S = 2.0
ALL = "all"
STATUSES = [*jobs.ACTIVE, *jobs.TERMINAL]
store = get_store()

st.title("Jobs")
show_flash()


counts = jobs.job_counts(store)
any_active = any(counts["status"].get(s) for s in jobs.ACTIVE)

with st.expander("Check that jobs work on this machine"):
    st.caption(
        "Submits a `tick` job: no model, just numbered rows written in shards, about 5 seconds."
    )
    if st.button("Run a tick job", key="submit_tick"):
        job = jobs.submit(
            store, "tick", {"total": 50, "shard_size": 10, "delay_s": 0.1}, label="check"
        )
        st.session_state["job_selected"] = job.id
        flash(f"Submitted {job.id}.")
        st.rerun()

if not counts["total"]:
    st.info(
        "No jobs yet. Stages (critique, labels, training) start them; so does the button above."
    )
    st.stop()


def job_filter() -> dict | None:
    """The filter row, as `jobs.job_page` arguments; None (with the reason) when the search
    cannot be run."""
    f1, f2, f3 = st.columns([2, 2, 3])
    kind = f1.selectbox("Kind", [ALL, *jobs.kinds()], key="jobs_kind")
    status = f2.selectbox("Status", [ALL, *STATUSES], key="jobs_status")
    search = f3.text_input(
        "Search", key="jobs_search", placeholder="id or label", max_chars=SEARCH_MAX
    )
    try:
        search_needle(search, "search the jobs")
    except CaiError as e:
        show_error(e)
        return None
    return {
        "kind": None if kind == ALL else kind,
        "statuses": None if status == ALL else [status],
        "search": search.strip() or None,
    }


def page_of_jobs(where: dict) -> list:
    """One page of the jobs `where` keeps, newest first, with Previous/Next through the rest
    (keyset pages: each one costs the same however deep); returns the page's jobs."""
    after, size = page_start("jobs", tuple(sorted((k, str(v)) for k, v in where.items())))
    page, matching = jobs.job_page(store, **where, after=after, limit=size)
    page_controls(
        "jobs", "Jobs", len(page), matching, counts["total"], page[-1].cursor if page else None
    )
    job_table(where, after, size)
    return page


@st.fragment(run_every=REFRESH_S if any_active else None)
def job_table(where: dict, after, size: int) -> None:
    """The page's jobs with their progress, read again every few seconds while jobs run."""
    with store.session():
        page, _ = jobs.job_page(store, **where, after=after, limit=size)
        frame = jobs_frame(page)  # reads the status file of each job shown
    st.dataframe(frame, hide_index=True, key="jobs_table", column_config=JOB_COLUMNS)


# One opening of the store for the listing (not for cancelling below: that waits on the job's
# process, which may open the store as it stops).
with store.session():
    where = job_filter()
    if where is None:
        st.stop()
    page = page_of_jobs(where)
    # The picker offers the page's jobs, and keeps the job picked (or linked, `?job=`) when
    # paging or filtering moves it off the page.
    picked = st.session_state.get("job_selected")
    linked = linked_job()
    if linked:
        picked = linked
        del st.query_params["job"]
    ids = [j.id for j in page]
    if picked and picked not in ids:
        try:
            jobs.get_job(store, picked)
        except CaiError:
            picked = None  # deleted, or a link to a job this store does not have
        else:
            ids.insert(0, picked)
    if not ids:
        st.stop()
    st.session_state["job_selected"] = picked if picked in ids else ids[0]
    st.subheader("Job")
    selected = st.selectbox("Job", ids, key="job_selected", label_visibility="collapsed")
job = jobs.get_job(store, selected)

actions = st.columns([1, 1, 6])
if job.status in jobs.ACTIVE and actions[0].button("Cancel", key="cancel_job", type="primary"):
    try:
        with st.spinner("Stopping the job (SIGTERM, then SIGKILL after 10 s)…"):
            job = jobs.cancel(store, job.id)
        flash(f"{job.id} is {job.status}.")
    except CaiError as e:
        flash(str(e))
    st.rerun()
if job.status in jobs.RESUMABLE and actions[1].button("Resume", key="resume_job"):
    try:
        job = jobs.resume(store, job.id)
        flash(f"Resumed {job.id}.")
        st.rerun()
    except CaiError as e:
        show_error(e)


@st.fragment(run_every=REFRESH_S if job.status in jobs.ACTIVE else None)
def job_detail(job_id: str) -> None:
    jobs.reconcile(store)
    j = jobs.get_job(store, job_id)
    m = st.columns([1.6, 1, 1, 1, 1, 1])  # room for "interrupted"
    m[0].metric("Status", j.status)
    m[1].metric("Progress", f"{j.done}/{j.total}" if j.total else str(j.done))
    m[2].metric("Elapsed", duration(j.elapsed) or "-")
    m[3].metric("Time left", time_left(j) or "-")
    m[4].metric("Tokens", f"{j.tokens:,}")
    m[5].metric("Tokens/s", f"{token_rate(j, time.time()) or 0:.0f}")
    show_progress(j)
    if j.kind in RESULTS_PAGE:
        title = RESULTS_PAGE[j.kind].capitalize()
        what = "Label its pairs" if j.kind == "pairs" else "See its results"
        results_link(j, f"{what} on the {title} page")
    if j.error:
        st.error(md_escape(j.error), icon="⚠️")
    if j.status in jobs.ACTIVE and job.status not in jobs.ACTIVE:
        st.rerun()  # it just started: show the cancel button
    if j.status not in jobs.ACTIVE and job.status in jobs.ACTIVE:
        st.rerun()  # it just ended: stop refreshing, show resume if it applies

    tab_log, tab_events, tab_config = st.tabs(["Log", "Events", "Config"])
    with tab_log:  # as a terminal shows it: a rewritten progress line in its last state
        st.code(terminal_text(j.run.log_tail()) or "(empty)", language=None, wrap_lines=True)
    with tab_events:
        events = j.run.events(limit=200)
        if events:
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "time": datetime.fromtimestamp(e["time"]),
                            "event": e["event"],
                            "details": json.dumps(
                                {k: v for k, v in e.items() if k not in ("time", "event")},
                                default=str,
                            ),
                        }
                        for e in reversed(events)
                    ]
                ),
                hide_index=True,
                key="job_events",
            )
    with tab_config:
        st.json(j.config)
        st.caption(f"Run folder: {j.run_dir}  ·  pid {j.pid}  ·  attempts {j.attempts}")


job_detail(job.id)
