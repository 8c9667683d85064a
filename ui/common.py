"""What every studio page shares: the cached store, error display, confirmations, job
pickers, and form inputs that read their defaults from the stage configs.

Pages talk to the engine only; no SQL and no model code lives under ui/.
"""

from __future__ import annotations

import re
import time

import pandas as pd
import streamlit as st

from cai_engine.bundled import install_bundled
from cai_engine.constitution import ConstitutionVersion
from cai_engine.errors import CaiError
from cai_engine.fields import config_field, field_bounds
from cai_engine.jobs import get_job
from cai_engine.judge_verdict import judge_line
from cai_engine.judge_verdict import report as judge_report
from cai_engine.lineage import lineage_rows
from cai_engine.progress import format_duration
from cai_engine.store import Store
from cai_engine.training.kinds import TRAINING_KINDS

SEED_MAX = 2**31 - 1  # the largest seed a form offers (configs bound seeds below only)
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$&:=])")


@st.cache_resource(show_spinner=False)
def get_store() -> Store:
    """One store object per studio process; it holds no connection between page runs."""
    from cai_engine.jobs import reconcile

    store = Store()
    install_bundled(store)
    reconcile(store)  # nothing left over from before a restart shows as running
    return store


def md_escape(text: str) -> str:
    """Escape markdown so user or model text shows exactly as written inside st.error etc."""
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\n", "  \n")


def show_error(err: Exception | str, prefix: str = "") -> None:
    text = str(err)
    if not isinstance(err, CaiError | str):
        text = f"{type(err).__name__}: {err}"
    st.error(md_escape(prefix + text), icon="⚠️")


FLASH_S = 10.0  # how long a confirmation stays on its page, whatever reruns it


def flash(message: str) -> None:
    """Confirm `message` on this page's next runs for `FLASH_S` seconds: a launch's "Started
    …" stays while the page reruns itself as the new job moves from queued to running."""
    page = st.session_state.get("_page")
    st.session_state["_flash"] = (message, time.monotonic() + FLASH_S, page)


def show_flash() -> None:
    entry = st.session_state.get("_flash")
    if not entry:
        return
    message, until, page = entry
    if page != st.session_state.get("_page") or time.monotonic() > until:
        del st.session_state["_flash"]  # another page, or shown long enough
        return
    st.success(md_escape(message), icon="✅")


# -- forms whose defaults, bounds and help come from a stage config -------------------------


def number_input_for(
    where, config_cls, name: str, label: str, *, min_value=None, max_value=None, **kw
):
    """A number input for a config field (dotted for a sampling field, e.g.
    `"sampling.max_new_tokens"`): its default, bounds and help come from the config, so no page
    types them again. `min_value`/`max_value` apply only where the config sets no bound."""
    field, default = config_field(config_cls, name)
    bounds = field_bounds(field)
    cast = float if isinstance(default, float) else int
    step = 1 if cast is int else 0
    low = bounds.get("ge", bounds["gt"] + step if "gt" in bounds else min_value)
    high = bounds.get("le", bounds["lt"] - step if "lt" in bounds else max_value)
    return where.number_input(
        label,
        min_value=None if low is None else cast(low),
        max_value=None if high is None else cast(high),
        value=cast(default),
        help=field.description,
        **kw,
    )


def text_input_for(where, config_cls, name: str, label: str, **kw):
    """A text input whose default and help come from a config field."""
    field, default = config_field(config_cls, name)
    return where.text_input(label, default or "", help=kw.pop("help", field.description), **kw)


def checkbox_for(where, config_cls, name: str, label: str, **kw):
    """A checkbox whose default and help come from a config field."""
    field, default = config_field(config_cls, name)
    return where.checkbox(label, bool(default), help=kw.pop("help", field.description), **kw)


# -- pickers --------------------------------------------------------------------------------


