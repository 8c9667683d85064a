"""Constitutions: pick a version, edit its principles or YAML, save as a new version, diff, import."""

import io
import json
import re
import zipfile

import pandas as pd
import streamlit as st

from cai_engine.constitution import (
    PRINCIPLE_COLUMNS,
    SLUG,
    Constitution,
    ConstitutionDiff,
    ConstitutionError,
    Problem,
    constitution_from_rows,
    diff_constitutions,
    parse_constitution,
    principle_references,
    principle_renames,
    principles_to_rows,
    to_yaml,
    word_diff,
)
from cai_engine.contrastive import derived_prompts
from cai_engine.errors import CaiError
from cai_engine.peer_formats import (
    export_anthropic,
    export_llm_swarm,
    export_losses,
    import_files,
)
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


BANK_LABELS = {"few_shots": "critique few-shot", "comparison_few_shots": "comparison few-shot"}


def _few_shot_label(where: str) -> str:
    """Name few_shots[2] "critique few-shot #3", numbered as the Few-shots tab numbers it."""
    m = re.match(r"(\w+)\[(\d+)\]", where)
    return f"{BANK_LABELS[m[1]]} #{int(m[2]) + 1}"


def _table_problem(p: Problem, now: dict[str, tuple[int, str]]) -> str:
    """A table save's problem in the table's terms: rows, not list indices; and for a few-shot
    that names a principle whose row was renamed, cleared or deleted, where and how to fix it.

    `now` maps each id of the saved version to its row number and current id cell, for the
    rows still in the table.
    """
    unknown = re.match(r"unknown principle '([^']*)'", p.message)
    if not (p.where.endswith(".principle") and unknown):
        return _rows_from_one((f"{p.where}: " if p.where else "") + p.message)
    old = unknown[1]
    shot = f"{_few_shot_label(p.where)} (Few-shots tab), principle"
    fix_here = "change this few-shot's principle in the YAML tab."
    if old not in now:
        return (
            f"{shot}: names '{old}', which is no longer in the table. Restore that principle, "
            "or change or remove this few-shot in the YAML tab."
        )
    row, new = now[old]
    if not new:
        return f"{shot}: names '{old}', the id cleared in row {row}. Put it back, or {fix_here}"
    if not re.match(SLUG, new):
        return (
            f"{shot}: names '{old}', which row {row} renames to '{new}', not a valid id. Fix "
            "that id first; the references can then follow it."
        )
    return (
        f"{shot}: still names '{old}', which row {row} renames to '{new}'. Tick \"Also rename "
        f'the few-shot references" above and save again, or {fix_here}'
    )


def show_problems(err: ConstitutionError, kept: str, describe=None) -> None:
    """List every problem under one error that counts them; `describe` words one problem."""
    st.error(f"Not saved: {len(err.problems)} problem(s). {kept}", icon="⚠️")
    for p in err.problems:
        if describe:
            text = describe(p)
        else:
            text = (f"{p.where}: " if p.where else "") + p.message
            if p.line:
                text = f"line {p.line}: {text}"
            if err.source != "YAML":  # an uploaded file: say which one
                text = f"{err.source}: {text}"
        st.markdown(f"- {md_escape(text)}")


YAML_KEPT = "Nothing was lost: your text is still in the YAML box above."


def _row_of(p: Problem) -> float:
    """Where a problem sorts: the document as a whole first, then row by row, then the rest
    (the few-shots)."""
    m = re.match(r"principles\[(\d+)\]", p.where)
    if m:
        return int(m[1])
    return -1 if not p.where else float("inf")


# -- the per-principle form -----------------------------------------------------------------

# The text fields a principle has; the form edits them in full, the table shows one line each.
FORM_FIELDS = {
    "title": "Title",
    "critique_request": "Critique request",
    "revision_request": "Revision request",
    "preference_question": "Preference question",
    "positive_prompt": "Positive system prompt (contrastive pairs)",
    "negative_prompt": "Negative system prompt (contrastive pairs)",
}
CONTRASTIVE = {"positive_prompt": 0, "negative_prompt": 1}  # field: its place in derived_prompts


def _text(value) -> str:
    """A table cell as the text a form field shows (a blank new cell is None or NaN)."""
    return value if isinstance(value, str) else ""


