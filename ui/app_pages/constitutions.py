"""Constitutions: pick a version, edit its principles or YAML, save as a new version, diff, import."""

import io
import json
import re
import zipfile

import pandas as pd
import streamlit as st

from cai_engine.constitution import (
    PRINCIPLE_COLUMNS,
    ConstitutionError,
    constitution_from_rows,
    diff_constitutions,
    parse_constitution,
    principles_to_rows,
    to_yaml,
)
from cai_engine.errors import CaiError
from cai_engine.peer_formats import export_anthropic, export_llm_swarm, import_files
from ui.common import flash, get_store, md_escape, show_error, show_flash

store = get_store()

# A save or import selects the new version on the next run, before the pickers exist.
pending = st.session_state.pop("_select_version", None)
if pending:
    st.session_state["con_name"] = pending[0]
    st.session_state[f"con_version_{pending[0]}"] = pending[1]

st.title("Constitutions")
show_flash()

summaries = store.list_constitutions()
if not summaries:
    st.info("No constitutions yet. Import one below, or run `cai init` for the bundled ones.")
names = [s.name for s in summaries]


def save(
    constitution, note: str, parent_hash: str | None, source: str = "studio", notes: tuple = ()
) -> None:
    version, created = store.save_constitution(
        constitution, note=note or None, source=source, parent_hash=parent_hash
    )
    if created:
        message = f"Saved {version.ref} ({version.short_hash})."
    else:
        message = f"Nothing new: identical to {version.ref} ({version.short_hash})."
    flash(" ".join([message, *notes]))
    st.session_state["_select_version"] = (version.name, version.seq)
    st.rerun()


def _rows_from_one(text: str) -> str:
    """In the table, say "row 3" where the engine says "principles[2]"."""
    text = re.sub(r"principles\[(\d+)\]\.", lambda m: f"row {int(m[1]) + 1}, ", text)
    return re.sub(r"principles\[(\d+)\]", lambda m: f"row {int(m[1]) + 1}", text)


def show_problems(err: ConstitutionError, kept: str = "Your edits are kept below.") -> None:
    st.error(f"Not saved: {len(err.problems)} problem(s). {kept}", icon="⚠️")
    for p in err.problems:
        text = (f"{p.where}: " if p.where else "") + p.message
        if err.source == "table":
            text = _rows_from_one(text)
        elif p.line:
            text = f"line {p.line}: {text}"
        if err.source not in ("table", "YAML"):  # an uploaded file: say which one
            text = f"{err.source}: {text}"
        st.markdown(f"- {md_escape(text)}")


