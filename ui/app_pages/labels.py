"""Labels: make pairs, label them with the feedback model, spot-check the labels, and see
how often people agree with the AI before training on it."""

import pandas as pd
import streamlit as st

from cai_engine import export, jobs, review
from cai_engine.constitution import pinned_ref
from cai_engine.errors import CaiError
from cai_engine.external_pairs import import_lineage
from cai_engine.fields import field_default, sampling_with
from cai_engine.labels import LabelConfig, submit_labels
from cai_engine.lineage import VersionNames
from cai_engine.pairs import PairsConfig, cut_off_sides, submit_pairs
from cai_engine.traces import SEARCH_MAX
from ui.common import (
    checkbox_for,
    flash,
    get_store,
    linked_job,
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
    text_input_for,
)
from ui.label_charts import calibration_chart, calibration_frame, soft_label_frame
from ui.progress import show_progress

REFRESH_S = 2.0
CUT_FILTER = {"all": None, "only cut off": True, "not cut off": False}
CUT_MARK = "✂ cut off at the token limit"
CONTRASTIVE = "Contrastive (RLCD)"
JUDGE, CONSTRUCTION = "A judge (feedback model)", "By construction (no model)"
store = get_store()

st.title("Labels")
show_flash()

# -- launch ---------------------------------------------------------------------------------


def pairs_form() -> None:
    sets = [s.name for s in store.list_prompt_sets()]
    critiques = [j.id for j in jobs.list_jobs(store, kind="critique") if j.status == "succeeded"]
    source = st.radio(
        "Answers",
        ["Sample answers", "From a critique job", CONTRASTIVE],
        horizontal=True,
        key="pairs_source",
        help="k answers per prompt (every two form a pair); each trace's initial answer "
        "against its final revision; or (RLCD) two answers per prompt, under a positive and a "
        "negative system prompt from a principle drawn per prompt, the better one known.",
    )
    version = None
    if source == CONTRASTIVE:
        version = pick_version(store, "pairs", default="harmless")
        st.caption(
            "Each prompt draws a principle; the model answers under its positive and its "
            "negative system prompt (edit them on the Constitutions page). Label the pairs by "
            "construction: no judge needed."
        )
    with st.form("pairs_form"):
        if source != "From a critique job":
            c1, c2, c3, c4 = st.columns(4)
            set_name = c1.selectbox(
                "Prompt set",
                sets,
                index=sets.index("red-team") if "red-team" in sets else 0,
                key="pairs_set",
            )
            split = c2.selectbox("Split", ["train", "test", "all"], key="pairs_split")
            samples = number_input_for(
                c3,
                PairsConfig,
                "samples",
                "Answers per prompt",
                key="pairs_samples",
                disabled=source == CONTRASTIVE,  # a positive and a negative answer
            )
            limit = c4.number_input("Limit (0 = all)", 0, 100_000, 16, key="pairs_limit")
            m1, m2, m3 = st.columns([3, 1, 1])
            model = text_input_for(m1, PairsConfig, "model", "Model", key="pairs_model")
            max_new = number_input_for(
                m2, PairsConfig, "sampling.max_new_tokens", "Max new tokens", key="pairs_max_new"
            )
            temperature = number_input_for(
                m3,
                PairsConfig,
                "sampling.temperature",
                "Temperature",
                step=0.1,
                key="pairs_temperature",
            )
        else:
            critique_job = st.selectbox("Critique job", critiques or ["(none finished)"])
        go = st.form_submit_button("Start pairs job", type="primary")
    if not go:
        return
    if source != "From a critique job":
        config = {
            "prompts": set_name if split == "all" else f"{set_name}:{split}",
            "model": model.strip(),
            "samples": 2 if source == CONTRASTIVE else int(samples),
            "limit": int(limit) or None,
            "sampling": sampling_with(
                PairsConfig, temperature=float(temperature), max_new_tokens=int(max_new)
            ),
        }
        if source == CONTRASTIVE:
            config |= {"contrastive": True, "constitution": version.ref if version else ""}
    else:
        config = {"from_critique": critique_job}
    try:
        job = submit_pairs(store, config)
    except CaiError as e:
        show_error(e, "Not started: ")
    else:
        how = " by construction" if source == CONTRASTIVE else ""
        flash(
            f"Started {job.id}. It is picked under Labels; label its pairs{how} when it finishes."
        )
        st.session_state["_select_pairs"] = job.id
        st.rerun()


