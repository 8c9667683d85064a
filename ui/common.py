"""What every studio page shares: the cached store, error display, one-shot messages, job
pickers, and form inputs that read their defaults from the stage configs.

Pages talk to the engine only; no SQL and no model code lives under ui/.
"""

from __future__ import annotations

import re

import streamlit as st

from cai_engine.bundled import install_bundled
from cai_engine.errors import CaiError
from cai_engine.fields import config_field, field_bounds
from cai_engine.store import Store

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


def flash(message: str) -> None:
    """Show `message` once, on the next run of the page."""
    st.session_state["_flash"] = message


def show_flash() -> None:
    message = st.session_state.pop("_flash", None)
    if message:
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


def pick_job(label: str, job_list: list, key: str, describe, *, empty: str, pending: str = ""):
    """A select box of jobs (newest first) that keeps the user's pick across reruns; returns
    the job picked. `describe` turns a job into the text shown for it. Without jobs the page
    says `empty` and stops. A job id left in `st.session_state[pending]` (by `show_job_next`,
    or by another page) is picked once."""
    if not job_list:
        st.info(empty)
        st.stop()
    chosen = st.session_state.pop(pending, None) if pending else None
    if chosen:
        st.session_state[key] = chosen
    by_id = {j.id: j for j in job_list}
    if st.session_state.get(key) not in by_id:
        st.session_state[key] = job_list[0].id
    job_id = st.selectbox(label, list(by_id), key=key, format_func=lambda i: describe(by_id[i]))
    return by_id[job_id]


def show_job_next(job, pending: str, message: str) -> None:
    """After a launch: say so, pick the new job in the page's job picker, and rerun."""
    flash(message)
    st.session_state[pending] = job.id
    st.rerun()
