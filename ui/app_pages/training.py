"""Training: launch SFT, reward, DPO or RL jobs with an estimate first, watch their curves and
sample completions live, cancel or resume them, and see the trained models' lineage."""

import json
from typing import get_args

import pandas as pd
import streamlit as st
from pydantic.fields import FieldInfo

from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.lineage import constitution_text
from cai_engine.training import estimate, monitor
from cai_engine.training.config import bounds
from cai_engine.training.jobs import submit
from cai_engine.training.kinds import TRAINING_KINDS, TrainingKind
from ui.common import (
    flash,
    get_store,
    md_escape,
    pick_job,
    rerun_on_status_change,
    show_error,
    show_flash,
    show_lineage,
)
from ui.progress import show_progress

REFRESH_S = 2.0
STEPS = 20  # the form starts a short run by default; -1 trains for the configured epochs
store = get_store()

st.title("Training")
show_flash()
st.caption(
    "TRL's trainers on the pipeline's data. Online RL uses GRPO (PPO's clipped objective with "
    "a group baseline) or RLOO: TRL 1.x has no PPOTrainer, and these are its maintained "
    "online RL trainers."
)

# -- launch ---------------------------------------------------------------------------------


def data_choices(spec: TrainingKind) -> list[str]:
    """Finished jobs whose output the kind trains on (exported into the run folder)."""
    if not spec.sources:
        return []
    return [
        j.id
        for j in jobs.list_jobs(store, kind=list(spec.sources), reconcile_first=False)
        if j.status == "succeeded"
    ]


def number(column, label: str, field: FieldInfo, key: str, value=None, **kwargs):
    """A number input whose default, bounds and help come from the config field."""
    value = field.default if value is None else value
    low, high = (None if b is None else type(value)(b) for b in bounds(field))
    return column.number_input(label, low, high, value, key=key, help=field.description, **kwargs)


def job_data_inputs(spec: TrainingKind, fields: dict) -> tuple[str, dict]:
    """(data, {}): a finished job to export, or an export folder that wins when given."""
    data = st.selectbox(
        "Data (a finished job; it is exported into the run folder)",
        data_choices(spec) or ["(no finished job yet)"],
        key=f"{spec.name}_data_job",
    )
    path = st.text_input(
        "…or an export folder", "", key=f"{spec.name}_data_path", help=fields["data"].description
    )
    return path.strip() or data, {}


def online_inputs(spec: TrainingKind, fields: dict) -> tuple[str, dict]:
    """(prompt set, the RL options): what to sample, and what rewards the samples."""
    kind = spec.name
    d1, d2 = st.columns(2)
    data = d1.text_input(
        "Prompts", fields["data"].default, key=f"{kind}_data", help=fields["data"].description
    )
    scorers = {k for k, s in TRAINING_KINDS.items() if s.scores}
    trained = [m["name"] for m in store.trained_models() if m["kind"] in scorers]
    reward_model = d2.selectbox(
        "Reward model",
        ["(none)", *trained],
        key=f"{kind}_reward_model",
        help=fields["reward_model"].description,
    )
    r1, r2, r3 = st.columns(3)
    algorithm = r1.selectbox(
        "Algorithm",
        list(get_args(fields["algorithm"].annotation)),
        key=f"{kind}_algorithm",
        help=fields["algorithm"].description,
    )
    constitution = r2.text_input(
        "Constitution reward (optional)",
        "",
        key=f"{kind}_constitution",
        help=fields["constitution_reward"].description,
    )
    generations = number(r3, "Samples per prompt", fields["num_generations"], f"{kind}_gen")
    return data, {
        "algorithm": algorithm,
        "reward_model": None if reward_model == "(none)" else f"model:{reward_model}",
        "constitution_reward": constitution.strip() or None,
        "num_generations": int(generations),
    }


def run_inputs(kind: str, fields: dict) -> dict:
    """The options every trainer shares: base model, name, LoRA, steps, batch, launcher."""
    m1, m2, m3 = st.columns([3, 1, 1])
    model = m1.text_input(
        "Base model",
        fields["model"].default,
        key=f"{kind}_model",
        help=fields["model"].description,
    )
    name = m2.text_input("Name (optional)", "", key=f"{kind}_name", help=fields["name"].description)
    lora = m3.checkbox(
        "LoRA", fields["lora"].default, key=f"{kind}_lora", help=fields["lora"].description
    )
    h1, h2, h3, h4 = st.columns(4)
    steps = number(h1, "Max steps (-1: epochs)", fields["max_steps"], f"{kind}_steps", STEPS)
    lr = number(h2, "Learning rate", fields["learning_rate"], f"{kind}_lr", format="%.2e")
    batch = number(h3, "Batch size", fields["batch_size"], f"{kind}_batch")
    accum = number(h4, "Grad accumulation", fields["grad_accum"], f"{kind}_accum")
    l1, l2 = st.columns(2)
    # accelerate needs a config file: the CLI takes it (cai train ... --launcher accelerate)
    launcher = l1.selectbox("Launcher", ["python", "torchrun"], key=f"{kind}_launcher")
    nproc = number(l2, "Processes (torchrun)", fields["nproc"], f"{kind}_nproc")
    return {
        "model": model.strip(),
        "name": name.strip() or None,
        "lora": lora,
        "max_steps": int(steps),
        "learning_rate": float(lr),
        "batch_size": int(batch),
        "grad_accum": int(accum),
        "launcher": launcher,
        "nproc": int(nproc),
    }


