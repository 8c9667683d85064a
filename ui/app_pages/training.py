"""Training: launch SFT, reward, DPO or RL jobs with an estimate first, watch their curves and
sample completions live, cancel or resume them, and see the trained models' lineage."""

import json

import pandas as pd
import streamlit as st

from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.models import EMBEDDED
from cai_engine.training import monitor
from cai_engine.training.config import CONFIGS
from cai_engine.training.data import model_parameters, preview
from cai_engine.training.jobs import submit
from ui.common import flash, get_store, md_escape, show_error, show_flash

REFRESH_S = 2.0
KINDS = {
    "sft": "SFT",
    "reward": "Reward model",
    "dpo": "DPO",
    "rl": "Online RL (GRPO / RLOO)",
}
store = get_store()

pending = st.session_state.pop("_select_training", None)
if pending:
    st.session_state["training_job"] = pending

st.title("Training")
show_flash()
st.caption(
    "TRL's trainers on the pipeline's data. Online RL uses GRPO (PPO's clipped objective with "
    "a group baseline) or RLOO: TRL 1.x has no PPOTrainer, and these are its maintained "
    "online RL trainers."
)

# -- launch ---------------------------------------------------------------------------------


def data_choices(kind: str) -> list[str]:
    wanted = {"sft": ("critique",), "reward": ("label", "critique"), "dpo": ("label", "critique")}
    return [
        j.id
        for j in jobs.list_jobs(store, reconcile_first=False)
        if j.kind in wanted.get(kind, ()) and j.status == "succeeded"
    ]


def launch_form(kind: str) -> None:
    defaults = CONFIGS[kind]
    fields = defaults.model_fields
    with st.form(f"train_{kind}"):
        if kind == "rl":
            d1, d2 = st.columns(2)
            data = d1.text_input("Prompts", "red-team:train", key=f"{kind}_data")
            trained = [m["name"] for m in store.trained_models() if m["kind"] == "reward"]
            reward_model = d2.selectbox(
                "Reward model", ["(none)", *trained], key=f"{kind}_reward_model"
            )
            r1, r2, r3 = st.columns(3)
            algorithm = r1.selectbox("Algorithm", ["grpo", "rloo"], key=f"{kind}_algorithm")
            constitution = r2.text_input(
                "Constitution reward (optional)",
                "",
                key=f"{kind}_constitution",
                help=fields["constitution_reward"].description,
            )
            generations = r3.number_input("Samples per prompt", 2, 64, 4, key=f"{kind}_gen")
        else:
            choices = data_choices(kind)
            data = st.selectbox(
                "Data (a finished job; it is exported into the run folder)",
                choices or ["(no finished job yet)"],
                key=f"{kind}_data_job",
            )
            path = st.text_input(
                "…or an export folder", "", key=f"{kind}_data_path", help=fields["data"].description
            )
            data = path.strip() or data
        m1, m2, m3 = st.columns([3, 1, 1])
        model = m1.text_input("Base model", EMBEDDED, key=f"{kind}_model")
        name = m2.text_input("Name (optional)", "", key=f"{kind}_name")
        lora = m3.checkbox("LoRA", False, key=f"{kind}_lora", help=fields["lora"].description)
        h1, h2, h3, h4 = st.columns(4)
        max_steps = h1.number_input(
            "Max steps (-1: epochs)", -1, 1_000_000, 20, key=f"{kind}_steps"
        )
        lr = h2.number_input(
            "Learning rate",
            value=float(fields["learning_rate"].default),
            format="%.2e",
            key=f"{kind}_lr",
        )
        batch = h3.number_input("Batch size", 1, 1024, 4, key=f"{kind}_batch")
        accum = h4.number_input("Grad accumulation", 1, 1024, 2, key=f"{kind}_accum")
        l1, l2 = st.columns(2)
        launcher = l1.selectbox("Launcher", ["python", "torchrun"], key=f"{kind}_launcher")
        nproc = l2.number_input("Processes (torchrun)", 1, 64, 1, key=f"{kind}_nproc")
        b1, b2 = st.columns(2)
        estimate_clicked = b1.form_submit_button("Estimate")
        start_clicked = b2.form_submit_button(f"Start {KINDS[kind]} job", type="primary")
    config = {
        "data": data,
        "model": model.strip(),
        "name": name.strip() or None,
        "lora": lora,
        "max_steps": int(max_steps),
        "learning_rate": float(lr),
        "batch_size": int(batch),
        "grad_accum": int(accum),
        "launcher": launcher,
        "nproc": int(nproc),
    }
    if kind == "rl":
        config.update(
            algorithm=algorithm,
            reward_model=None if reward_model == "(none)" else f"model:{reward_model}",
            constitution_reward=constitution.strip() or None,
            num_generations=int(generations),
        )
    if estimate_clicked:
        try:
            cfg = jobs.validate_config(kind, config)
            if kind == "rl":
                from cai_engine.prompts import select_prompts

                examples = [{"prompt": p.messages} for p in select_prompts(store, cfg.data)]
            else:
                examples = preview(store, cfg.data, kind)
            est = monitor.estimate(examples, cfg, kind, model_parameters(cfg.model, store.home))
        except CaiError as e:
            show_error(e, "Cannot estimate: ")
        else:
            st.info(est.text(), icon="⏱️")
    if start_clicked:
        try:
            job = submit(store, kind, config)
        except CaiError as e:
            show_error(e, "Not started: ")
        else:
            flash(f"Started {job.id}.")
            st.session_state["_select_training"] = job.id
            st.rerun()


