"""The Constitutions page through AppTest: every problem listed where the user can act on it,
renamed principles taking their few-shot references along, the per-principle form, and the
coloured diff. Browser checks of the same live in test_constitutions_browser.py."""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.test_pages import (
    PAYLOAD,
    UNESCAPED,
    markdown_strings,
    md_unescape,
    open_constitution,
    problem_lines,
    seed_grid,
    successes,
)

KEPT = "Nothing was lost: your edits are still in the table and the form above."


def element_order(at: AppTest) -> list[str]:
    """The page's elements top to bottom, each as its type and, for widgets, its key."""
    out = []

    def walk(node) -> None:
        if hasattr(node, "children"):
            for child in node.children.values():
                walk(child)
        else:
            out.append(f"{node.type}:{getattr(node, 'key', None) or ''}")

    walk(at.main)
    return out


def harmless(at_store) -> tuple[AppTest, str]:
    at = open_constitution("harmless")
    return at, at_store.get_version("harmless@1").short_hash


# -- every problem, counted and placed --------------------------------------------------------


def test_a_blank_id_and_a_duplicate_id_are_both_listed_by_row(store):
    at, tag = harmless(store)
    # Row 2's id cleared, row 3's id made the same as row 1's ("general-harm"). Row 2 was
    # "unethical-illegal-dangerous", which comparison few-shot #1 names: a third problem.
    seed_grid(at, tag, edited={1: {"id": None}, 2: {"id": "general-harm"}, 5: {"title": "Kept"}})
    at.button(key="save_principles").click().run()
    assert not at.exception, at.exception

    assert [e.value for e in at.error] == [f"Not saved: 3 problem(s). {KEPT}"]
    assert problem_lines(at) == [
        "row 2, id: missing required key 'id'",
        "row 3, id: duplicate principle id 'general-harm' (also used by row 1); ids must be unique",
        "comparison few-shot #1 (Few-shots tab), principle: names 'unethical-illegal-dangerous', "
        "the id cleared in row 2. Put it back, or change this few-shot's principle in the YAML "
        "tab.",
    ]
    assert len(store.list_versions("harmless")) == 1
    assert at.session_state[f"grid_{tag}"]["edited_rows"][5] == {"title": "Kept"}


def test_the_message_about_kept_edits_sits_below_the_table_and_the_form(store):
    at, tag = harmless(store)
    seed_grid(at, tag, edited={0: {"title": None}})
    at.button(key="save_principles").click().run()
    order = element_order(at)
    error = next(i for i, e in enumerate(order) if e.startswith("error:"))
    table = order.index(f"dataframe:grid_{tag}")
    form = max(i for i, e in enumerate(order) if f"pform_{tag}_" in e)
    assert "above" in at.error[0].value
    assert table < error and form < error, order


# -- renaming a principle that few-shots name ----------------------------------------------


def rename_crime_assistance(at: AppTest, tag: str) -> None:
    # Row 12 (index 11) is crime-assistance, named by few_shots[0] and comparison_few_shots[1].
    seed_grid(at, tag, edited={11: {"id": "crime"}})
    at.run()


def test_renaming_a_referenced_principle_offers_to_rename_its_references(store):
    at, tag = harmless(store)
    rename_crime_assistance(at, tag)
    box = at.checkbox(key=f"rename_refs_{tag}")
    assert box.label == "Also rename the 2 few-shot reference(s) to the renamed principle(s)"
    assert box.value is True
    assert "'crime-assistance' → 'crime': critique few-shot #1, comparison few-shot #2" in [
        md_unescape(c.value) for c in at.caption
    ]

    at.text_input(key=f"note_{tag}").input("shorter id")
    at.button(key="save_principles").click().run()
    assert not at.error, problem_lines(at)
    v1, v2 = store.list_versions("harmless")
    assert successes(at) == [
        f"Saved harmless@2 ({v2.short_hash}). Renamed 2 few-shot reference(s)."
    ]
    c2 = v2.constitution
    assert c2.principles[11].id == "crime"
    assert (c2.few_shots[0].principle, c2.comparison_few_shots[1].principle) == ("crime", "crime")
    assert v2.note == "shorter id"
    assert v1.constitution.few_shots[0].principle == "crime-assistance"  # v1 untouched