def pick_version(
    store: Store,
    key: str,
    *,
    default: str | None = None,
    columns=None,
    optional: str | None = None,
) -> ConstitutionVersion | None:
    """A constitution picker and a version picker beside it; returns the version picked.

    The version offered first, and picked by default, is always the newest version of the
    constitution picked: the version box is keyed by the constitution and its newest version, so
    switching constitutions, or saving a new version, never keeps a version number left over from
    before. Each version shows as `name@N · date · note · hash prefix`. With `optional` (the text
    of a "none" entry, e.g. "(none)"), that entry comes first and picks nothing (None).
    """
    c1, c2 = columns or st.columns(2)
    names = [s.name for s in store.list_constitutions()]
    options = [optional, *names] if optional else names
    index = options.index(default) if default in options else 0
    name = c1.selectbox("Constitution", options, index=index, key=f"{key}_constitution")
    if not name or name == optional:
        c2.selectbox("Version", ["–"], disabled=True, key=f"{key}_version_none")
        return None
    versions = list(reversed(store.list_versions(name)))  # newest first
    by_seq = {v.seq: v for v in versions}
    seq = c2.selectbox(
        "Version",
        list(by_seq),
        format_func=lambda n: by_seq[n].label,
        key=f"{key}_version_{name}_{versions[0].seq}",
        help="The newest version comes first. A job pins the version it starts with, so later "
        "edits do not change it.",
    )
    return by_seq[seq]


def pick_job(label: str, job_list: list, key: str, describe, *, empty: str, pending: str = ""):
    """A select box of jobs (newest first) that keeps the user's pick across reruns; returns
    the job picked. `describe` turns a job into the text shown for it. Without jobs the page
    says `empty` and stops. A job id left in `st.session_state[pending]` (by `show_job_next`,
    or by another page) is picked once."""
    if not job_list:
        st.info(empty)
        st.stop()
    by_id = {j.id: j for j in job_list}
    chosen = st.session_state.pop(pending, None) if pending else None
    linked = linked_job()
    if linked in by_id:  # a link from another page (`job_url`) picks its job, once
        chosen = linked
        del st.query_params["job"]
    if chosen:
        st.session_state[key] = chosen
    # Assigned on every run, not only when missing: Streamlit keeps a select box's shown text
    # in the browser and resends it only for a value set from code, so without this the box
    # went on saying "queued" after the job had run and succeeded.
    st.session_state[key] = (
        st.session_state.get(key) if st.session_state.get(key) in by_id else job_list[0].id
    )
    job_id = st.selectbox(label, list(by_id), key=key, format_func=lambda i: describe(by_id[i]))
    return by_id[job_id]


def rerun_on_status_change(shown_status: str, live_status: str) -> None:
    """Inside a page's polling fragment: when the job's status has moved on from the one the
    page's full run showed (queued → running → succeeded), rerun the whole page, so its job
    picker, buttons and results follow; a fragment rerun alone redraws only itself."""
    if live_status != shown_status:
        st.rerun(scope="app")


def show_job_next(job, pending: str, message: str) -> None:
    """After a launch: say so, pick the new job in the page's job picker, and rerun."""
    flash(message)
    st.session_state[pending] = job.id
    st.rerun()


# -- links and lineage ----------------------------------------------------------------------

# The page that shows each job kind's results (the training kinds all show on Training).
RESULTS_PAGE = {
    "critique": "traces",
    "pairs": "labels",
    "label": "labels",
    "eval": "eval",
    "demo": "home",
    **{kind: "training" for kind in TRAINING_KINDS},
}


def linked_job() -> str | None:
    """The job a link from another page asked to show (`?job=<id>`), if any."""
    return st.query_params.get("job")


def job_url(job_id: str, kind: str | None) -> str:
    """A link to the page that shows a job's results, with the job picked there (the page's
    job picker reads `?job=`); the Jobs page for a kind no page shows."""
    page = RESULTS_PAGE.get(kind or "", "jobs")
    return f"./{'' if page == 'home' else page}?job={job_id}"


def results_link(job, label: str) -> None:
    """A link to the page that shows what `job` made, with the job picked there."""
    page = RESULTS_PAGE.get(job.kind)
    if page:
        st.page_link(f"app_pages/{page}.py", label=label, icon="➡️", query_params={"job": job.id})


def show_lineage(store: Store, spec: str) -> None:
    """Where a model came from, in a small table: the job that trained it, its data job (a
    link to the page that shows it), the constitution version as `name@N (hash)`, and its
    base, followed back to a model not trained here."""
    rows, last = [], None
    for r in lineage_rows(store, spec):
        value = md_escape(r.value)
        if r.job:
            value = value.replace(
                md_escape(r.job),
                f"[{md_escape(r.job)}]({job_url(r.job, _job_kind(store, r.job))})",
                1,
            )
        rows.append(
            {"model": "" if r.model == last else md_escape(r.model), "": r.what, "value": value}
        )
        last = r.model
    st.table(pd.DataFrame(rows).set_index("model"))