def label_form() -> None:
    pair_jobs = jobs.list_jobs(store, kind="pairs")
    if not pair_jobs:
        st.caption("Make a pairs job first.")
        return
    c1, c2, c3 = st.columns([2, 2, 2])
    # A pairs job just started here is picked once; the rest of the time the pick is kept.
    by_id = {j.id: j for j in pair_jobs}
    pending = st.session_state.pop("_select_pairs", None)
    if linked_job() in by_id:  # a link from the Jobs page
        pending = linked_job()
        del st.query_params["job"]
    current = pending or st.session_state.get("label_pairs_job")
    # assigned on every run so the status shown follows the job (see ui/common.py: pick_job)
    st.session_state["label_pairs_job"] = current if current in by_id else pair_jobs[0].id
    pairs_job = c1.selectbox(
        "Pairs job",
        list(by_id),
        format_func=lambda i: (
            f"{i} · {by_id[i].status} · {by_id[i].config.get('prompts') or 'from ' + str(by_id[i].config.get('from_critique'))}"
        ),
        key="label_pairs_job",
    )
    contrastive = bool(by_id[pairs_job].config.get("contrastive"))
    by_construction = contrastive and (
        st.radio(
            "Labels from",
            [JUDGE, CONSTRUCTION],
            horizontal=True,
            key="label_source",
            help="These pairs are contrastive: the answer written under the positive prompt is "
            "the better one by construction. A judge can still score them, which measures how "
            "often it agrees with the construction.",
        )
        == CONSTRUCTION
    )
    version = None
    if not by_construction:
        version = pick_version(store, "label", default="harmless", columns=(c2, c3))
    if by_id[pairs_job].status != "succeeded":
        st.caption(
            f"{pairs_job} is {by_id[pairs_job].status}: a label job started now labels the "
            "pairs it has written so far."
            if by_id[pairs_job].status in jobs.ACTIVE
            else f"{pairs_job} is {by_id[pairs_job].status}."
        )
    if by_construction:
        construction_form(pairs_job)
        return
    with st.form("label_form"):
        model = text_input_for(st, LabelConfig, "model", "Feedback model", key="label_model")
        o1, o2, o3, o4 = st.columns(4)
        both = checkbox_for(o1, LabelConfig, "both_orders", "Both orders", key="label_both")
        lo, hi = field_default(LabelConfig, "clamp")
        cot = checkbox_for(
            o2,
            LabelConfig,
            "cot",
            "Chain of thought",
            key="label_cot",
            help=f"Reason first; probabilities are clamped to {lo:.0%}–{hi:.0%}.",
        )
        few_shots = number_input_for(
            o3, LabelConfig, "few_shots", "Few-shots", key="label_few_shots"
        )
        limit = o4.number_input("Limit (0 = all)", 0, 1_000_000, 0, key="label_limit")
        go = st.form_submit_button("Start label job", type="primary")
    if not go:
        return
    config = {
        "pairs": pairs_job,
        "constitution": version.ref if version else "",
        "model": model.strip(),
        "both_orders": both,
        "cot": cot,
        "few_shots": int(few_shots),
        "limit": int(limit) or None,
    }
    try:
        job = submit_labels(store, config)
    except CaiError as e:
        show_error(e, "Not started: ")
    else:
        show_job_next(job, "_select_labels", f"Started {job.id}.")