def test_without_the_rename_each_few_shot_to_fix_is_named(store):
    at, tag = harmless(store)
    rename_crime_assistance(at, tag)
    at.checkbox(key=f"rename_refs_{tag}").uncheck().run()
    at.button(key="save_principles").click().run()
    fix = (
        "still names 'crime-assistance', which row 12 renames to 'crime'. Tick \"Also rename "
        "the few-shot references\" above and save again, or change this few-shot's principle "
        "in the YAML tab."
    )
    assert [e.value for e in at.error] == [f"Not saved: 2 problem(s). {KEPT}"]
    assert problem_lines(at) == [
        f"critique few-shot #1 (Few-shots tab), principle: {fix}",
        f"comparison few-shot #2 (Few-shots tab), principle: {fix}",
    ]
    assert len(store.list_versions("harmless")) == 1
    assert at.session_state[f"grid_{tag}"]["edited_rows"][11] == {"id": "crime"}


def test_a_rename_to_an_invalid_id_asks_for_a_valid_one_first(store):
    at, tag = harmless(store)
    seed_grid(at, tag, edited={11: {"id": "Crime Assistance"}})
    at.run()
    assert not [c for c in at.checkbox if c.key == f"rename_refs_{tag}"]  # nothing to follow
    at.button(key="save_principles").click().run()
    fix = (
        "names 'crime-assistance', which row 12 renames to 'Crime Assistance', not a valid id. "
        "Fix that id first; the references can then follow it."
    )
    assert problem_lines(at) == [
        "row 12, id: must be a slug: lowercase letters, digits, '-' or '_', starting with a "
        "letter or digit",
        f"critique few-shot #1 (Few-shots tab), principle: {fix}",
        f"comparison few-shot #2 (Few-shots tab), principle: {fix}",
    ]


def test_deleting_a_referenced_principle_names_the_few_shots_that_need_it(store):
    at, tag = harmless(store)
    seed_grid(at, tag, deleted=[11])
    at.button(key="save_principles").click().run()
    gone = (
        "names 'crime-assistance', which is no longer in the table. Restore that principle, "
        "or change or remove this few-shot in the YAML tab."
    )
    assert problem_lines(at) == [
        f"critique few-shot #1 (Few-shots tab), principle: {gone}",
        f"comparison few-shot #2 (Few-shots tab), principle: {gone}",
    ]


# -- the per-principle form -----------------------------------------------------------------


def test_the_form_saves_a_principles_long_texts_as_a_new_version(store):
    at, tag = harmless(store)
    at.selectbox(key=f"pform_pick_{tag}").set_value(2).run()  # row 3: harm-to-others
    assert at.text_area(key=f"pform_{tag}_2_critique_request").value == (
        store.get_version("harmless@1").constitution.principles[2].critique_request
    )
    long_text = "Point out every way the answer could hurt the user.\n\nThen list who else."
    at.text_area(key=f"pform_{tag}_2_critique_request").input(long_text)
    at.text_area(key=f"pform_{tag}_2_revision_request").input("Rewrite it so nobody is hurt.")
    at.text_input(key=f"pform_{tag}_2_title").input("Harm to anyone")
    at.text_input(key=f"note_{tag}").input("from the form")
    at.button(key="save_principles").click().run()
    assert not at.error, problem_lines(at)

    v1, v2 = store.list_versions("harmless")
    c1, c2 = v1.constitution, v2.constitution
    edited = c2.principles[2]
    assert (edited.title, edited.critique_request, edited.revision_request) == (
        "Harm to anyone",
        long_text,
        "Rewrite it so nobody is hurt.",
    )
    assert edited.preference_question == c1.principles[2].preference_question
    assert [p for i, p in enumerate(c2.principles) if i != 2] == [
        p for i, p in enumerate(c1.principles) if i != 2
    ]
    assert (v2.note, v2.parent_hash) == ("from the form", v1.hash)
    assert at.selectbox(key=f"pform_pick_{v2.short_hash}").value == 2  # still on row 3
    assert v1.constitution.principles[2].title == "Harm to the user or third parties"


