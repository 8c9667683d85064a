"""Eval: evaluate models on the test splits, read the metrics with their intervals, see the
charts, and read the models' answers side by side where they disagree most."""

import json

import altair as alt
import pandas as pd
import streamlit as st

from cai_engine import eval as evaluation
from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.eval import EvalConfig
from cai_engine.fields import sampling_with
from cai_engine.models import EMBEDDED
from ui.common import (
    checkbox_for,
    get_store,
    md_escape,
    number_input_for,
    pick_job,
    show_error,
    show_flash,
    show_job_next,
    text_input_for,
)
from ui.progress import show_progress

REFRESH_S = 2.0
store = get_store()

st.title("Eval: compare models")
show_flash()
st.caption(
    "Did the constitution change the model, and what did it cost in helpfulness? An eval job "
    "answers the test splits with each model and asks a judge model; every number comes with "
    "its 95% interval and sample size."
)


def short(spec: str) -> str:
    """A readable name for a model spec: a path's last folder, or the spec itself."""
    if spec.startswith("hf:"):
        return spec[3:].split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    return spec


# -- launch ---------------------------------------------------------------------------------

with st.expander("New evaluation", expanded=not jobs.list_jobs(store, kind="eval")):
    trained = [f"model:{m['name']}" for m in store.trained_models() if m["kind"] != "reward"]
    critiques = [
        j.id
        for j in jobs.list_jobs(store, kind="critique", reconcile_first=False)
        if j.status == "succeeded"
    ]
    with st.form("new_eval"):
        chosen = st.multiselect(
            "Models (the first is the reference unless you pick one)",
            [EMBEDDED, *trained],
            default=[EMBEDDED, *trained[:2]],
            accept_new_options=True,
            help="Any model spec works, e.g. hf:/path/to/model or model:<name>.",
        )
        c1, c2, c3 = st.columns(3)
        harmful = text_input_for(c1, EvalConfig, "harmful", "Red-team set")
        helpful = text_input_for(c2, EvalConfig, "helpful", "Helpful set")
        limit = number_input_for(c3, EvalConfig, "limit", "Prompts per set", max_value=10_000)
        d1, d2, d3 = st.columns(3)
        judge = text_input_for(d1, EvalConfig, "judge", "Judge model")
        constitution = text_input_for(d2, EvalConfig, "constitution", "Constitution")
        critique_job = d3.selectbox(
            "Revision progress of (optional)", ["(none)", *critiques], help="A critique job."
        )
        e1, e2, e3 = st.columns(3)
        max_tokens = number_input_for(
            e1, EvalConfig, "sampling.max_new_tokens", "New tokens per answer"
        )
        both = checkbox_for(e2, EvalConfig, "both_orders", "Judge both orders")
        judge_refusals = checkbox_for(e3, EvalConfig, "judge_refusals", "Judge refusals too")
        if st.form_submit_button("Start eval job", type="primary"):
            try:
                job = evaluation.submit_eval(
                    store,
                    {
                        "models": chosen,
                        "harmful": harmful or None,
                        "helpful": helpful or None,
                        "limit": int(limit),
                        "judge": judge,
                        "constitution": constitution,
                        "critique_job": None if critique_job == "(none)" else critique_job,
                        "both_orders": both,
                        "judge_refusals": judge_refusals,
                        "sampling": sampling_with(EvalConfig, max_new_tokens=int(max_tokens)),
                    },
                )
            except CaiError as e:
                show_error(e)
            else:
                show_job_next(job, "_select_eval", f"Started {job.id}")

# -- pick an eval ---------------------------------------------------------------------------

eval_jobs = jobs.list_jobs(store, kind="eval")
job = pick_job(
    "Eval job",
    eval_jobs,
    "eval_job",
    empty="No eval jobs yet. Start one above, or run the demo from Home.",
    pending="_select_eval",
    describe=lambda j: f"{j.id} · {j.status} · {len(j.config['models'])} models",
)
job_id = job.id


@st.fragment(run_every=REFRESH_S if job.status in jobs.ACTIVE else None)
def progress(job_id: str, was_active: bool) -> None:
    jobs.reconcile(store)
    live = jobs.get_job(store, job_id)
    if live.status in jobs.ACTIVE or live.status != "succeeded":
        show_progress(live)
    if live.error:
        st.error(md_escape(live.error), icon="⚠️")
    if live.status in jobs.RESUMABLE and st.button("Resume", key="eval_resume"):
        try:
            jobs.resume(store, job_id)
        except CaiError as e:
            show_error(e)
        else:
            st.rerun(scope="app")
    if was_active and live.status not in jobs.ACTIVE:
        st.rerun(scope="app")  # finished: show its results


progress(job_id, job.status in jobs.ACTIVE)
jobs.ingest(store, job)
results = store.eval_results(job_id)
all_models = evaluation.eval_models(job)
reference = evaluation.EvalConfig(**job.config).ref_model
names = {m: short(m) for m in all_models}
if not results:
    if job.status == "succeeded":
        st.warning("This eval job finished without results.")
    st.stop()

models = st.multiselect(
    "Models to compare", all_models, default=all_models, format_func=names.get, key="cmp_models"
)
if not models:
    st.stop()