def construction_form(pairs_job: str) -> None:
    """Labels by construction for a contrastive pairs job: no model, P(preferred) = score."""
    with st.form("construction_form"):
        o1, o2 = st.columns(2)
        score = number_input_for(
            o1, LabelConfig, "score", "P(preferred answer is better)", step=0.05,
            key="label_score",
        )  # fmt: skip
        limit = o2.number_input("Limit (0 = all)", 0, 1_000_000, 0, key="construction_limit")
        go = st.form_submit_button("Start label job", type="primary")
    if not go:
        return
    config = {
        "pairs": pairs_job,
        "source": "construction",
        "score": float(score),
        "limit": int(limit) or None,
    }
    try:
        job = submit_labels(store, config)
    except CaiError as e:
        show_error(e, "Not started: ")
    else:
        show_job_next(job, "_select_labels", f"Started {job.id}.")


# -- the page's queries ---------------------------------------------------------------------
# Every query reads what the page shows: one label job's counts, its agreement numbers, the
# next pair to review and one page of its labels, never the whole job. They share one opening
# of the store (a session); the export below opens its own.

VERDICT_BUTTONS = [
    ("A is better", "A", "A"),
    ("B is better", "B", "B"),
    ("Tie", "tie", "T"),
    ("Both bad", "both_bad", "X"),
    ("Skip", "skip", "S"),
]
# the "Reviewed" filter: (reviewed, only the reviewer named on the Review tab)
REVIEW_FILTER = {
    "all": (None, False),
    "reviewed": (True, False),
    "not reviewed": (False, False),
    "reviewed by me": (True, True),
    "not reviewed by me": (False, True),
}
TABLE_COLUMNS = [
    "prompt",
    "principle",
    "P(A) as given",
    "P(A) swapped",
    "soft label",
    "winner",
    "confidence",
    "consistent",
    "cut off",
    "flags",
]


def job_progress(job_id: str, shown: int, shown_status: str, running: bool) -> None:
    """The job's progress (a fragment that refreshes itself while the job runs); `shown` is
    how many labels the page's full run showed: none and then some reruns the whole page."""
    with store.session():
        jobs.reconcile(store)  # also ingests the batches the job has scored since last time
        job = jobs.get_job(store, job_id)
    if job.status in jobs.ACTIVE:
        show_progress(job, rate=True)
    if job.error:
        st.error(md_escape(job.error), icon="⚠️")
    rerun_on_status_change(shown_status, job.status)  # e.g. finished: redraw the page
    if running and not shown and job.done:
        st.rerun(scope="app")  # its first labels arrived


def reveal_text(reveal: dict) -> str:
    """What the AI said about the pair just reviewed, in the positions the reviewer saw."""
    p_first = reveal["soft"] if reveal["order"] == "AB" else 1 - reveal["soft"]
    ai_shown = "A" if p_first > 0.5 else "B" if p_first < 0.5 else "tie"
    said = review.VERDICT_NAMES[reveal["shown"]]
    who = {"contrastive": "The construction", "dataset": "The dataset"}.get(
        reveal.get("source"), "The AI"
    )
    parts = [
        f"You said **{said}**. {who} gave **{p_first:.1%}** to A and **{1 - p_first:.1%}** "
        f"to B (as you saw them): **{ai_shown if ai_shown == 'tie' else ai_shown + ' is better'}**"
    ]
    if reveal["shown"] in ("A", "B") and ai_shown != "tie":
        parts.append("— you agree." if reveal["shown"] == ai_shown else "— you disagree.")
    if reveal["consistent"] is False:
        parts.append("Its two orders disagreed (position-inconsistent).")
    return " ".join(parts)


def commit(label_row: dict, order: str, shown_verdict: str, reviewer: str, note_key: str):
    verdict = review.to_stored(shown_verdict, order)
    try:
        review.record(
            store,
            label_row["job_id"],
            label_row["prompt_id"],
            label_row["pair"],
            reviewer,
            verdict,
            order,
            st.session_state.get(note_key) or None,
        )
    except CaiError as e:
        st.session_state["_review_error"] = str(e)
        return
    st.session_state["_reveal"] = {
        "shown": shown_verdict,
        "order": order,
        "soft": label_row["soft_label"],
        "consistent": label_row["consistent"],
        "source": label_row.get("label_source"),
    }