def test_form_edits_survive_picking_another_principle_and_a_refused_save(store):
    at, tag = harmless(store)
    at.text_area(key=f"pform_{tag}_0_critique_request").input("First, edited.")
    at.selectbox(key=f"pform_pick_{tag}").set_value(1).run()
    at.text_area(key=f"pform_{tag}_1_revision_request").input("   ")
    at.button(key="save_principles").click().run()

    assert [e.value for e in at.error] == [f"Not saved: 1 problem(s). {KEPT}"]
    assert problem_lines(at) == ["row 2, revision_request: missing required key 'revision_request'"]
    assert at.text_area(key=f"pform_{tag}_1_revision_request").value == "   "
    assert at.selectbox(key=f"pform_pick_{tag}").options[:2] == [
        "general-harm",
        "unethical-illegal-dangerous",
    ]
    assert "Row 2 of the table; unsaved edits here also to general\\-harm\\." in [
        c.value for c in at.caption
    ]
    at.selectbox(key=f"pform_pick_{tag}").set_value(0).run()
    assert at.text_area(key=f"pform_{tag}_0_critique_request").value == "First, edited."

    at.selectbox(key=f"pform_pick_{tag}").set_value(1).run()
    at.text_area(key=f"pform_{tag}_1_revision_request").input("Second, edited.")
    at.button(key="save_principles").click().run()
    assert not at.error, problem_lines(at)
    c2 = store.get_version("harmless@2").constitution
    assert (c2.principles[0].critique_request, c2.principles[1].revision_request) == (
        "First, edited.",
        "Second, edited.",
    )


def test_the_form_follows_table_edits_it_has_not_touched(store):
    at, tag = harmless(store)
    seed_grid(at, tag, edited={0: {"critique_request": "From the table."}})
    at.run()
    assert at.text_area(key=f"pform_{tag}_0_critique_request").value == "From the table."
    at.text_area(key=f"pform_{tag}_0_revision_request").input("From the form.")
    at.button(key="save_principles").click().run()
    assert not at.error, problem_lines(at)
    p = store.get_version("harmless@2").constitution.principles[0]
    assert (p.critique_request, p.revision_request) == ("From the table.", "From the form.")


def test_a_field_edited_differently_in_table_and_form_is_not_saved(store):
    at, tag = harmless(store)
    at.text_area(key=f"pform_{tag}_0_critique_request").input("From the form.")
    seed_grid(at, tag, edited={0: {"critique_request": "From the table."}})
    at.run()
    assert len(at.warning) == 1 and "changed too" in at.warning[0].value
    at.button(key="save_principles").click().run()
    assert problem_lines(at) == [
        "row 1, critique_request: edited differently in the table and in the form; make them "
        "agree (copy the text you want into both) and save again"
    ]
    assert len(store.list_versions("harmless")) == 1
    assert at.text_area(key=f"pform_{tag}_0_critique_request").value == "From the form."


# -- the coloured diff ----------------------------------------------------------------------


def save_title(at: AppTest, tag: str, title: str) -> None:
    seed_grid(at, tag, edited={0: {"title": title}})
    at.button(key="save_principles").click().run()
    assert not at.exception, at.exception


def test_the_diff_marks_removed_words_red_and_added_words_green(store):
    at, tag = harmless(store)
    save_title(at, tag, "Any kind of harm")
    # "General harm" -> "Any kind of harm": "General" was replaced, " harm" kept. The old line
    # is marked "−" in red, the removed word red and struck through on red; the new line "+"
    # in green, the added words green on green.
    assert (
        ":gray[title]  \n"
        ":red[**−**] :red-background[:red[~~General~~]] harm  \n"
        ":green[**+**] :green-background[:green[Any kind of]] harm"
    ) in [m.value for m in at.markdown]
    code = at.code[-1]
    assert code.proto.wrap_lines is True  # long lines wrap; no sideways scrolling
    assert "      + Any kind of harm" in code.value