def launch_form(spec: TrainingKind) -> None:
    fields = spec.config.model_fields
    with st.form(f"train_{spec.name}"):
        # jobs exported on the way, or (online RL) a prompt set and what rewards the samples
        inputs = job_data_inputs if spec.sources else online_inputs
        data, extra = inputs(spec, fields)
        config = {"data": data, **run_inputs(spec.name, fields), **extra}
        b1, b2 = st.columns(2)
        estimate_clicked = b1.form_submit_button("Estimate")
        start_clicked = b2.form_submit_button(f"Start {spec.label} job", type="primary")
    if estimate_clicked:
        show_estimate(spec, config)
    if start_clicked:
        start(spec, config)


def show_estimate(spec: TrainingKind, config: dict) -> None:
    """The job's steps and time, measured on this machine: the first estimate of a model and
    setting runs a few real steps (about as long as a job's start-up), later ones are instant."""
    try:
        cfg = jobs.validate_config(spec.name, config)
        with st.spinner(
            "Estimating (the first time for this model and setting, by timing a few real steps)…"
        ):
            est = estimate.estimate_for(store, spec.name, cfg)
    except CaiError as e:
        show_error(e, "Cannot estimate: ")
    else:
        st.info(f"{est.headline()}\n\n{est.basis()}", icon="⏱️")


def start(spec: TrainingKind, config: dict) -> None:
    try:
        job = submit(store, spec.name, config)
    except CaiError as e:
        show_error(e, "Not started: ")
    else:
        flash(f"Started {job.id}.")
        st.session_state["_select_training"] = job.id
        st.rerun()


training_jobs = jobs.list_jobs(store, kind=list(TRAINING_KINDS))
with st.expander("New training job", expanded=not training_jobs):
    specs = list(TRAINING_KINDS.values())
    for tab, spec in zip(st.tabs([s.label for s in specs]), specs, strict=True):
        with tab:
            launch_form(spec)

# -- monitor --------------------------------------------------------------------------------

if not training_jobs:
    st.info("No training jobs yet. Start one above, or with `cai train sft|reward|dpo|rl`.")
else:
    picked = pick_job(
        "Training job",
        training_jobs,
        "training_job",
        empty="",
        pending="_select_training",
        describe=lambda j: f"{j.id} · {j.status} · {j.config.get('model')}",
    )
    job_id = picked.id
    running = picked.status in jobs.ACTIVE

    @st.fragment(run_every=REFRESH_S if running else None)
    def live(job_id: str, shown_status: str) -> None:
        jobs.reconcile(store)
        job = jobs.get_job(store, job_id)
        show_progress(job)
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
            setup = next((e for e in job.run.events() if e["event"] == "training_setup"), None)
            source = monitor.samples_source(samples, setup)
            st.markdown(f"**Sample completions** on {source}, greedy")
            st.dataframe(
                pd.DataFrame(samples[::-1]).drop(columns="held_out", errors="ignore"),
                hide_index=True,
                column_config={"completion": st.column_config.TextColumn(width="large")},
            )
        rerun_on_status_change(shown_status, job.status)

    live(job_id, picked.status)

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
                    "constitution": constitution_text(
                        store,
                        (m["lineage"].get("data_manifest") or {}).get("constitution"),
                        m["constitution_hash"],
                    ),
                    "job": m["job_id"],
                    "created": m["created_at"],
                }
                for m in models
            ]
        ),
        hide_index=True,
        key="trained_models",
    )
    lineage_of = st.selectbox("Lineage of", [m["name"] for m in models], key="lineage_of")
    show_lineage(store, f"model:{lineage_of}")
    with st.expander("Everything stored with it (JSON)"):
        lineage = next(m["lineage"] for m in models if m["name"] == lineage_of)
        st.code(json.dumps(lineage, indent=2, default=str), language="json")
