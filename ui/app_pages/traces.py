"""Traces: launch critique jobs and watch the model critique and revise itself, live."""

import functools

import pandas as pd
import streamlit as st

from cai_engine import critique, export, jobs, traces
from cai_engine.critique import CritiqueConfig
from cai_engine.errors import CaiError
from cai_engine.fields import sampling_with
from cai_engine.lineage import VersionNames
from ui.common import (
    SEED_MAX,
    get_store,
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
    text_input_for,
)
from ui.progress import show_progress

REFRESH_S = 2.0
REWRITE = 0.6  # above this share of changed words an inline diff is noise: show the new text
CUT_FILTER = {"all": None, "only cut off": True, "not cut off": False}
CUT_MARK = "✂ cut off at the token limit"
TABLE_COLUMNS = [
    "prompt",
    "category",
    "sample",
    "rounds",
    "principles",
    "changed",
    "final answer",
    "flags",
]
store = get_store()

st.title("Traces")
show_flash()

# One opening of the store for the whole run of the page (the live section, when it reruns
# alone, opens its own): each query inside reuses it instead of opening the file again.
with store.session():
    # -- launch ---------------------------------------------------------------------------------

    sets = store.list_prompt_sets()
    with st.expander(
        "New critique job", expanded=not jobs.list_jobs(store, kind="critique", limit=1)
    ):
        # Outside the form: picking a constitution must update the versions offered.
        version = pick_version(store, "crit", default="harmless")
        with st.form("critique_form"):
            p1, p2 = st.columns(2)
            set_name = p1.selectbox(
                "Prompt set",
                [s.name for s in sets],
                key="crit_prompts",
                index=[s.name for s in sets].index("red-team")
                if any(s.name == "red-team" for s in sets)
                else 0,
            )
            split = p2.selectbox("Split", ["train", "test", "all"], key="crit_split")
            n1, n2, n3, n4 = st.columns(4)
            rounds = number_input_for(n1, CritiqueConfig, "rounds", "Rounds", key="crit_rounds")
            limit = n2.number_input("Limit (0 = all)", 0, 100_000, 16, key="crit_limit")
            seed = number_input_for(
                n3, CritiqueConfig, "seed", "Seed", key="crit_seed", max_value=SEED_MAX
            )
            few_shots = number_input_for(
                n4, CritiqueConfig, "few_shots", "Few-shots", key="crit_few_shots"
            )
            m1, m2 = st.columns([3, 1])
            model = text_input_for(m1, CritiqueConfig, "model", "Model", key="crit_model")
            max_new = number_input_for(
                m2, CritiqueConfig, "sampling.max_new_tokens", "Max new tokens", key="crit_max_new"
            )
            submitted = st.form_submit_button("Start critique job", type="primary")
        if submitted:
            config = {
                "constitution": version.ref if version else "",
                "prompts": set_name if split == "all" else f"{set_name}:{split}",
                "model": model.strip(),
                "rounds": int(rounds),
                "limit": int(limit) or None,
                "seed": int(seed),
                "few_shots": int(few_shots),
                "sampling": sampling_with(
                    CritiqueConfig, max_new_tokens=int(max_new), seed=int(seed)
                ),
            }
            try:
                job = critique.submit(store, config)
            except CaiError as e:
                show_error(e, "Not started: ")
            else:
                show_job_next(job, "_select_critique", f"Started {job.id}.")

    # -- pick a job -----------------------------------------------------------------------------

    critique_jobs = jobs.list_jobs(store, kind="critique")
    version_names = VersionNames(store)
    picked = pick_job(
        "Critique job",
        critique_jobs,
        "trace_job",
        empty="No critique jobs yet. Start one above, or with `cai critique`.",
        pending="_select_critique",
        describe=lambda j: (
            f"{j.id} · {j.status} · {version_names(j.config.get('constitution'))} · {j.config.get('prompts')}"
        ),
    )
    job_id = picked.id
    running = picked.status in jobs.ACTIVE

    @st.fragment(run_every=REFRESH_S if running else None)
    def live_traces(job_id: str, shown_status: str) -> None:
        """The job's progress, then one page of its traces: every query is bounded (a page, a
        count, the filter choices), so a job of a million steps refreshes as fast as a small one.
        They share one opening of the store (a session)."""
        with store.session():
            show_live_traces(job_id, shown_status)

    def show_live_traces(job_id: str, shown_status: str) -> None:
        jobs.reconcile(store)  # also ingests the shards the job has finished since last time
        job = jobs.get_job(store, job_id)
        show_progress(job, rate=True)
        if job.error:
            st.error(md_escape(job.error), icon="⚠️")
        rerun_on_status_change(shown_status, job.status)  # e.g. finished: stop refreshing

        facets = store.trace_facets(job_id)
        if not facets["traces"]:
            st.caption("No steps finished yet; they appear here as the job writes them.")
            export_section(job_id)
            return
        stats = store.trace_principle_stats(job_id)
        where = trace_filter(facets, [r["principle"] for r in stats])
        if where is not None:
            trace_table(job_id, where, facets["traces"])

        with st.expander("Per-principle statistics"):
            st.caption(f"Over all {facets['traces']:,} traces of the job, whatever the filters.")
            st.dataframe(
                pd.DataFrame(stats),
                hide_index=True,
                key="principle_stats",
                column_config={
                    "changed_rate": st.column_config.NumberColumn("changed rate", format="percent"),
                    "mean_edit_size": st.column_config.NumberColumn(
                        "mean edit size", format="%.2f", help="share of words changed"
                    ),
                },
            )
        export_section(job_id)

    def trace_filter(facets: dict, principles: list[str]) -> traces.TraceFilter | None:
        """The filter row; None (with the reason shown) when the search cannot be run."""
        f1, f2, f3, f4, f5 = st.columns([2, 1, 2, 2, 3])
        principle = f1.selectbox("Principle", ["all", *sorted(principles)], key="trace_principle")
        rounds = range(1, max(facets["max_round"], 1) + 1)
        round_ = f2.selectbox("Round", ["all", *rounds], key="trace_round")
        category = f3.selectbox("Category", ["all", *facets["categories"]], key="trace_category")
        cut = f4.selectbox(
            "Cut off",
            list(CUT_FILTER),
            key="trace_cut",
            help="Texts that stopped at the token limit, mid-sentence (✂). Raise Max new tokens "
            "for the next job, or drop cut-off texts when exporting.",
        )
        search = f5.text_input(
            "Search",
            key="trace_search",
            placeholder="text in the prompt or any step",
            max_chars=traces.SEARCH_MAX,
        )
        try:
            return traces.TraceFilter(
                principle=None if principle == "all" else principle,
                round=None if round_ == "all" else int(round_),
                category=None if category == "all" else category,
                search=search or None,
                cut_off=CUT_FILTER[cut],
            )
        except CaiError as e:
            show_error(e)
            return None

    def trace_table(job_id: str, where: traces.TraceFilter, total_traces: int) -> None:
        """One page of the traces `where` keeps, Previous/Next through the rest (keyset pages:
        each one costs the same however deep), and the trace picked in it."""
        after, size = page_start("trace", (job_id, where))
        page, matching = store.trace_page(job_id, where, after=after, limit=size)
        page_controls(
            "trace",
            "Traces",
            len(page),
            matching,
            total_traces,
            (page[-1]["prompt_id"], page[-1]["sample"]) if page else None,
        )
        table = pd.DataFrame(
            [
                {
                    "prompt": r["prompt_text"],
                    "category": r["category"],
                    "sample": r["sample"],
                    "rounds": r["rounds_done"],
                    "principles": ", ".join(r["principles"]),
                    "changed": r["changed"],
                    "final answer": r["final_text"] or "",
                    "flags": ", ".join(
                        sorted({*r["flags"], *(["✂ cut off"] if r["cut_off"] else [])})
                    ),
                }
                for r in page
            ],
            columns=TABLE_COLUMNS,
        )
        picked = st.dataframe(
            table,
            hide_index=True,
            key="trace_table",
            on_select="rerun",
            selection_mode="single-row",
            column_config={
                "prompt": st.column_config.TextColumn(width="large"),
                "final answer": st.column_config.TextColumn(width="large"),
            },
        )
        rows = [r for r in (picked.selection.rows if picked else []) if r < len(page)]
        chosen = page[rows[0]] if rows else (page[0] if page else None)
        if chosen is not None:  # its steps, read now: one trace, not the job
            steps = store.trace_steps(job_id, chosen["prompt_id"], int(chosen["sample"]))
            show_trace(traces.group_traces(steps)[0])

    def export_section(job_id: str) -> None:
        """Downloads of what the job has finished so far. Each file is built when its button is
        clicked, from the rows as they are then, not on every refresh of the page."""
        st.subheader("Export")
        st.caption(
            "TRL's conversational formats, each with a manifest (job, constitution hash, model, counts). "
            "`cai export sft|prefs` writes JSONL, Parquet or a datasets folder."
        )
        columns = st.columns(3)
        offers = [
            ("SFT (final revisions)", "sft", False, "sft", "dl_sft"),
            ("SFT (every round)", "sft", True, "sft-all-rounds", "dl_sft_all"),
            ("Preferences (revision vs initial)", "prefs", False, "prefs", "dl_prefs"),
        ]
        drop_truncated = st.checkbox(
            "Drop texts cut off at the token limit",
            key="export_drop_truncated",
            help="Leave out revisions (and, for preferences, initial answers) that stopped at the "
            "token limit mid-sentence; the manifest counts them.",
        )
        ready = export.offers(store, job_id)
        missing = []
        for column, (label, kind, all_rounds, suffix, key) in zip(columns, offers, strict=True):
            if ready[kind]:
                missing.append(ready[kind])
                continue
            column.download_button(
                label,
                functools.partial(build_bundle, job_id, kind, all_rounds, drop_truncated),
                file_name=f"{job_id}-{suffix}.zip",
                mime="application/zip",
                key=key,
                on_click="ignore",
            )
        if missing:
            st.caption(md_escape(f"Nothing to export yet: {missing[0]}"))

    def build_bundle(job_id: str, kind: str, all_rounds: bool, drop_truncated: bool) -> bytes:
        """The zip a download button hands over. Should the filters leave nothing (every text
        cut off, say), the zip says why in NOTHING_EXPORTED.txt instead of failing silently."""
        try:
            return export.bundle(
                store, job_id, kind, all_rounds=all_rounds, drop_truncated=drop_truncated
            )
        except CaiError as e:
            return export.note_zip("NOTHING_EXPORTED.txt", str(e))

    def diff_markdown(old: str, new: str, *, side: str = "both") -> str:
        """Words removed in red and struck through, words added in green; all text escaped.
        `side="old"` shows the old text with its removals marked, `"new"` the new text with its
        additions, `"both"` one inline diff."""
        parts = []
        for op, text in traces.word_diff(old, new):
            if op == "equal":
                parts.append(md_escape(text))
            elif text.strip() and op == "delete" and side != "new":
                parts.append(f":red-background[~~{md_escape(text.strip())}~~] ")
            elif text.strip() and op == "insert" and side != "old":
                parts.append(f":green-background[{md_escape(text.strip())}] ")
        return "".join(parts)

    def step_caption(step: dict) -> None:
        """Under a step: cut off at the token limit, flags, few-shots dropped, prompt truncated."""
        notes = [f for f in (step.get("flags") or "").split(",") if f and f != "skipped"]
        if step.get("few_shots_dropped"):
            notes.append(f"{step['few_shots_dropped']} few-shots dropped to fit")
        if step.get("truncated_tokens"):
            notes.append(f"{step['truncated_tokens']} prompt tokens truncated")
        if traces.step_cut_off(step):
            st.markdown(f":orange-badge[{CUT_MARK}] after {step['completion_tokens']} tokens")
        if notes:
            st.caption(", ".join(notes))

    def show_revision(step: dict, previous: str, side_by_side: bool) -> None:
        size = traces.edit_size(previous, step["text"])
        if step["text"] == previous:
            st.text(step["text"] or "(empty)")
            st.caption("unchanged")
        elif side_by_side:
            before, after = st.columns(2)
            with before.container(border=True):
                st.caption("before (red: removed)")
                st.markdown(diff_markdown(previous, step["text"], side="old") or "(empty)")
            with after.container(border=True):
                st.caption("revision (green: added)")
                st.markdown(diff_markdown(previous, step["text"], side="new") or "(empty)")
            st.caption(f"{size:.0%} of words changed")
        elif size <= REWRITE:
            st.markdown(diff_markdown(previous, step["text"]))
            st.caption(f"{size:.0%} of words changed (red: removed, green: added)")
        else:
            st.text(step["text"] or "(empty)")
            st.caption(f"rewritten: {size:.0%} of words changed; pick Side by side to compare")

    def show_trace(trace) -> None:
        h1, h2 = st.columns([3, 2])
        h1.subheader("Trace")
        view = h2.segmented_control(
            "Revisions",
            ["Inline", "Side by side"],
            default="Inline",
            key="revision_view",
            help="Inline: one text with removals and additions marked (a rewrite shows as the new "
            "text). Side by side: the text before and the revision, changes marked, always.",
        )
        for m in trace.prompt:
            with st.chat_message(m["role"]):
                st.text(m["content"])
        previous = None
        for step in trace.steps:
            if step["step"] == "initial":
                st.markdown("**Initial answer**")
                st.text(step["text"] or "(empty)")
            elif step["step"] == "critique":
                st.markdown(
                    f"**Round {step['round']} · critique** · principle `{step['principle_id']}`"
                )  # a slug
                st.text(step["text"] or "(empty)")
            else:
                skipped = "skipped" in (step.get("flags") or "")
                note = " · skipped: the critique said no change was needed" if skipped else ""
                st.markdown(f"**Round {step['round']} · revision**{note}")
                if previous is None:
                    st.text(step["text"] or "(empty)")
                else:
                    show_revision(step, previous, view == "Side by side")
            if step["step"] in ("initial", "revision"):
                previous = step["text"]
            step_caption(step)

    live_traces(job_id, picked.status)