def review_pair(row: dict, reviewer: str) -> None:
    """The pair to review: its principle, prompt and both answers in this reviewer's display
    order, a note and the verdict buttons; the AI's label stays hidden until the verdict."""
    order = review.display_order(row, reviewer)
    first, second = (
        (row["response_a"], row["response_b"])
        if order == "AB"
        else (row["response_b"], row["response_a"])
    )
    if row["constitution"]:
        version = store.get_version(pinned_ref(row["constitution"], row["constitution_hash"]))
        principle = version.constitution.principle(row["principle_id"])
        st.markdown(f"**Principle:** {md_escape(principle.title)}")
        st.caption(md_escape(principle.preference_question))
    else:  # imported labels: no principle was drawn
        st.markdown("**Which answer is better?** (imported pair: no principle was drawn)")
    for m in row["prompt_messages"]:
        with st.chat_message(m["role"]):
            st.text(m["content"])
    # the slots (as shown) whose answer was cut off: swapped when B is shown first
    swap = {"A": "A", "B": "B"} if order == "AB" else {"A": "B", "B": "A"}
    cut_shown = {swap[side] for side in cut_off_sides(row.get("pair_flags"))}
    c1, c2 = st.columns(2)
    for column, slot, text in ((c1, "A", first), (c2, "B", second)):
        with column.container(border=True):
            st.markdown(
                f"**{slot}**" + (f" · :orange-badge[{CUT_MARK}]" if slot in cut_shown else "")
            )
            st.text(text or "(empty)")
    note_key = f"note_{row['job_id']}_{row['prompt_id']}_{row['pair']}"
    st.text_input("Note (optional)", key=note_key)
    buttons = st.columns(len(VERDICT_BUTTONS))
    for column, (text, verdict, key) in zip(buttons, VERDICT_BUTTONS, strict=True):
        column.button(
            text,
            key=f"verdict_{verdict}",
            shortcut=key,
            on_click=commit,
            args=(row, order, verdict, reviewer, note_key),
            type="primary" if verdict in ("A", "B") else "secondary",
            width="stretch",
        )
    st.caption(
        "Keys: A, B, T (tie), X (both bad), S (skip). The AI's label shows after your verdict."
    )


def show_agreement(stats: review.Agreement) -> None:
    evidence = stats.position
    a1, a2, a3, a4 = st.columns(4)
    a1.metric(
        f"Agreement · n={stats.decisive}",
        "–" if stats.rate is None else f"{stats.rate:.1%}",
        help="Decisive human verdicts (A or B) that match the AI's winner; n counts them.",
    )
    a2.metric(
        f"Cohen's κ · n={stats.decisive}", "–" if stats.kappa is None else f"{stats.kappa:.3f}"
    )
    a3.metric(
        f"Position consistency · n={evidence.pairs if evidence else 0}",
        "–" if stats.consistency_rate is None else f"{stats.consistency_rate:.1%}",
        help="Labels scored in both orders whose two orders prefer the same response; n "
        "counts the pairs scored in both orders.",
    )
    a4.metric(
        f"First-shown wins · n={2 * evidence.pairs if evidence else 0}",
        "–" if stats.first_position_rate is None else f"{stats.first_position_rate:.1%}",
        help="An unbiased judge is at 50%; n counts the orders scored.",
    )
    if evidence is None:
        st.caption("Position bias: label in both orders to measure it.")
    elif stats.position_bias:
        st.warning(
            md_escape(f"Position bias: {evidence.describe()} ")
            + "Use both orders, and drop position-inconsistent pairs when exporting.",
            icon="⚠️",
        )
    else:
        st.caption(md_escape(f"Position bias: {evidence.describe()}"))
    g1, g2 = st.columns(2)
    with g1:
        st.markdown("**Calibration**: AI confidence against human agreement")
        calib = calibration_frame(stats.calibration)
        st.altair_chart(calibration_chart(calib), width="stretch")
        st.caption(
            "Dots: how often reviewers agreed with the AI in each confidence bin. Dashed: where a "
            "perfectly calibrated judge would be (a label 80% sure is right 80% of the time)."
        )
        st.dataframe(
            calib[["confidence", "reviewed", "agreement shown"]].rename(
                columns={"agreement shown": "agreement"}
            ),
            hide_index=True,
        )
    with g2:
        st.markdown("**Soft labels**: P(A better)")
        st.bar_chart(soft_label_frame(stats.soft_label_bins))
    b1, b2 = st.columns(2)
    with b1:
        st.markdown("**Agreement by principle**")
        if stats.by_principle:
            st.dataframe(
                pd.DataFrame(stats.by_principle),
                hide_index=True,
                column_config={"rate": st.column_config.NumberColumn(format="percent")},
            )
        else:
            st.caption("No decisive verdicts yet.")
    with b2:
        st.markdown("**Reviewed and remaining per principle**")
        st.dataframe(pd.DataFrame(stats.strata), hide_index=True)


