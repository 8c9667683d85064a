"""What every studio page shares: the cached store, error display, and one-shot messages.

Pages talk to the engine only; no SQL and no model code lives under ui/.
"""

from __future__ import annotations

import re

import streamlit as st

from cai_engine.bundled import install_bundled
from cai_engine.errors import CaiError
from cai_engine.store import Store

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