training_jobs = [j for j in jobs.list_jobs(store) if j.kind in KINDS]
with st.expander("New training job", expanded=not training_jobs):
    for tab, kind in zip(st.tabs(list(KINDS.values())), KINDS, strict=True):
        with tab:
            launch_form(kind)

# -- monitor --------------------------------------------------------------------------------

if not training_jobs:
    st.info("No training jobs yet. Start one above, or with `cai train sft|reward|dpo|rl`.")
else:
    by_id = {j.id: j for j in training_jobs}
    if st.session_state.get("training_job") not in by_id:
        st.session_state["training_job"] = training_jobs[0].id
    job_id = st.selectbox(
        "Training job",
        list(by_id),
        key="training_job",
        format_func=lambda i: f"{i} · {by_id[i].status} · {by_id[i].config.get('model')}",
    )
    running = by_id[job_id].status in jobs.ACTIVE

    @st.fragment(run_every=REFRESH_S if running else None)
    def live(job_id: str) -> None:
        jobs.reconcile(store)
        job = jobs.get_job(store, job_id)
        if job.total:
            left = monitor.eta_seconds(job.done, job.total, job.elapsed)
            eta = f" · about {monitor.format_duration(left)} left" if left else ""
            st.progress(
                min(1.0, job.done / job.total),
                text=f"{job.status}: step {job.done}/{job.total}{eta}",
            )
        else:
            st.caption(f"{job.status}: preparing (loading data and model)")
        if job.error:
            st.error(md_escape(job.error), icon="⚠️")
        b1, b2, _ = st.columns([1, 1, 4])
        if job.status in jobs.ACTIVE and b1.button("Cancel", key="train_cancel"):
            with st.spinner("Saving a checkpoint and stopping…"):
                jobs.cancel(store, job_id)
            st.rerun(scope="app")
        if job.status in jobs.RESUMABLE and b2.button("Resume", key="train_resume"):
            try:
                jobs.resume(store, job_id)
            except CaiError as e:
                show_error(e)
            else:
                st.rerun(scope="app")
        charts = monitor.curves(job.run.metrics(), job.kind)
        columns = st.columns(2)
        for n, (title, rows) in enumerate(charts):
            with columns[n % 2]:
                st.markdown(f"**{title}**")
                st.line_chart(pd.DataFrame(rows).set_index("step"))
        if not charts:
            st.caption("Curves appear after the first logged step.")
        samples = monitor.read_samples(job.run.path)
        if samples:
            st.markdown("**Sample completions** (held-out prompts, greedy)")
            st.dataframe(
                pd.DataFrame(samples[::-1]),
                hide_index=True,
                column_config={"completion": st.column_config.TextColumn(width="large")},
            )
        if running and job.status not in jobs.ACTIVE:
            st.rerun(scope="app")

    live(job_id)

# -- artifacts ------------------------------------------------------------------------------

st.subheader("Trained models")
models = store.trained_models()
if not models:
    st.caption("Models appear here when a training job succeeds; use them as model:<name>.")
else:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "model": f"model:{m['name']}",
                    "kind": m["kind"],
                    "base": m["base_model"],
                    "data": m["data"],
                    "constitution": (m["constitution_hash"] or "")[:12],
                    "job": m["job_id"],
                    "created": m["created_at"],
                }
                for m in models
            ]
        ),
        hide_index=True,
        key="trained_models",
    )
    picked = st.selectbox("Lineage of", [m["name"] for m in models], key="lineage_of")
    lineage = next(m["lineage"] for m in models if m["name"] == picked)
    st.code(json.dumps(lineage, indent=2, default=str), language="json")
