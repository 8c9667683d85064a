"""Eval: evaluate models on the test splits, read the metrics with their intervals, see the
charts, and read the models' answers side by side where they disagree most."""

import pandas as pd
import streamlit as st

from cai_engine import eval as evaluation
from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.eval import EvalConfig
from cai_engine.fields import sampling_with
from cai_engine.judge_verdict import is_judge_metric
from cai_engine.lineage import VersionNames
from cai_engine.models import EMBEDDED
from cai_engine.search import search_needle
from cai_engine.traces import SEARCH_MAX
from ui.common import (
    checkbox_for,
    get_store,
    grey_rows,
    md_escape,
    number_input_for,
    page_controls,
    page_start,
    pick_job,
    pick_version,
    rerun_on_status_change,
    show_error,
    show_flash,
    show_job_next,
    show_judge,
    show_lineage,
    text_input_for,
)
from ui.eval_charts import rate_rows, rates_chart, revision_chart, revision_rows
from ui.progress import show_progress

REFRESH_S = 2.0
store = get_store()

# One opening of the store for the whole run of the page (the progress fragment, when it
# reruns alone, opens its own): each query inside reuses it instead of opening the file again.
with store.session():
    st.title("Eval: compare models")
    show_flash()
    st.caption(
        "Did the constitution change the model, and what did it cost in helpfulness? An eval job "
        "answers the test splits with each model and asks a judge model; every number comes with "
        "its 95% interval and sample size."
    )

    # -- launch ---------------------------------------------------------------------------------

    with st.expander("New evaluation", expanded=not jobs.list_jobs(store, kind="eval")):
        trained = [f"model:{m['name']}" for m in store.trained_models() if m["kind"] != "reward"]
        critiques = [
            j.id
            for j in jobs.list_jobs(store, kind="critique", reconcile_first=False)
            if j.status == "succeeded"
        ]
        # Outside the form: picking a constitution must update the versions offered.
        judge_version = pick_version(store, "eval", default="harmless")
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
            d1, d3 = st.columns(2)
            judge = text_input_for(d1, EvalConfig, "judge", "Judge model")
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
                            "constitution": judge_version.ref if judge_version else "",
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
        describe=lambda j: f"{j.id} · {j.status} · {len(j.config.get('models', []))} models",
    )
    job_id = job.id

    @st.fragment(run_every=REFRESH_S if job.status in jobs.ACTIVE else None)
    def progress(job_id: str, shown_status: str) -> None:
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
        rerun_on_status_change(shown_status, live.status)  # e.g. finished: show its results

    progress(job_id, job.status)
    results = store.eval_results(job_id)
    if not results:
        # The job writes its results last and ingesting goes table by table in name order
        # (answers, judgements, results): once the results are in, so is everything else, so a
        # finished job costs one small query here, not a listing of its shards on every run.
        jobs.ingest(store, job)
        results = store.eval_results(job_id)
    all_models = evaluation.eval_models(job)
    reference = evaluation.EvalConfig(**job.config).ref_model
    names = evaluation.model_labels(all_models)  # distinct labels, never look-alike prefixes
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
        f"**{md_escape(job.config['judge'])}** · constitution: "
        f"**{md_escape(VersionNames(store)(job.config['constitution']))}**"
    )
    check = store.judge_check_for_job(job_id)
    show_judge(
        job.config["judge"],
        check,
        "Its win rates, judged refusal rates and revision progress are greyed below; the "
        "rule-based and counted rows come first.",
    )
    distrust = check is not None and not check.qualified  # grey the judge's rows

    def answers_page(
        job_id: str, models: list, prompt_set: str, search: str, answered: int
    ) -> None:
        """One page of the set's prompts, those where the models disagree most first, Previous and
        Next through the rest, and the picked prompt's answers: each read alone, never the set."""
        scope = (job_id, tuple(models), prompt_set, search.strip().lower())
        after, size = page_start("cmp", scope)  # an offset: the order is by disagreement
        offset = after or 0
        page, matching = store.eval_answer_page(
            job_id,
            models,
            prompt_set,
            reference=reference,
            search=search,
            offset=offset,
            limit=size,
        )
        page_controls("cmp", "Prompts", len(page), matching, answered, offset + size)
        st.caption(
            "Those where the models disagree most first: the spread is the largest difference, "
            "across the chosen models, of the judge's win or refusal probability."
        )
        if not page:
            return
        picked = st.dataframe(
            pd.DataFrame(
                [
                    {
                        "spread": r["disagreement"],
                        "prompt": r["prompt_text"],
                        "category": r["category"],
                        "cut off": f"✂ {r['cut_off']}" if r["cut_off"] else "",
                    }
                    for r in page
                ],
                columns=["spread", "prompt", "category", "cut off"],
            ),
            hide_index=True,
            key="cmp_table",
            on_select="rerun",
            selection_mode="single-row",
            column_config={
                "spread": st.column_config.NumberColumn(format="%.2f"),
                "prompt": st.column_config.TextColumn(width="large"),
                "cut off": st.column_config.TextColumn(help="Answers cut off at the token limit"),
            },
        )
        rows = [r for r in (picked.selection.rows if picked else []) if r < len(page)]
        chosen = page[rows[0] if rows else 0]
        c = evaluation.prompt_comparison(  # its answers, read now: one prompt, not the set
            store, job_id, models, prompt_set, chosen["prompt_id"], reference
        )
        if c is not None:
            show_comparison(c)

    def show_comparison(c) -> None:
        st.markdown(f"**Prompt** · spread {c.disagreement:.2f}")
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
                if c.cut_off.get(m):
                    st.markdown(
                        ":orange-badge[✂ cut off at the token limit]",
                        help="The answer stopped because it reached *New tokens per answer* "
                        "(finish reason `length`), not because the model ended it.",
                    )
                st.text(c.answers.get(m, "(no answer)"))

    tab_metrics, tab_answers, tab_lineage = st.tabs(["Metrics", "Answers side by side", "Lineage"])

    with tab_metrics:
        table = evaluation.results_table(results, models)
        if distrust:  # what needs no judge first; sorted() keeps each group's order
            table = sorted(table, key=lambda r: is_judge_metric(r["metric"]))
        frame = pd.DataFrame(
            [
                {"metric": evaluation.metric_name(r["metric"]), "set": r["set"]}
                | {names[m]: r[m] for m in models}
                | {
                    "measured by": (
                        ("judge (NOT qualified)" if distrust else "judge")
                        if is_judge_metric(r["metric"])
                        else "rules / counts"
                    ),
                    "what it measures": evaluation.METRICS.get(r["metric"], ""),
                    "key": r["metric"],
                }
                for r in table
            ]
        )
        st.dataframe(
            grey_rows(frame, frame["measured by"] == "judge (NOT qualified)"),
            hide_index=True,
            height="content",  # every metric in view, no scrolling inside the table
            key="metrics_table",
            column_config={
                "key": st.column_config.TextColumn(
                    help="The metric's name in the store and in `cai eval show`."
                ),
                **{
                    names[m]: st.column_config.TextColumn(help=f"`{m}`: value [95% interval] (n)")
                    for m in models
                },
            },
        )
        st.caption(
            "Each cell is the value, its 95% interval and n, the number of answers or verdicts it "
            "rests on: with a small n the interval is wide, read it before the value. "
            "Win rates are the judge's mean soft preference for the model over the reference (both "
            "orders averaged, a tie counts one half), with a bootstrap interval. Refusal rates are "
            "shares of answers, with Wilson intervals: *rule* counts answers matching a documented "
            "refusal pattern, *judge* those the judge thinks refuse (P > 0.5)."
        )
        cut = {
            r["model"]: r
            for r in results
            if r["metric"] == "tokens_per_answer" and r["model"] in models
        }
        if any(r["detail"].get("truncated") for r in cut.values()):
            st.caption(
                "✂ Answers cut off at the token limit: "
                + ", ".join(
                    f"{md_escape(names[m])} {cut[m]['detail'].get('truncated', 0)} of {cut[m]['n']}"
                    for m in models
                    if m in cut
                )
                + ". A cut-off answer is judged as it stands; raise *New tokens per answer* to "
                "let them finish."
            )
        rows = rate_rows(results, {m: names[m] for m in models}, distrust)
        if rows:
            st.altair_chart(rates_chart(rows))
        revision = revision_rows(results)
        if revision:
            critique = next(
                r["model"] for r in results if r["metric"].startswith("revision_round_")
            )
            st.markdown(
                f"**Revision progress** of critique job `{critique}`: how often the judge "
                "prefers round k's revision over the answer before it (above 50%: revisions help)."
                + (" The judge did not qualify: read these as noise." if distrust else "")
            )
            st.altair_chart(revision_chart(revision, distrust))
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
        prompt_set = set_names[role]
        answered = store.eval_prompt_count(job_id, models, prompt_set)
        if not answered:
            st.caption("No answers for this set yet.")
        else:
            search = st.text_input(
                "Filter prompts by text",
                key="cmp_search",
                max_chars=SEARCH_MAX,
                placeholder="a phrase from the prompt",
            )
            try:
                search_needle(search, "search the prompts")
            except CaiError as e:
                show_error(e)
            else:
                answers_page(job_id, models, prompt_set, search, answered)

    with tab_lineage:
        st.caption("Where each model came from: its base, its data and the constitution version.")
        for m in models:
            st.markdown(f"**{md_escape(names[m])}** · {md_escape(m)}")
            show_lineage(store, m)
