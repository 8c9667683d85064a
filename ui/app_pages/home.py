"""Home: what is in the store, and where to go next."""

import pandas as pd
import streamlit as st

from cai_engine import demo, jobs
from cai_engine.errors import CaiError
from cai_engine.fields import config_field
from ui.common import JOB_COLUMNS, get_store, jobs_frame, md_escape, pick_version, show_error
from ui.progress import show_progress

REFRESH_S = 2.0
RECENT_JOBS = 5

st.title("CAI Studio")
st.caption(
    "A Constitutional AI workbench: write principles, watch a model critique and revise itself "
    "under them, check the AI's preference labels, and train on both."
)

store = get_store()
counts = store.counts()
shown = {  # SQL counts: as fast with 10,000 jobs and a million prompts as with none
    "Constitutions": "constitutions",
    "Versions": "versions",
    "Prompt sets": "prompt_sets",
    "Prompts": "prompts",
    "Jobs": "jobs",
}
for col, (label, key) in zip(st.columns(len(shown)), shown.items(), strict=True):
    col.metric(label, f"{counts[key]:,}")

st.subheader("Run the demo")
st.caption(
    "The whole pipeline as a chain of real jobs: critique→revision on red-team prompts, SFT on "
    "the revisions, pairs from the SFT model, AI preference labels, DPO, then an eval of base vs "
    "SFT vs DPO on the test splits. Every stage shows live on its page as it runs."
)
PROFILE_TEXT = {
    "default": f"Embedded SmolLM2-135M (about {demo.PROFILES['default'].estimate_min:.0f} min on 2 cores)",
    "tiny": "Tiny random model: checks the plumbing in about a minute; its text is gibberish",
}
d1, d2 = st.columns([3, 1])
profile_field, default_profile = config_field(demo.DemoConfig, "profile")
profile = d1.radio(
    "Profile",
    list(PROFILE_TEXT),
    index=list(PROFILE_TEXT).index(default_profile),
    format_func=PROFILE_TEXT.get,
    key="demo_profile",
    horizontal=True,
    help=profile_field.description,
)
PAIRS_TEXT = {
    "samples": "Two sampled answers, labelled by the AI judge (RLAIF)",
    "contrastive": "Contrastive pairs: a positive and a negative prompt, preferred side known (RLCD)",
}
pairs_field, default_pairs = config_field(demo.DemoConfig, "pairs")
pairs = d1.radio(
    "Preference pairs",
    list(PAIRS_TEXT),
    index=list(PAIRS_TEXT).index(default_pairs),
    format_func=PAIRS_TEXT.get,
    key="demo_pairs",
    help=pairs_field.description,
)
demo_version = pick_version(store, "demo", default="harmless", columns=st.columns([3, 2]))
if d2.button("Run the demo", type="primary", key="run_demo"):
    try:
        demo.submit_demo(
            store,
            {
                "profile": profile,
                "pairs": pairs,
                "constitution": demo_version.ref if demo_version else "",
            },
        )
    except CaiError as e:
        show_error(e)

latest = demo.latest_demo(store)


@st.fragment(run_every=REFRESH_S if latest and latest.status in jobs.ACTIVE else None)
def demo_status(job_id: str) -> None:
    jobs.reconcile(store)
    job = jobs.get_job(store, job_id)
    rows = demo.stage_rows(store, job)
    finished = sum(r["status"] == "succeeded" for r in rows)
    st.progress(
        finished / len(rows), text=f"demo {job.id}: {job.status} · {finished}/{len(rows)} stages"
    )
    if job.status in jobs.ACTIVE:
        show_progress(job)  # the stage in flight: what it is doing, and its time left
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)
        },
        key="demo_stages",
    )
    if job.error:
        st.error(md_escape(job.error), icon="⚠️")
    c1, c2, _ = st.columns([1, 1, 3])
    if job.status in jobs.ACTIVE and c1.button("Cancel the demo", key="demo_cancel"):
        with st.spinner("Stopping the stage in flight…"):
            jobs.cancel(store, job.id)
        st.rerun(scope="app")
    if job.status in jobs.RESUMABLE and c2.button("Resume the demo", key="demo_resume"):
        try:
            jobs.resume(store, job.id)
        except CaiError as e:
            show_error(e)
        else:
            st.rerun(scope="app")
    if job.status == "succeeded":
        seconds = next((m["seconds"] for m in job.run.metrics() if "seconds" in m), None)
        took = f" in {seconds / 60:.1f} min" if seconds else ""
        st.success(f"The demo finished{took}.", icon="✅")
        eval_job = demo.read_stages(job.run)["eval"]
        if st.button("Open Eval", key="demo_eval", type="primary"):
            st.session_state["_select_eval"] = eval_job
            st.switch_page("app_pages/eval.py")
    if st.session_state.get("_demo_active") and job.status not in jobs.ACTIVE:
        st.session_state["_demo_active"] = False
        st.rerun(scope="app")
    st.session_state["_demo_active"] = job.status in jobs.ACTIVE


if latest:
    demo_status(latest.id)

recent = jobs.list_jobs(store, limit=RECENT_JOBS)  # the newest few, by SQL, however many
if recent:
    st.subheader("Recent jobs")
    st.dataframe(jobs_frame(recent), hide_index=True, key="recent_jobs", column_config=JOB_COLUMNS)
    st.page_link("app_pages/jobs.py", label="Every job, its log, cancel and resume", icon="⚙️")

st.subheader("Get started")
st.page_link("app_pages/constitutions.py", label="Edit a constitution", icon="📜")
st.page_link("app_pages/prompts.py", label="Browse or import prompts", icon="💬")
st.page_link("app_pages/traces.py", label="Run critique→revision (SL-CAI)", icon="🔁")
st.page_link("app_pages/labels.py", label="Label and spot-check preferences (RL-CAI)", icon="🏷️")
st.page_link("app_pages/training.py", label="Train on them: SFT, reward, DPO, RL", icon="🏋️")
st.page_link("app_pages/eval.py", label="Evaluate and compare models", icon="⚖️")
st.caption(f"Data home: {store.home}")