def label_filter(principles: list[str], reviewer: str) -> review.LabelFilter | None:
    """The filter rows above the table; None (with the reason shown) when the filter cannot
    be run."""
    f1, f2, f3, f4 = st.columns([2, 1, 1, 1])
    principle = f1.selectbox("Principle", ["all", *principles], key="labels_principle")
    cut_filter = f2.selectbox(
        "Cut off",
        list(CUT_FILTER),
        key="labels_cut",
        help="Pairs with an answer that stopped at the token limit, mid-sentence (✂).",
    )
    reviewed = f3.selectbox(
        "Reviewed",
        list(REVIEW_FILTER),
        key="labels_reviewed",
        help="Pairs with a human verdict other than skip; “by me”: by the reviewer named on the "
        "Review tab.",
    )
    only_inconsistent = f4.checkbox("Position-inconsistent only", key="labels_inconsistent")
    s1, s2 = st.columns([1, 2])
    low, high = s1.slider("AI confidence", 0.0, 1.0, (0.0, 1.0), 0.05, key="labels_confidence")
    search = s2.text_input(
        "Search",
        key="labels_search",
        placeholder="text in the prompt or either answer",
        max_chars=SEARCH_MAX,
    )
    is_reviewed, mine = REVIEW_FILTER[reviewed]
    if mine and not reviewer:
        st.info("Type your name on the Review tab to filter by your own verdicts.")
        return None
    try:
        return review.LabelFilter(
            principle=None if principle == "all" else principle,
            inconsistent=only_inconsistent,
            cut_off=CUT_FILTER[cut_filter],
            min_confidence=None if (low, high) == (0.0, 1.0) else float(low),
            max_confidence=None if (low, high) == (0.0, 1.0) else float(high),
            reviewed=is_reviewed,
            reviewer=reviewer if mine else None,
            search=search or None,
        )
    except CaiError as e:
        show_error(e)
        return None