if names:
    left, right = st.columns([2, 3])
    name = left.selectbox("Constitution", names, key="con_name")
    versions = store.list_versions(name)
    by_seq = {v.seq: v for v in versions}
    seqs = sorted(by_seq, reverse=True)
    version_key = f"con_version_{name}"
    if st.session_state.get(version_key) not in by_seq:
        st.session_state[version_key] = seqs[0]
    seq = right.selectbox(
        "Version",
        seqs,
        key=version_key,
        format_func=lambda s: (
            f"v{s} · {by_seq[s].short_hash} · {by_seq[s].created_at:%Y-%m-%d %H:%M}"
            + (f" · {by_seq[s].note}" if by_seq[s].note else "")
        ),
    )
    version = by_seq[seq]
    constitution = version.constitution
    tag = version.short_hash  # widget keys are per version, so switching versions resets drafts
    for warning in constitution.warnings():
        st.warning(md_escape(warning))

    tab_principles, tab_shots, tab_yaml, tab_history, tab_io = st.tabs(
        ["Principles", "Few-shots", "YAML", "History", "Import / export"]
    )

    with tab_principles:
        st.caption(
            "Edit cells directly; add rows at the bottom, delete by selecting rows. Tags are "
            "comma-separated. Saving never changes this version: it creates a new one."
        )
        description = st.text_area(
            "Description", constitution.description, key=f"desc_{tag}", height=80
        )
        edited = st.data_editor(
            pd.DataFrame(principles_to_rows(constitution), columns=PRINCIPLE_COLUMNS),
            key=f"grid_{tag}",
            num_rows="dynamic",
            hide_index=True,
            width="stretch",
            column_config={
                "id": st.column_config.TextColumn("id", width=150, required=True),
                "title": st.column_config.TextColumn("title", width=180, required=True),
                "critique_request": st.column_config.TextColumn("critique_request", width=300),
                "revision_request": st.column_config.TextColumn("revision_request", width=300),
                "preference_question": st.column_config.TextColumn(
                    "preference_question", width=300
                ),
                "tags": st.column_config.TextColumn("tags", width=120),
                "enabled": st.column_config.CheckboxColumn("enabled", width=80, default=True),
                "weight": st.column_config.NumberColumn(
                    "weight", width=80, default=1.0, min_value=0.0
                ),
            },
        )
        note = st.text_input(
            "Note for the new version", key=f"note_{tag}", placeholder="what changed and why"
        )
        if st.button("Save as new version", key="save_principles", type="primary"):
            try:
                updated = constitution_from_rows(
                    edited.to_dict("records"), constitution, description=description
                )
            except ConstitutionError as e:
                show_problems(e)
            else:
                save(updated, note, version.hash)

    with tab_shots:
        st.caption(
            f"{len(constitution.few_shots)} critique→revision examples and "
            f"{len(constitution.comparison_few_shots)} labelled comparisons. Edit them in the YAML tab."
        )
        for i, shot in enumerate(constitution.few_shots):
            label = f"#{i + 1} · {shot.principle or 'any principle'}" + (
                " · no change needed" if shot.no_change else ""
            )
            with st.expander(label):
                for m in shot.conversation:
                    with st.chat_message(m.role):
                        st.text(m.content)
                st.markdown("**Critique**")
                st.text(shot.critique)
                st.markdown("**Revision**")
                st.text(shot.revision)
        for i, shot in enumerate(constitution.comparison_few_shots):
            with st.expander(
                f"comparison #{i + 1} · {shot.principle or 'any principle'} · preferred {shot.preferred}"
            ):
                for m in shot.conversation:
                    with st.chat_message(m.role):
                        st.text(m.content)
                st.markdown("**(A)**")
                st.text(shot.response_a)
                st.markdown("**(B)**")
                st.text(shot.response_b)
                if shot.reasoning:
                    st.markdown("**Reasoning**")
                    st.text(shot.reasoning)

    with tab_yaml:
        st.caption("The whole constitution, few-shots included. Saving creates a new version.")
        text = st.text_area("YAML", to_yaml(constitution), key=f"yaml_{tag}", height=520)
        yaml_note = st.text_input("Note for the new version", key=f"yaml_note_{tag}")
        check, save_col = st.columns([1, 1])
        if check.button("Validate", key="validate_yaml"):
            try:
                parsed = parse_constitution(text, "YAML")
            except ConstitutionError as e:
                show_problems(e)
            else:
                st.success(f"Valid: {len(parsed.principles)} principles, hash {parsed.hash[:12]}.")
        if save_col.button("Save as new version", key="save_yaml", type="primary"):
            try:
                parsed = parse_constitution(text, "YAML")
            except ConstitutionError as e:
                show_problems(e)
            else:
                save(parsed, yaml_note, version.hash)

    with tab_history:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "version": v.seq,
                        "hash": v.short_hash,
                        "created": v.created_at,
                        "source": v.source,
                        "parent": (v.parent_hash or "")[:12],
                        "note": v.note or "",
                    }
                    for v in reversed(versions)
                ]
            ),
            hide_index=True,
            key="history_table",
        )
        if len(versions) > 1:
            a, b = st.columns(2)
            # A new version resets the pickers, so the diff shows the newest change.
            if st.session_state.get(f"_diff_latest_{name}") != seqs[0]:
                st.session_state.pop(f"diff_old_{name}", None)
                st.session_state.pop(f"diff_new_{name}", None)
                st.session_state[f"_diff_latest_{name}"] = seqs[0]
            old_seq = a.selectbox("From", seqs, index=1, key=f"diff_old_{name}")
            new_seq = b.selectbox("To", seqs, index=0, key=f"diff_new_{name}")
            diff = diff_constitutions(by_seq[old_seq].constitution, by_seq[new_seq].constitution)
            m = st.columns(4)
            m[0].metric("Added", len(diff.added))
            m[1].metric("Removed", len(diff.removed))
            m[2].metric("Changed", len(diff.changed))
            m[3].metric("Few-shots ±", f"+{diff.few_shots[0]} / -{diff.few_shots[1]}")
            st.code(diff.render(), language=None)
        else:
            st.caption("Only one version so far. Save an edit to start a history.")

    with tab_io:
        st.subheader("Download")
        d1, d2, d3 = st.columns(3)
        d1.download_button(
            "YAML",
            to_yaml(constitution),
            file_name=f"{name}-v{seq}.yaml",
            mime="application/x-yaml",
            key="dl_yaml",
        )
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for fname, obj in export_anthropic(constitution).items():
                zf.writestr(fname, json.dumps(obj, indent=2, ensure_ascii=False))
        d2.download_button(
            "Anthropic format (zip)",
            buf.getvalue(),
            file_name=f"{name}-v{seq}-anthropic.zip",
            mime="application/zip",
            key="dl_anthropic",
        )
        d3.download_button(
            "llm-swarm JSON",
            json.dumps(export_llm_swarm(constitution), indent=2, ensure_ascii=False),
            file_name=f"{name}-v{seq}.llm-swarm.json",
            mime="application/json",
            key="dl_swarm",
        )

st.subheader("Import")
st.caption(
    "A YAML constitution; Anthropic's CritiqueRevisionInstructions.json (optionally with "
    "RLMadisonInstructions.json and a few-shot file); or an llm-swarm JSON. Importing adds a new "
    "version; nothing existing changes."
)
uploads = st.file_uploader(
    "Files", type=["yaml", "yml", "json"], accept_multiple_files=True, key="import_files"
)
i1, i2, i3 = st.columns(3)
fmt = i1.selectbox("Format", ["auto", "yaml", "anthropic", "llm-swarm"], key="import_format")
import_name = i2.text_input("Name (optional)", key="import_name", placeholder="from the file")
import_note = i3.text_input("Note (optional)", key="import_note")
if st.button("Import", key="import_button", disabled=not uploads):
    try:
        result = import_files(
            [(f.name, f.getvalue()) for f in uploads], fmt, import_name.strip() or None
        )
        head = store.list_versions(result.constitution.name)
        save(
            result.constitution,
            import_note or f"imported from {', '.join(f.name for f in uploads)}",
            head[-1].hash if head else None,
            source=f"import:{result.format}",
            notes=tuple(f"Note: {n}." for n in result.notes),
        )
    except ConstitutionError as e:
        show_problems(e, kept="Nothing was imported.")
    except CaiError as e:
        show_error(e, "Not imported: ")
