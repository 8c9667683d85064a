"""Home: what is in the store, and where to go next."""

import streamlit as st

from ui.common import get_store

st.title("CAI Studio")
st.caption(
    "A Constitutional AI workbench: write principles, watch a model critique and revise itself "
    "under them, check the AI's preference labels, and train on both."
)

store = get_store()
counts = store.counts()
cols = st.columns(5)
cols[0].metric("Constitutions", counts["constitutions"])
cols[1].metric("Versions", counts["versions"])
cols[2].metric("Prompt sets", counts["prompt_sets"])
cols[3].metric("Prompts", counts["prompts"])
cols[4].metric("Jobs", counts["jobs"])

st.subheader("Get started")
st.page_link("app_pages/constitutions.py", label="Edit a constitution", icon="📜")
st.page_link("app_pages/prompts.py", label="Browse or import prompts", icon="💬")
st.page_link("app_pages/traces.py", label="Run critique→revision (SL-CAI)", icon="🔁")
st.page_link("app_pages/labels.py", label="Label and spot-check preferences (RL-CAI)", icon="🏷️")
st.page_link("app_pages/training.py", label="Train on them: SFT, reward, DPO, RL", icon="🏋️")
st.caption(f"Data home: {store.home}")
