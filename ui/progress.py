"""The one progress widget every page shows for a job: a bar with the job's progress line.

The line comes from the engine (`cai_engine.progress.describe`), so the Jobs page, each stage's
page and `cai ... --wait` say the same thing: what the job is doing while nothing is counted
yet ("loading the model"), then its counts and, while it runs, the time left.
"""

from __future__ import annotations

import streamlit as st

from cai_engine.progress import describe, fraction


def show_progress(job, *, rate: bool = False) -> None:
    """A progress bar for `job` (a `cai_engine.jobs.Job`), labelled with its progress line,
    e.g. "running: 12/36 pairs · about 1 min 10 s left".

    Args:
        rate (`bool`, *optional*, defaults to `False`):
            Add the job's tokens per second to the line (pages about generation show it).
    """
    st.progress(fraction(job), text=describe(job, rate=rate))