def _keep_form_edit(tag: str, idx: int, field: str) -> None:
    """on_change of a form field: note the edit before the run, so that it is kept even when
    the same run switches the form to another principle and this field is not drawn again."""
    key = f"pform_{tag}_{idx}_{field}"
    edits = st.session_state.setdefault(f"_pform_{tag}", {})
    start = st.session_state.setdefault(f"_pform_from_{tag}", {}).get(key, "")
    value = st.session_state.get(key, start)
    if value != start:
        edits.setdefault(idx, {})[field] = {"from": start, "value": value}
    elif edits.get(idx, {}).pop(field, None) is not None and not edits[idx]:
        del edits[idx]


def principle_form(tag: str, table: pd.DataFrame, base_ids: list[str]) -> dict:
    """Edit one row of the table in text areas; return the form's edits.

    The edits are `{row index: {field: {"from": text, "value": text}}}`, where "from" is the
    table's text when the form started and "value" is the form's. They live in session state,
    outside the widgets, so picking another principle keeps them. A field not edited here
    follows the table.
    """
    edits = st.session_state.setdefault(f"_pform_{tag}", {})
    starts = st.session_state.setdefault(f"_pform_from_{tag}", {})
    st.markdown("**One principle, in full**")
    st.caption('"Save as new version" below saves these edits together with the table\'s.')
    rows = list(table.index)
    if not rows:
        st.caption("The table is empty.")
        return edits
    position = {idx: n for n, idx in enumerate(rows)}
    pick_key = f"pform_pick_{tag}"
    carried = st.session_state.pop("_pform_carry_pick", None)  # the pick before a save
    if pick_key not in st.session_state and carried in position:
        st.session_state[pick_key] = carried
    if st.session_state.get(pick_key) not in position:
        st.session_state[pick_key] = rows[0]
    # Labels must not change while picked (the browser keeps the pick by its label), so they
    # name a principle by its id in this version, or a new row by its number among new rows.
    idx = st.selectbox(
        "Principle",
        rows,
        key=pick_key,
        format_func=lambda i: (
            base_ids[i] if i < len(base_ids) else f"new row {i - len(base_ids) + 1}"
        ),
    )
    now_id = _text(table.loc[idx, "id"]).strip()
    where = [f"Row {position[idx] + 1} of the table"]
    if idx < len(base_ids) and now_id != base_ids[idx]:
        where.append(f"its id now '{now_id}'" if now_id else "its id now cleared")
    others = [
        base_ids[i] if i < len(base_ids) else "a new row"
        for i in edits
        if i != idx and i in position
    ]
    if others:
        where.append(f"unsaved edits here also to {', '.join(others)}")
    st.caption(md_escape("; ".join(where) + "."))
    for field, label in FORM_FIELDS.items():
        key = f"pform_{tag}_{idx}_{field}"
        current = _text(table.loc[idx, field])
        edit = edits.get(idx, {}).get(field)
        if key not in st.session_state:  # shown for the first time, or again after a switch
            st.session_state[key] = edit["value"] if edit else current
            starts[key] = edit["from"] if edit else current
        elif not edit and st.session_state[key] == starts[key] != current:
            st.session_state[key] = starts[key] = current  # untouched here, edited in the table
        widget = st.text_input if field == "title" else st.text_area
        derived = None
        if field in CONTRASTIVE:  # blank: derived from the question as it now reads
            question = st.session_state.get(f"pform_{tag}_{idx}_preference_question")
            question = question or _text(table.loc[idx, "preference_question"])
            derived = derived_prompts(question)[CONTRASTIVE[field]] if question.strip() else ""
        value = widget(
            label,
            key=key,
            on_change=_keep_form_edit,
            args=(tag, idx, field),
            **({} if field == "title" else {"height": 100 if derived is not None else 150}),
            **({"placeholder": derived} if derived else {}),
        )
        if derived is not None and not value.strip():
            st.caption(
                md_escape(
                    "Derived from the principle's texts (its preference question), as shown "
                    "greyed above; write one to use your own."
                )
            )
        if value != starts[key] and current not in (starts[key], value):
            st.warning(
                f"The table's {field} for this row changed too. Saving keeps neither until they "
                "agree: copy the text you want into both."
            )
    return edits