def _job_kind(store: Store, job_id: str) -> str | None:
    try:
        return get_job(store, job_id).kind
    except CaiError:
        return None


# -- paged tables -------------------------------------------------------------------------------

PAGE_SIZES = (25, 50, 100)


def page_start(key: str, scope) -> tuple[object, int]:
    """Where the paged table `key` is: the cursor its page starts after (None on the first
    page) and its page size. A new `scope` (job, filters) or page size starts at page 1.

    The cursors walked through are kept in `st.session_state[f"{key}_cursors"]`, so Previous
    goes back the way Next came, and a keyset page deep in a job costs what the first does."""
    size = st.session_state.get(f"{key}_page_size", PAGE_SIZES[1])
    cursors = st.session_state.get(f"{key}_cursors")
    if not cursors or cursors["scope"] != (scope, size):
        cursors = st.session_state[f"{key}_cursors"] = {"scope": (scope, size), "after": [None]}
    return cursors["after"][-1], size


def page_controls(key: str, noun: str, shown: int, matching: int, total: int, next_cursor) -> None:
    """Above the paged table `key` (see `page_start`): "Traces 51–100 of 1,234 (filtered from
    5,000)", Previous, Next and the page size. `shown` rows are on this page, `matching` pass
    the filters, `total` are there in all; `next_cursor` is where the next page starts."""
    cursors = st.session_state[f"{key}_cursors"]
    size = cursors["scope"][1]
    first = (len(cursors["after"]) - 1) * size
    where = f"{first + 1:,}–{first + shown:,} of {matching:,}" if shown else f"0 of {matching:,}"
    note = "" if matching == total else f" (filtered from {total:,})"
    c1, c2, c3, c4 = st.columns([5, 1, 1, 1.4], vertical_alignment="bottom")
    c1.caption(f"{noun} {where}{note}")
    c2.button(
        "← Previous",
        key=f"{key}_prev",
        disabled=len(cursors["after"]) == 1,
        on_click=cursors["after"].pop,
    )
    c3.button(
        "Next →",
        key=f"{key}_next",
        disabled=first + shown >= matching,
        on_click=cursors["after"].append,
        args=(next_cursor,),
    )
    c4.selectbox("Per page", PAGE_SIZES, index=1, key=f"{key}_page_size")


def show_judge(model: str, check, consequence: str) -> None:
    """Which judge produced a page's numbers and whether it passed its check on the gold set
    (`cai judge check`), said before any of its numbers; how and when it was checked below."""
    line = md_escape(judge_line(model, check))
    if check is None:
        st.caption(line)
        return
    if check.qualified:
        st.success(line, icon="✅")
    else:
        st.warning(f"{line}. {consequence}", icon="⚠️")
    with st.expander("How the judge was checked"):
        st.text("\n".join(line for line in judge_report(check)[2:] if line))  # badge above


def grey_rows(frame: pd.DataFrame, grey: pd.Series):
    """`frame` for `st.dataframe` with the rows where `grey` is true in grey text (numbers a
    reader should not lean on), or the frame itself when there are none."""
    if not grey.any():
        return frame
    marks = grey.to_numpy()
    return frame.style.apply(
        lambda row: ["color: #9aa0a6" if marks[row.name] else "" for _ in row], axis=1
    )


# -- job tables (Jobs, and Home's recent jobs) ------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def time_left(job) -> str:
    left = job.eta
    return format_duration(left) if left else ""


def jobs_frame(listed: list) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "id": j.id,
                "kind": j.kind,
                "label": j.label or "",
                "status": j.status,
                "progress": j.progress
                if j.progress is not None
                else (1.0 if j.status == "succeeded" else 0.0),
                "done": f"{j.done}/{j.total}" if j.total else str(j.done or ""),
                "elapsed": duration(j.elapsed),
                "left": time_left(j),
                "tokens": j.tokens,
                "created": j.created_at,
            }
            for j in listed
        ],
        columns=[
            "id",
            "kind",
            "label",
            "status",
            "progress",
            "done",
            "elapsed",
            "left",
            "tokens",
            "created",
        ],
    )


JOB_COLUMNS = {
    "progress": st.column_config.ProgressColumn(
        "progress", min_value=0.0, max_value=1.0, format="percent"
    ),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss"),
}