def label_table(job_id: str, where: review.LabelFilter, total_labels: int) -> None:
    """One page of the labels `where` keeps, Previous/Next through the rest (keyset pages:
    each one costs the same however deep), and the label picked in it, read when picked."""
    after, size = page_start("labels", (job_id, where))
    page, matching = store.label_page(job_id, where, after=after, limit=size)
    page_controls(
        "labels",
        "Labels",
        len(page),
        matching,
        total_labels,
        (page[-1]["prompt_id"], page[-1]["pair"]) if page else None,
    )
    table = pd.DataFrame(
        [
            {
                "prompt": r["prompt_text"],
                "principle": r["principle_id"],
                "P(A) as given": r["p_a_ab"],
                "P(A) swapped": r["p_a_ba"],
                "soft label": r["soft_label"],
                "winner": r["winner"],
                "confidence": r["confidence"],
                "consistent": r["consistent"],
                "cut off": " ".join(f"✂{s}" for s in r["cut_off"]),
                "flags": r["flags"],
            }
            for r in page
        ],
        columns=TABLE_COLUMNS,
    )
    selection = st.dataframe(
        table,
        hide_index=True,
        key="labels_table",
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "prompt": st.column_config.TextColumn(width="large"),
            "P(A) as given": st.column_config.NumberColumn(format="%.3f"),
            "P(A) swapped": st.column_config.NumberColumn(format="%.3f"),
            "soft label": st.column_config.ProgressColumn(
                min_value=0.0, max_value=1.0, format="%.3f"
            ),
            "confidence": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    rows = [i for i in (selection.selection.rows if selection else []) if i < len(page)]
    if rows:  # its answers and reasoning, read now: one label, not the job
        chosen = page[rows[0]]
        show_label(store.label_detail(job_id, chosen["prompt_id"], chosen["pair"]))


def show_label(r: dict | None) -> None:
    if r is None:
        return
    d1, d2 = st.columns(2)
    cut = cut_off_sides(r.get("pair_flags"))
    for column, side, ref in ((d1, "a", r["a_ref"]), (d2, "b", r["b_ref"])):
        with column.container(border=True):
            mark = f" · :orange-badge[{CUT_MARK}]" if side.upper() in cut else ""
            st.markdown(f"**{side.upper()}** · {md_escape(ref or '')}{mark}")
            st.text(r[f"response_{side}"] or "(empty)")
    for order, key in (("as given", "cot_ab"), ("swapped", "cot_ba")):
        if r.get(key):
            st.markdown(f"**Reasoning ({order})**")
            st.text(r[key])


with store.session():
    label_jobs = jobs.list_jobs(store, kind="label")
    linked_pairs = any(j.id == linked_job() for j in jobs.list_jobs(store, kind="pairs"))
    with st.expander("New pairs or labels", expanded=not label_jobs or linked_pairs):
        t1, t2 = st.tabs(["Pairs", "Labels"], default="Labels" if linked_pairs else None)
        with t1:
            pairs_form()
        with t2:
            label_form()

    version_names = VersionNames(store)
    picked = pick_job(
        "Label job",
        label_jobs,
        "label_job",
        empty="No label jobs yet. Make pairs and label them above, or with `cai pairs` and "
        "`cai label`.",
        pending="_select_labels",
        describe=lambda j: (
            f"{j.id} · {j.status} · imported labels ({j.label})"
            if j.config.get("source") == "dataset"
            else f"{j.id} · {j.status} · {version_names(j.config.get('constitution'))} · "
            + (
                "by construction"
                if j.config.get("source") == "construction"
                else "CoT"
                if j.config.get("cot")
                else "log-prob"
            )
        ),
    )
    job_id = picked.id
    running = picked.status in jobs.ACTIVE
    facets = store.label_facets(job_id)

    live = st.fragment(job_progress, run_every=REFRESH_S if running else None)
    live(job_id, facets["labels"], picked.status, running)
    if not facets["labels"]:
        st.caption("No labels yet; they appear as the job scores each batch of pairs.")
        st.stop()

    imported = import_lineage(store, picked)  # pairs brought in with `cai import`
    imported_labels = picked.config.get("source") == "dataset"  # ... and labels with them
    if imported:
        st.info(md_escape(imported), icon="📥")
    if picked.config.get("source") not in ("construction", "dataset"):
        show_judge(
            picked.config.get("model", ""),
            store.judge_check_for_job(job_id),
            "Every AI label, agreement and export on this page comes from this judge.",
        )
    review_tab, agreement_tab, labels_tab, export_tab = st.tabs(
        ["Review", "Agreement", "All labels", "Export"]
    )
    stats = store.agreement(job_id)
    if picked.config.get("source") == "construction":
        st.caption(
            md_escape(
                f"Labelled by construction: each contrastive pair of {picked.config['pairs']} "
                f"gives its positive-prompt answer P = {picked.config.get('score')}; no model "
                "was asked."
            )
        )
    construction = store.construction_agreement(job_id)  # a judge on contrastive pairs
    if construction is not None:
        text = construction.describe()
        st.info(md_escape(text[:1].upper() + text[1:] + "."), icon="⚖️")

    # -- review -----------------------------------------------------------------------------

    with review_tab:
        r1, r2, r3 = st.columns([2, 2, 1])
        reviewer = r1.text_input("Reviewer", key="reviewer", placeholder="your name").strip()
        strategy = r2.selectbox(
            "Which pairs first",
            list(review.STRATEGIES),
            format_func=review.STRATEGIES.get,
            key="review_strategy",
        )
        scored = max(1, facets["scored"])
        size = r3.number_input("Pairs to review", 1, scored, min(20, scored), key="review_size")
        row, progress = store.next_review(job_id, reviewer, strategy, int(size))
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Reviewed", f"{progress.reviewed} of {progress.total}")
        m2.metric(
            f"Agreement with {'the dataset' if imported_labels else 'AI'} · n={stats.decisive}",
            "–" if stats.rate is None else f"{stats.rate:.0%}",
        )
        m3.metric("Cohen's κ", "–" if stats.kappa is None else f"{stats.kappa:.2f}")
        m4.metric("Decisive verdicts", stats.decisive)
        st.progress(progress.reviewed / max(1, progress.total))
        error = st.session_state.pop("_review_error", None)
        if error:
            show_error(error, "Not saved: ")
        reveal = st.session_state.pop("_reveal", None)
        if reveal:
            st.info(reveal_text(reveal), icon="🔎")  # numbers and verdict names only
        if not reviewer:
            st.info("Type your name above to start reviewing; verdicts are stored under it.")
        elif row is None:
            st.success(
                f"Done: you reviewed all {progress.total} pairs of this session. "
                "Raise the number of pairs or pick another order to go on."
            )
        else:
            review_pair(row, reviewer)

    # -- agreement --------------------------------------------------------------------------

    with agreement_tab:
        show_agreement(stats)

    # -- all labels -------------------------------------------------------------------------

    with labels_tab:
        where = label_filter(facets["principles"], reviewer)
        if where is not None:
            label_table(job_id, where, facets["labels"])

# -- export ---------------------------------------------------------------------------------

with export_tab:
    st.caption(
        "TRL preference rows (prompt, chosen, rejected) with `score`, the probability that "
        "chosen is better. A human verdict overrides the AI label. `cai export prefs --labels` "
        "writes JSONL, Parquet or a datasets folder."
    )
    e1, e2, e3, e4 = st.columns(4)
    drop_ties = e1.checkbox("Drop ties", key="export_drop_ties")
    drop_inconsistent = e2.checkbox("Drop position-inconsistent", key="export_drop_inconsistent")
    drop_truncated = e3.checkbox(
        "Drop cut-off answers",
        key="export_drop_truncated",
        help="Leave out pairs with an answer that stopped at the token limit (even reviewed "
        "ones); the manifest counts them.",
    )
    min_conf = e4.slider("Minimum confidence", 0.0, 1.0, 0.0, 0.05, key="export_min_conf")
    filters = export.PrefFilters(drop_ties, drop_inconsistent, float(min_conf), drop_truncated)
    try:  # the counts, by SQL; the file is written only when the button is clicked
        counts = export.labelled_prefs_counts(store, job_id, filters)
    except CaiError as e:
        show_error(e)
    else:
        st.caption(
            f"{counts['examples']} examples ({counts['human']} from human verdicts) of "
            f"{counts['labels']} labels"
        )

        def label_prefs_zip(job_id: str = job_id, filters=filters) -> bytes:
            """The zip the button hands over, built when it is clicked from the labels and
            verdicts as they are then; if nothing is left by then, a note saying why."""
            try:
                return export.labelled_prefs_zip(store, job_id, filters, "studio download")
            except CaiError as e:
                return export.note_zip("NOTHING_EXPORTED.txt", str(e))

        st.download_button(
            "Download preferences",
            label_prefs_zip,
            file_name=f"{job_id}-prefs.zip",
            mime="application/zip",
            key="dl_label_prefs",
            on_click="ignore",
        )
