"""CAI Studio: the Streamlit router. Run with `cai studio` or `make run`."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # lets pages import `ui.common` under `streamlit run`
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

PAGES = Path(__file__).resolve().parent / "app_pages"

st.set_page_config(page_title="CAI Studio", page_icon="⚖️", layout="wide")

nav = st.navigation(
    [
        st.Page(PAGES / "home.py", title="Home", icon="🏠", default=True),
        st.Page(PAGES / "constitutions.py", title="Constitutions", icon="📜"),
        st.Page(PAGES / "prompts.py", title="Prompts", icon="💬"),
        st.Page(PAGES / "traces.py", title="Traces", icon="🔁"),
        st.Page(PAGES / "labels.py", title="Labels", icon="🏷️"),
        st.Page(PAGES / "training.py", title="Training", icon="🏋️"),
        st.Page(PAGES / "eval.py", title="Eval", icon="⚖️"),
        st.Page(PAGES / "jobs.py", title="Jobs", icon="⚙️"),
    ]
)
st.session_state["_page"] = nav.url_path  # which page a confirmation (`flash`) belongs to
nav.run()
