"""`ui/progress.py`: the one progress bar every page shows for a job, drawn by AppTest from
hand-made jobs (the line itself is specified in tests/test_progress.py)."""

from __future__ import annotations

import re
import time

from streamlit.testing.v1 import AppTest


def widget_page(cases: list[tuple[str, dict, bool]]) -> None:
    """One bar per (status, status.json, rate?) case, each for a job 60 s into its work."""
    from datetime import datetime, timedelta

    from cai_engine.jobs import Job
    from ui.progress import show_progress

    for status, live, rate in cases:
        started = datetime.now() - timedelta(seconds=60)
        ended = None if status in ("queued", "running") else datetime.now()
        state = {"state": "running" if ended is None else status, **live}
        job = Job("j", "label", None, {}, status, None, "/nowhere", 1, started, started, ended, None, state)  # fmt: skip
        show_progress(job, rate=rate)


def test_the_bar_shows_the_jobs_line_and_how_full_it_is():
    now = time.time()
    cases = [
        # loading the model: said, with the counts; an empty bar
        ("running", {"done": 0, "total": 36, "unit": "pairs", "phase": "loading the model",
                     "setup": True, "pace": [now - 20, 0, 0]}, False),
        # 9 of 36 pairs 60 s into its stretch: 27 left at 6.67 s each = 180 s; 900 tokens/60 s
        ("running", {"done": 9, "total": 36, "unit": "pairs", "tokens": 900,
                     "pace": [now - 60, 0, 0]}, True),
        # cancelled: its counts, no time left, the bar as far as it got
        ("cancelled", {"done": 6, "total": 40, "unit": "step", "pace": [now - 60, 0, 0]}, False),
        # succeeded without a total: a full bar
        ("succeeded", {"done": 0, "total": None}, False),
    ]  # fmt: skip
    at = AppTest.from_function(widget_page, args=(cases,), default_timeout=30)
    at.run()
    assert not at.exception, at.exception

    texts = [p.text for p in at.progress]
    assert texts[0] == "running: loading the model · 0/36 pairs"
    # d seconds pass between making the case and drawing it: (60 + d)/9 x 27 = 180 + 3d
    # seconds left, 900/(60 + d) tokens/s; d is well under 10 s
    shown = re.fullmatch(
        r"running: 9/36 pairs · about 3 min (\d\d) s left · (\d+) tokens/s", texts[1]
    )
    assert shown and int(shown[1]) < 30 and 13 <= int(shown[2]) <= 15, texts[1]
    assert texts[2:] == ["cancelled: step 6/40", "succeeded"]
    assert [p.value for p in at.progress] == [0, 25, 15, 100]  # percent: 0, 9/36, 6/40, full
