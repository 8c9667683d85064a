"""Prompts: browse and search a prompt set, see its split and categories, import new prompts."""

import pandas as pd
import streamlit as st

from cai_engine.errors import CaiError
from cai_engine.files import MAX_INPUT_BYTES
from cai_engine.prompts import DEFAULT_SPLIT_SEED, PromptImportError, import_prompt_set
from ui.common import flash, get_store, md_escape, show_error, show_flash

UPLOAD_MB = MAX_INPUT_BYTES // (1024 * 1024)  # the engine refuses a bigger upload too

store = get_store()

pending = st.session_state.pop("_select_set", None)
if pending:
    st.session_state["prompt_set"] = pending

st.title("Prompts")
show_flash()

sets = {s.name: s for s in store.list_prompt_sets()}
if not sets:
    st.info("No prompt sets yet. Import one below, or run `cai init` for the bundled ones.")
else:
    name = st.selectbox(
        "Prompt set",
        list(sets),
        key="prompt_set",
        format_func=lambda n: f"{n} ({sets[n].prompts} prompts)",
    )
    summary = sets[name]
    if summary.description:
        st.caption(md_escape(summary.description))
    m = st.columns(4)
    m[0].metric("Prompts", summary.prompts)
    m[1].metric("Train", summary.train)
    m[2].metric("Test", summary.test)
    m[3].metric("Categories", summary.categories)

    categories = store.prompt_categories(name)
    with st.expander("Categories", expanded=False):
        frame = pd.DataFrame(
            [{"category": c or "(none)", "train": tr, "test": te} for c, tr, te in categories]
        ).set_index("category")
        st.bar_chart(frame, horizontal=True, stack=True)

    f1, f2, f3 = st.columns([1, 2, 3])
    split = f1.selectbox("Split", ["all", "train", "test"], key="prompt_split")
    category = f2.selectbox(
        "Category", ["all"] + [c for c, _, _ in categories if c], key="prompt_category"
    )
    search = f3.text_input("Search", key="prompt_search", placeholder="text in any turn")
    prompts = store.get_prompts(
        name,
        split=None if split == "all" else split,
        category=None if category == "all" else category,
        search=search.strip() or None,
    )
    st.caption(f"{len(prompts)} matching prompts")
    # A row selection must not outlive the rows it pointed at: new filters, new selection.
    filters = (name, split, category, search.strip())
    if st.session_state.get("_prompt_filters") != filters:
        st.session_state.pop("prompt_table", None)
        st.session_state["_prompt_filters"] = filters
    selection = st.dataframe(
        pd.DataFrame(
            [
                {
                    "id": p.prompt_id,
                    "split": p.split,
                    "category": p.category,
                    "turns": len(p.messages),
                    "prompt": p.text,
                }
                for p in prompts
            ],
            columns=["id", "split", "category", "turns", "prompt"],
        ),
        hide_index=True,
        key="prompt_table",
        on_select="rerun",
        selection_mode="single-row",
        column_config={"prompt": st.column_config.TextColumn(width="large")},
    )
    rows = [r for r in (selection.selection.rows if selection else []) if r < len(prompts)]
    if rows:
        chosen = prompts[rows[0]]
        st.subheader(f"Prompt {md_escape(chosen.prompt_id)}")
        for message in chosen.messages:
            with st.chat_message(message["role"]):
                st.text(message["content"])

st.subheader("Import")
st.caption(
    "JSONL, CSV or Parquet with a prompt column (text, or a list of {role, content} messages "
    "ending with a user turn), or a `datasets` folder saved with save_to_disk. Exact duplicates "
    "are removed. A file with bad rows imports nothing unless you tick 'skip bad rows'. "
    f"An upload is held in memory, so it may be up to {UPLOAD_MB} MB; import a bigger file "
    "from disk with `cai prompts import FILE --name NAME` (any size, read in chunks)."
)
upload = st.file_uploader(
    "File",
    type=["jsonl", "json", "csv", "parquet"],
    key="prompt_upload",
    max_upload_size=UPLOAD_MB,
)
dataset_path = st.text_input(
    "…or a datasets folder or hub id", key="prompt_dataset", placeholder="/path/to/saved_dataset"
)
c1, c2, c3 = st.columns(3)
set_name = c1.text_input("Set name", key="prompt_import_name", placeholder="my-prompts")
test_fraction = c2.number_input("Test fraction", 0.0, 0.9, 0.2, 0.05, key="prompt_test_fraction")
seed = c3.number_input("Split seed", value=DEFAULT_SPLIT_SEED, step=1, key="prompt_seed")
m1, m2, m3, m4 = st.columns(4)
col_prompt = m1.text_input("Prompt column", "prompt", key="col_prompt")
col_category = m2.text_input("Category column", "category", key="col_category")
col_id = m3.text_input("Id column", "id", key="col_id")
col_split = m4.text_input("Split column", "split", key="col_split")
o1, o2 = st.columns(2)
skip_bad = o1.checkbox("Skip bad rows (import the good ones)", key="prompt_skip_bad")
append = o2.checkbox("Append to an existing set", key="prompt_append")

if st.button(
    "Import prompts", key="prompt_import_button", disabled=not (upload or dataset_path.strip())
):
    source = (upload.name, upload.getvalue()) if upload else dataset_path.strip()
    mapping = {
        k: v.strip()
        for k, v in {
            "prompt": col_prompt,
            "category": col_category,
            "id": col_id,
            "split": col_split,
        }.items()
        if v.strip()
    }
    try:
        report = import_prompt_set(
            store,
            source,
            set_name.strip(),
            fmt="auto" if upload else "hf",
            mapping=mapping,
            allow_partial=skip_bad,
            append=append,
            split_seed=int(seed),
            test_fraction=float(test_fraction),
        )
    except PromptImportError as e:
        st.error(
            f"Nothing imported: {len(e.bad_rows)} bad row(s)."
            if e.bad_rows
            else "Nothing imported.",
            icon="⚠️",
        )
        st.code(str(e), language=None)
    except CaiError as e:
        show_error(e, "Nothing imported: ")
    else:
        skipped = "".join(f"\nskipped {b}" for b in report.bad_rows)
        flash(report.summary() + skipped)
        st.session_state["_select_set"] = set_name.strip()
        st.rerun()