def rows_with_form_edits(table: pd.DataFrame, edits: dict) -> tuple[list[dict], list[Problem]]:
    """The table's rows with the form's edits laid over them, and any field edited differently
    in both places (a conflict: neither wins silently)."""
    rows = table.to_dict("records")
    position = {idx: n for n, idx in enumerate(table.index)}
    conflicts = []
    for idx, fields in edits.items():
        if idx not in position:  # the row was deleted in the table; so are its form edits
            continue
        n = position[idx]
        for field, edit in fields.items():
            current = _text(rows[n][field])
            if current not in (edit["from"], edit["value"]):
                conflicts.append(
                    Problem(
                        f"principles[{n}].{field}",
                        "edited differently in the table and in the form; make them agree "
                        "(copy the text you want into both) and save again",
                    )
                )
            else:
                rows[n][field] = edit["value"]
    return rows, conflicts


# -- the coloured diff ----------------------------------------------------------------------


def _segments_markdown(line, colour: str, sign: str) -> str:
    """One diff line as markdown: changed words on a coloured background (struck through when
    removed), the rest as plain text; every piece of user text escaped."""
    out = [f":{colour}[**{sign}**] "]
    for changed, text in line:
        core = text.strip()
        if not core:
            out.append(" ")
            continue
        lead = " " if text[:1].isspace() else ""
        trail = " " if text[-1:].isspace() else ""
        body = md_escape(core)
        if changed:
            body = f":{colour}-background[:{colour}[{'~~' + body + '~~' if sign == '−' else body}]]"
        out.append(f"{lead}{body}{trail}")
    return "".join(out)