def rendered_text(markdown: str) -> str:
    """What a reader sees of our diff markdown: colour directives, bold and strikethrough
    markers dropped, escapes undone."""
    out, i = [], 0
    while i < len(markdown):
        if markdown[i] == "\\":
            out.append(markdown[i + 1])
            i += 2
        elif m := re.match(r":[a-z]+(?:-background)?\[|\]|~~|\*\*", markdown[i:]):
            i += len(m[0])
        else:
            out.append(markdown[i])
            i += 1
    return "".join(out).replace("  \n", "\n")


@pytest.mark.parametrize("field", ["critique_request", "title"])
def test_user_text_in_the_diff_is_escaped(store, field):
    at, tag = harmless(store)
    typed = f"{PAYLOAD} [x](y) :red[z] ~~s~~ \\"
    seed_grid(at, tag, edited={0: {field: typed}})
    at.button(key="save_principles").click().run()
    assert not at.exception, at.exception
    (shown,) = [rendered_text(m.value) for m in at.markdown if ":green[**+**]" in m.value]
    assert shown.splitlines()[-1] == f"+ {typed}"  # the new text, exactly as typed
    assert [s for s in markdown_strings(at) if UNESCAPED.search(s)] == []
    assert not any("[x](y)" in m.value or ":red[z]" in m.value for m in at.markdown)


# -- contrastive prompts ----------------------------------------------------------------------


def test_contrastive_prompts_show_as_derived_until_written_and_round_trip(store):
    from cai_engine.contrastive import contrastive_prompts

    at, tag = harmless(store)
    v1 = store.get_version("harmless@1")
    derived = contrastive_prompts(v1.constitution.principles[0])
    positive = at.text_area(key=f"pform_{tag}_0_positive_prompt")
    negative = at.text_area(key=f"pform_{tag}_0_negative_prompt")
    # blank, the derived prompt greyed in, and the page says where it comes from
    assert (positive.value, positive.placeholder) == ("", derived.positive)
    assert (negative.value, negative.placeholder) == ("", derived.negative)
    said = [md_unescape(c.value) for c in at.caption if "Derived from the principle's" in c.value]
    assert len(said) == 2
    # a principle's own positive prompt, written in the form, saves as a new version
    positive.input("Answer as a wise and kind friend would.")
    at.button(key="save_principles").click().run()
    assert not at.error, problem_lines(at)
    v2 = store.get_version("harmless@2")
    p = v2.constitution.principles[0]
    assert (p.positive_prompt, p.negative_prompt) == (
        "Answer as a wise and kind friend would.",
        None,
    )
    assert v2.constitution.principles[1:] == v1.constitution.principles[1:]
    assert contrastive_prompts(p).derived is True  # its negative prompt is still derived
    tag2 = v2.short_hash
    assert at.text_area(key=f"pform_{tag2}_0_positive_prompt").value == p.positive_prompt
    assert (
        "positive_prompt: Answer as a wise and kind friend would."
        in at.text_area(key=f"yaml_{tag2}").value
    )
    # the table holds it too: saving from the table (another cell edited) keeps it
    seed_grid(at, tag2, edited={1: {"title": "Retitled"}})
    at.button(key="save_principles").click().run()
    assert not at.error, problem_lines(at)
    v3 = store.get_version("harmless@3").constitution
    assert v3.principles[0].positive_prompt == p.positive_prompt
    assert v3.principles[1].title == "Retitled"
    # the peer-format downloads say what they leave out
    notes = [md_unescape(c.value) for c in at.caption if "no contrastive prompts" in c.value]
    assert notes == [
        "Note: the Anthropic and llm-swarm formats have no contrastive prompts: those of "
        "general-harm are left out of them (the YAML keeps them)."
    ]