st.caption(
    f"Reference for win rates: **{md_escape(names[reference])}** · judge: "
    f"`{job.config['judge']}` · constitution: `{job.config['constitution']}`"
)

tab_metrics, tab_answers, tab_lineage = st.tabs(["Metrics", "Answers side by side", "Lineage"])

with tab_metrics:
    table = evaluation.results_table(results, models)
    frame = pd.DataFrame(
        [
            {"metric": evaluation.METRICS.get(r["metric"], r["metric"]), "set": r["set"]}
            | {names[m]: r[m] for m in models}
            for r in table
        ]
    )
    st.dataframe(frame, hide_index=True, key="metrics_table")
    st.caption(
        "Win rates are the judge's mean soft preference for the model over the reference (both "
        "orders averaged, a tie counts one half), with a bootstrap interval. Refusal rates are "
        "shares of answers, with Wilson intervals: *rule* counts answers matching a documented "
        "refusal pattern, *judge* those the judge thinks refuse (P > 0.5)."
    )
    chart_rows = [
        {
            "model": names[r["model"]],
            "metric": r["metric"],
            "value": r["value"],
            "low": r["low"],
            "high": r["high"],
            "n": r["n"],
        }
        for r in results
        if r["model"] in models
        and r["metric"] in evaluation.RATE_METRICS
        and r["value"] is not None
    ]
    if chart_rows:
        data = pd.DataFrame(chart_rows)
        base = alt.Chart(data).encode(
            y=alt.Y("model:N", title=None),
            tooltip=["model", "metric", alt.Tooltip("value:Q", format=".1%"), "n"],
        )
        bars = base.mark_bar().encode(
            x=alt.X(
                "value:Q", title=None, axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])
            ),
            color=alt.Color("model:N", legend=None),
        )
        whiskers = base.mark_rule().encode(x="low:Q", x2="high:Q")
        st.altair_chart(
            alt.layer(bars, whiskers, data=data)
            .facet(
                row=alt.Row(
                    "metric:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")
                )
            )
            .resolve_scale(y="independent"),
        )
    revision = [r for r in results if r["metric"].startswith("revision_round_")]
    if revision:
        st.markdown(
            f"**Revision progress** of critique job `{revision[0]['model']}`: how often the judge "
            "prefers round k's revision over the answer before it (above 50%: revisions help)."
        )
        rounds = pd.DataFrame(
            [
                {
                    "round": int(r["metric"].rsplit("_", 1)[1]),
                    "preferred": r["value"],
                    "low": r["low"],
                    "high": r["high"],
                    "n": r["n"],
                }
                for r in revision
            ]
        )
        line = alt.Chart(rounds).encode(x=alt.X("round:O", title="round"))
        st.altair_chart(
            line.mark_area(opacity=0.2).encode(y="low:Q", y2="high:Q")
            + line.mark_line(point=True).encode(
                y=alt.Y("preferred:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]))
            )
        )
    metrics = job.run.metrics()
    if metrics:
        last = metrics[-1]
        st.caption(
            f"Judge cost: {last.get('judge_tokens', 0):,} prompt tokens read, "
            f"{last.get('judge_seconds', 0):.0f} s; answers: {last.get('answers', 0)}."
        )

with tab_answers:
    set_names = evaluation.EvalConfig(**job.config).set_names()
    role = st.radio(
        "Prompts",
        list(set_names),
        format_func=lambda r: f"{'Red-team' if r == 'harmful' else 'Helpful'} ({set_names[r]})",
        horizontal=True,
        key="cmp_role",
    )
    comparisons = evaluation.side_by_side(store, job_id, models, set_names[role])
    if not comparisons:
        st.caption("No answers for this set yet.")
    else:
        search = st.text_input("Filter prompts by text", key="cmp_search")
        shown = [c for c in comparisons if search.lower() in c.prompt.lower()]
        st.caption(
            f"{len(shown)} prompts, those where the models disagree most first (the largest "
            "spread of the judge's win or refusal probability across the chosen models)."
        )
        if shown:
            pick = st.selectbox(
                "Prompt",
                range(len(shown)),
                format_func=lambda i: (
                    f"[spread {shown[i].disagreement:.2f}] {shown[i].prompt[:100]}"
                ),
                key="cmp_prompt",
            )
            c = shown[pick]
            st.markdown("**Prompt**")
            st.text(c.prompt)
            columns = st.columns(len(models))
            for col, m in zip(columns, models, strict=True):
                with col:
                    st.markdown(f"**{md_escape(names[m])}**")
                    win = c.win.get(m)
                    facts = []
                    if m == reference:
                        facts.append("reference")
                    elif win is not None:
                        facts.append(f"P(better than reference) {win:.2f}")
                    if c.refusal.get(m) is not None:
                        facts.append(f"P(refusal) {c.refusal[m]:.2f}")
                    if c.rule.get(m):
                        facts.append(f"refusal rule: {c.rule[m]}")
                    st.caption(" · ".join(facts) or "not judged")
                    st.text(c.answers.get(m, "(no answer)"))

with tab_lineage:
    st.caption("Where each model came from: its base, its data and the constitution version.")
    for m in models:
        lineage = evaluation.model_lineage(store, m)
        st.markdown(f"**{md_escape(names[m])}** · `{m}`")
        st.code(json.dumps(lineage, indent=2, default=str), language="json")