def _value_text(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


def _show_change(label: str, old, new) -> None:
    """One field's change: the old text with what was removed in red, the new text with what
    was added in green."""
    old_lines, new_lines = word_diff(_value_text(old), _value_text(new))
    lines = []
    if old is not None and _value_text(old):
        lines += [_segments_markdown(x, "red", "−") for x in old_lines]
    if new is not None and _value_text(new):
        lines += [_segments_markdown(x, "green", "+") for x in new_lines]
    st.markdown(f":gray[{md_escape(label)}]  \n" + "  \n".join(lines))


def show_diff(old: Constitution, new: Constitution, diff: ConstitutionDiff) -> None:
    """The diff coloured and wrapped, principle by principle; then the same as plain text."""
    if diff.is_empty:
        st.caption("No differences.")
        return
    for name, a, b in diff.meta:
        with st.container(border=True):
            _show_change(name, a, b)
    for pid, c, colour, sign in [
        *((pid, new, "green", "+") for pid in diff.added),
        *((pid, old, "red", "−") for pid in diff.removed),
    ]:
        with st.container(border=True):
            verb = "added" if sign == "+" else "removed"
            st.markdown(f":{colour}[**{sign}**] principle **{md_escape(pid)}** ({verb})")
            for fname, value in c.principle(pid).model_dump().items():
                _show_change(fname, None if sign == "+" else value, value if sign == "+" else None)
    for pid, fields in diff.changed.items():
        with st.container(border=True):
            st.markdown(f":orange[**~**] principle **{md_escape(pid)}**")
            for fname, a, b in fields:
                _show_change(fname, a, b)
    notes = [":orange[**~**] principles reordered"] if diff.reordered else []
    for label, (plus, minus) in (
        ("critique few-shot", diff.few_shots),
        ("comparison few-shot", diff.comparison_few_shots),
    ):
        notes += [f":green[**+**] {plus} {label} example(s)"] if plus else []
        notes += [f":red[**−**] {minus} {label} example(s)"] if minus else []
    if notes:
        st.markdown("  \n".join(notes))
    st.caption("The same diff as plain text, to copy:")
    text = diff.render()
    st.code(
        text, language=None, wrap_lines=True, height=320 if text.count("\n") > 14 else "content"
    )


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
        format_func=lambda s: by_seq[s].label,  # as every version picker shows it
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
        table_col, form_col = st.columns([3, 2], gap="medium")
        edited = table_col.data_editor(
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
                "positive_prompt": st.column_config.TextColumn(
                    "positive_prompt",
                    width=200,
                    help="Contrastive pairs: the system prompt asking for the answer this "
                    "principle favours. Blank: derived from its preference question.",
                ),
                "negative_prompt": st.column_config.TextColumn(
                    "negative_prompt",
                    width=200,
                    help="Contrastive pairs: the system prompt asking for the answer this "
                    "principle disfavours. Blank: derived from its preference question.",
                ),
            },
        )
        with form_col.container(border=True):
            form_edits = principle_form(tag, edited, [p.id for p in constitution.principles])

        # Few-shots name principles by id: a renamed id can take its references along.
        renames = principle_renames(constitution, edited["id"].to_dict())
        references = principle_references(constitution, renames)
        rename_references = False
        if references:
            rename_references = st.checkbox(
                f"Also rename the {len(references)} few-shot reference(s) to the renamed "
                "principle(s)",
                value=True,
                key=f"rename_refs_{tag}",
            )
            st.caption(
                md_escape(
                    "; ".join(
                        f"'{old}' → '{renames[old]}': "
                        + ", ".join(_few_shot_label(w) for w, ref in references if ref == old)
                        for old in dict.fromkeys(ref for _, ref in references)
                    )
                )
            )
        note = st.text_input(
            "Note for the new version", key=f"note_{tag}", placeholder="what changed and why"
        )
        if st.button("Save as new version", key="save_principles", type="primary"):
            rows, conflicts = rows_with_form_edits(edited, form_edits)
            problems = list(conflicts)
            try:
                updated = constitution_from_rows(
                    rows,
                    constitution,
                    description=description,
                    renames=renames if rename_references else None,
                )
            except ConstitutionError as e:
                problems += e.problems
            if problems:
                now = {
                    constitution.principles[idx].id: (n + 1, _text(edited.loc[idx, "id"]).strip())
                    for n, idx in enumerate(edited.index)
                    if idx < len(constitution.principles)
                }
                problems.sort(key=_row_of)  # row by row; stable within a row
                show_problems(
                    ConstitutionError("table", problems),
                    "Nothing was lost: your edits are still in the table and the form above.",
                    describe=lambda p: _table_problem(p, now),
                )
            else:
                moved = len(references) if rename_references else 0
                st.session_state["_pform_carry_pick"] = st.session_state.get(f"pform_pick_{tag}")
                save(
                    updated,
                    note,
                    version.hash,
                    notes=(f"Renamed {moved} few-shot reference(s).",) if moved else (),
                )

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
                for k, r in enumerate(shot.earlier_rounds, start=1):
                    st.markdown(
                        f"**Round {k}: critique request, critique, revision request, revision**"
                    )
                    for text in (r.critique_request, r.critique, r.revision_request, r.revision):
                        st.text(text)
                if shot.earlier_rounds:
                    st.markdown(f"**Round {len(shot.earlier_rounds) + 1}**")
                for label, own in (
                    ("critique", shot.critique_request),
                    ("revision", shot.revision_request),
                ):
                    if own:
                        st.caption(md_escape(f"Its own {label} request (no principle's): {own}"))
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
                show_problems(e, YAML_KEPT)
            else:
                st.success(f"Valid: {len(parsed.principles)} principles, hash {parsed.hash[:12]}.")
        if save_col.button("Save as new version", key="save_yaml", type="primary"):
            try:
                parsed = parse_constitution(text, "YAML")
            except ConstitutionError as e:
                show_problems(e, YAML_KEPT)
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
            old_c, new_c = by_seq[old_seq].constitution, by_seq[new_seq].constitution
            diff = diff_constitutions(old_c, new_c)
            m = st.columns(4)
            m[0].metric("Added", len(diff.added))
            m[1].metric("Removed", len(diff.removed))
            m[2].metric("Changed", len(diff.changed))
            m[3].metric("Few-shots ±", f"+{diff.few_shots[0]} / -{diff.few_shots[1]}")
            show_diff(old_c, new_c, diff)
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
        for loss in export_losses(constitution):
            st.caption(md_escape(f"Note: {loss}."))

st.subheader("Import")
st.caption(
    "A YAML constitution; Anthropic's CritiqueRevisionInstructions.json (optionally with "
    "RLMadisonInstructions.json, a few-shot file and the RL few-shot files, in any order); or an "
    "llm-swarm JSON (chats of one or more critique→revision rounds). Importing adds a new "
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
        show_problems(e, "Nothing was imported.")
    except CaiError as e:
        show_error(e, "Not imported: ")
