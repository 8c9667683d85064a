"""Studio pages driven through Streamlit's AppTest, against a real DuckDB store in a throwaway home.

Each test runs a page script headless, works its widgets by `key=`, then checks what the page
shows and what it wrote to the store. `st.data_editor` edits are seeded the way AppTest
documents: assign the editor's edit state (`edited_rows`, `added_rows`, `deleted_rows`) on
`at.session_state` before `run()`. Uploads go through AppTest's `file_uploader.upload`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import (
    AlertBase,
    Expander,
    HeadingBase,
    Markdown,
    Tab,
    Widget,
)

from cai_engine.constitution import parse_constitution, to_yaml
from cai_engine.home import BUNDLED_PROMPT_SETS
from cai_engine.prompts import import_prompt_set

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "ui" / "app_pages"

# What a user might type that must show as text: raw HTML and markdown.
PAYLOAD = "<script>alert(1)</script> <img src=x onerror=alert(1)> **bold**"
# Any of these in a string handed to the markdown renderer means the payload was not escaped.
UNESCAPED = re.compile(r"(?<!\\)<(?:script|img)|(?<!\\)\*\*bold")


def run_page(page: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    return at


def md_unescape(text: str) -> str:
    """Undo `ui.common.md_escape`: what the reader sees once markdown has rendered."""
    return re.sub(r"\\(.)", r"\1", text.replace("  \n", "\n"))


def problem_lines(at: AppTest) -> list[str]:
    """The bulleted problems that `show_problems` writes under its error, as the reader sees them."""
    return [md_unescape(m.value)[2:] for m in at.markdown if m.value.startswith("- ")]


def successes(at: AppTest) -> list[str]:
    return [md_unescape(s.value) for s in at.success]


def markdown_strings(at: AppTest) -> list[str]:
    """Every string on the page that Streamlit renders as markdown (bodies and labels)."""
    found = []

    def walk(node) -> None:
        if isinstance(node, Expander | Tab):
            found.append(node.label)
        if hasattr(node, "children"):
            for child in node.children.values():
                walk(child)
        elif isinstance(node, Markdown | AlertBase | HeadingBase):
            found.append(node.proto.body)
        elif isinstance(node, Widget):
            found.append(node.proto.label)

    walk(at.main)
    walk(at.sidebar)
    return found


def line_of(text: str, line: str, occurrence: int = 1) -> int:
    """1-based number of the `occurrence`-th line of `text` equal to `line`."""
    hits = [i + 1 for i, x in enumerate(text.splitlines()) if x == line]
    return hits[occurrence - 1]


def open_constitution(name: str) -> AppTest:
    at = run_page("constitutions")
    at.selectbox(key="con_name").select(name).run()
    assert not at.exception, at.exception
    return at


def seed_grid(at: AppTest, tag: str, edited=None, added=None, deleted=None) -> None:
    """Set the principle editor's edit state, as the browser would after cell edits."""
    at.session_state[f"grid_{tag}"] = {
        "edited_rows": edited or {},
        "added_rows": added or [],
        "deleted_rows": deleted or [],
    }


# -- Home and the router -------------------------------------------------------------------


def test_home_shows_what_the_store_holds(store):
    # Home's page links resolve against the entrypoint, so it runs through the router.
    at = AppTest.from_file(str(ROOT / "ui" / "app.py"), default_timeout=30)
    at.run()
    assert not at.exception, at.exception

    bundled = sum(
        1
        for path in BUNDLED_PROMPT_SETS.glob("*.jsonl")
        for x in path.read_text().splitlines()
        if x.strip()
    )  # helpful.jsonl 189 + red-team.jsonl 188 = 377 at the time of writing
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {
        "Constitutions": "2",  # default, harmless
        "Versions": "2",  # one bundled version each
        "Prompt sets": "2",  # helpful, red-team
        "Prompts": str(bundled),
        "Jobs": "0",
    }
    assert store.counts()["prompts"] == bundled
    assert [t.value for t in at.title] == ["CAI Studio"]


def test_the_demo_launcher_starts_a_contrastive_demo_on_the_picked_profile(store, cai_home):
    from cai_engine import jobs
    from tests.runners import kill_runners

    at = AppTest.from_file(str(ROOT / "ui" / "app.py"), default_timeout=60)
    at.run()
    pairs = at.radio(key="demo_pairs")
    assert pairs.value == "samples"  # the judge's labels, as `cai demo`
    assert list(pairs.options) == [  # the choices as shown
        "Two sampled answers, labelled by the AI judge (RLAIF)",
        "Contrastive pairs: a positive and a negative prompt, preferred side known (RLCD)",
    ]
    at.radio(key="demo_profile").set_value("tiny")
    pairs.set_value("contrastive")
    try:
        at.button(key="run_demo").click().run()
        assert not at.exception, at.exception
        (job,) = jobs.list_jobs(store, kind="demo")
        assert (job.config["profile"], job.config["pairs"]) == ("tiny", "contrastive")
        assert job.config["constitution"].startswith("harmless@")
        # Home's recent jobs list it at once (the demo and, soon, its first stage)
        recent = next(d.value for d in at.dataframe if {"id", "created"} <= set(d.value.columns))
        assert job.id in set(recent["id"]) and len(recent) <= 5
    finally:
        kill_runners(cai_home)


def test_router_runs_every_page_without_exceptions():
    at = AppTest.from_file(str(ROOT / "ui" / "app.py"), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    for page, title in [
        ("app_pages/constitutions.py", "Constitutions"),
        ("app_pages/prompts.py", "Prompts"),
        ("app_pages/home.py", "CAI Studio"),
    ]:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert [t.value for t in at.title] == [title]


# -- Constitutions: picking and saving from the Principles tab --------------------------------


def test_constitutions_lists_both_and_shows_the_picked_ones_principles(store):
    at = run_page("constitutions")
    assert at.selectbox(key="con_name").options == ["default", "harmless"]

    at.selectbox(key="con_name").select("harmless").run()
    v1 = store.get_version("harmless@1")
    grid = at.data_editor(key=f"grid_{v1.short_hash}")
    assert len(grid.value) == 16  # harmless.yaml has 16 principles
    assert list(grid.value["id"]) == [p.id for p in v1.constitution.principles]
    assert at.text_area(key=f"desc_{v1.short_hash}").value == v1.constitution.description


def test_saving_an_edited_description_creates_a_child_version(store):
    at = open_constitution("harmless")
    v1 = store.get_version("harmless@1")
    tag = v1.short_hash

    at.text_area(key=f"desc_{tag}").input("Harmlessness, briefly.")
    at.text_input(key=f"note_{tag}").input("shorter description")
    at.button(key="save_principles").click().run()
    assert not at.exception, at.exception

    versions = store.list_versions("harmless")
    assert [v.seq for v in versions] == [1, 2]
    v2 = versions[1]
    assert v2.note == "shorter description"
    assert v2.parent_hash == v1.hash
    assert v2.source == "studio"
    assert v2.constitution.description == "Harmlessness, briefly."
    assert v2.constitution.principles == v1.constitution.principles
    # The page moved to v2 and said so.
    assert at.selectbox(key="con_version_harmless").value == 2
    assert successes(at) == [f"Saved harmless@2 ({v2.short_hash})."]
    assert at.text_area(key=f"desc_{v2.short_hash}").value == "Harmlessness, briefly."
    # v1 is untouched.
    again = store.get_version("harmless@1")
    assert (again.hash, again.body) == (v1.hash, v1.body)
    assert again.constitution.description == v1.constitution.description


def test_saving_unchanged_principles_adds_nothing(store):
    at = open_constitution("harmless")
    at.button(key="save_principles").click().run()
    v1 = store.get_version("harmless@1")
    assert successes(at) == [f"Nothing new: identical to harmless@1 ({v1.short_hash})."]
    assert len(store.list_versions("harmless")) == 1


# -- Constitutions: the YAML tab ------------------------------------------------------------


def _break_duplicate_id(text: str) -> tuple[str, int, str]:
    bad = text.replace("- id: unethical-illegal-dangerous", "- id: general-harm", 1)
    line = line_of(bad, "- id: general-harm", occurrence=2)
    return bad, line, "principles[1].id: duplicate principle id 'general-harm'"


def _break_unknown_key(text: str) -> tuple[str, int, str]:
    bad = text.replace("  title: General harm\n", "  title: General harm\n  colour: red\n", 1)
    return (
        bad,
        line_of(bad, "  colour: red"),
        "principles[0].colour: unknown key 'colour'; allowed keys here: id, title",
    )


def _break_syntax(text: str) -> tuple[str, int, str]:
    bad = text.replace("  title: General harm\n", "  title: General harm: oops\n", 1)
    return (
        bad,
        line_of(bad, "  title: General harm: oops"),
        "YAML syntax error: mapping values are not allowed",
    )


@pytest.mark.parametrize("breaker", [_break_duplicate_id, _break_unknown_key, _break_syntax])
def test_invalid_yaml_is_refused_with_its_line_and_the_text_kept(store, breaker):
    at = open_constitution("harmless")
    tag = store.get_version("harmless@1").short_hash
    bad, line, problem = breaker(at.text_area(key=f"yaml_{tag}").value)

    at.text_area(key=f"yaml_{tag}").input(bad)
    at.button(key="save_yaml").click().run()
    assert not at.exception, at.exception

    assert len(at.error) == 1
    assert at.error[0].value.startswith("Not saved:")
    assert any(p.startswith(f"line {line}: {problem}") for p in problem_lines(at)), problem_lines(
        at
    )
    assert len(store.list_versions("harmless")) == 1
    assert at.text_area(key=f"yaml_{tag}").value == bad  # nothing the user wrote is lost


def test_valid_yaml_saves_once_and_identical_yaml_adds_nothing(store):
    at = open_constitution("harmless")
    v1 = store.get_version("harmless@1")
    edited = at.text_area(key=f"yaml_{v1.short_hash}").value.replace(
        "  title: General harm\n", "  title: Any kind of harm\n", 1
    )

    at.text_area(key=f"yaml_{v1.short_hash}").input(edited)
    at.button(key="validate_yaml").click().run()
    assert [s.value for s in at.success] == [
        f"Valid: 16 principles, hash {parse_constitution(edited).hash[:12]}."
    ]
    assert len(store.list_versions("harmless")) == 1  # validating saves nothing

    at.text_input(key=f"yaml_note_{v1.short_hash}").input("retitled")
    at.button(key="save_yaml").click().run()
    versions = store.list_versions("harmless")
    assert [v.seq for v in versions] == [1, 2]
    v2 = versions[1]
    assert (v2.note, v2.parent_hash) == ("retitled", v1.hash)
    assert v2.constitution.principles[0].title == "Any kind of harm"
    assert at.selectbox(key="con_version_harmless").value == 2

    # The same text again, now from v2's YAML tab.
    at.text_area(key=f"yaml_{v2.short_hash}").input(edited)
    at.button(key="save_yaml").click().run()
    assert successes(at) == [f"Nothing new: identical to harmless@2 ({v2.short_hash})."]
    assert len(store.list_versions("harmless")) == 2


# -- Constitutions: History -----------------------------------------------------------------


def test_history_diff_shows_the_changed_principle(store):
    at = open_constitution("harmless")
    v1 = store.get_version("harmless@1")
    seed_grid(at, v1.short_hash, edited={0: {"title": "Any kind of harm"}})
    at.button(key="save_principles").click().run()
    assert not at.exception, at.exception

    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Added"], metrics["Removed"], metrics["Changed"]) == ("0", "0", "1")
    diff = at.code[-1].value
    assert diff.splitlines() == [
        "~ principle 'general-harm'",
        "    title:",
        "      - General harm",
        "      + Any kind of harm",
    ]


def test_history_diff_follows_the_newest_save(store):
    at = open_constitution("harmless")
    seed_grid(at, store.get_version("harmless@1").short_hash, edited={0: {"title": "First"}})
    at.button(key="save_principles").click().run()
    seed_grid(at, store.get_version("harmless@2").short_hash, edited={1: {"title": "Second"}})
    at.button(key="save_principles").click().run()
    assert len(store.list_versions("harmless")) == 3

    assert at.selectbox(key="diff_new_harmless").value == 3
    assert "~ principle 'unethical-illegal-dangerous'" in at.code[-1].value


# -- Constitutions: the principle editor ----------------------------------------------------


# Streamlit's own row-addition code warns when a blank added row puts None into the bool column.
@pytest.mark.filterwarnings("ignore:Setting an item of incompatible dtype")
def test_editor_edits_additions_deletions_and_tags_make_a_new_version(store):
    at = open_constitution("harmless")
    v1 = store.get_version("harmless@1")
    c1 = v1.constitution
    referenced = {s.principle for s in [*c1.few_shots, *c1.comparison_few_shots]}
    # Delete a principle that no few-shot names (else the save is refused) and that is not
    # one of the first two rows (row index 1 is edited below).
    drop = next(i for i, p in enumerate(c1.principles) if i > 1 and p.id not in referenced)
    new_row = {
        "id": "kindness",
        "title": "Kindness",
        "critique_request": "Was the answer unkind?",
        "revision_request": "Rewrite it kindly.",
        "preference_question": "Which is kinder?",
        "tags": " warmth, ,care ",
        "enabled": True,
        "weight": 0.5,
    }
    seed_grid(
        at,
        v1.short_hash,
        edited={1: {"title": "Renamed", "enabled": False}},
        added=[new_row, {}],  # the second row was added and left entirely blank
        deleted=[drop],
    )
    at.button(key="save_principles").click().run()
    assert not at.exception, at.exception
    assert not at.error

    v2 = store.get_version("harmless@2")
    c2 = v2.constitution
    expected_ids = [p.id for i, p in enumerate(c1.principles) if i != drop] + ["kindness"]
    assert [p.id for p in c2.principles] == expected_ids  # 16 - 1 deleted + 1 added = 16
    assert (c2.principle(c1.principles[1].id).title, c2.principle(c1.principles[1].id).enabled) == (
        "Renamed",
        False,
    )
    added = c2.principle("kindness")
    assert (added.tags, added.weight, added.enabled) == (["warmth", "care"], 0.5, True)
    assert v2.parent_hash == v1.hash


@pytest.mark.parametrize("cleared", [None, "   "])
def test_editor_with_a_cleared_required_cell_names_the_row_and_keeps_the_edits(store, cleared):
    at = open_constitution("harmless")
    tag = store.get_version("harmless@1").short_hash
    seed_grid(at, tag, edited={3: {"critique_request": cleared}, 5: {"title": "Kept"}})
    at.button(key="save_principles").click().run()
    assert not at.exception, at.exception

    assert at.error[0].value.startswith("Not saved: 1 problem(s).")
    # Row index 3 is the fourth row; the page counts rows from 1.
    assert problem_lines(at) == ["row 4, critique_request: missing required key 'critique_request'"]
    assert len(store.list_versions("harmless")) == 1
    assert at.session_state[f"grid_{tag}"]["edited_rows"][5] == {"title": "Kept"}


def test_editor_drops_an_added_row_left_at_its_defaults(store):
    at = open_constitution("harmless")
    v1 = store.get_version("harmless@1")
    seed_grid(at, v1.short_hash, added=[{"enabled": True, "weight": 1.0}])
    at.button(key="save_principles").click().run()
    assert not at.error, problem_lines(at)
    assert successes(at) == [f"Nothing new: identical to harmless@1 ({v1.short_hash})."]


def test_editor_duplicate_id_names_both_rows_as_rows(store):
    at = open_constitution("harmless")
    v1 = store.get_version("harmless@1")
    first = v1.constitution.principles[0].id
    seed_grid(at, v1.short_hash, edited={1: {"id": first}})
    at.button(key="save_principles").click().run()
    dup = [p for p in problem_lines(at) if p.startswith("row 2, id:")]
    assert len(dup) == 1
    assert "row 1" in dup[0] and "principles[" not in dup[0], dup[0]


# -- Constitutions: uploads -----------------------------------------------------------------


def test_uploading_a_yaml_constitution_imports_it_as_a_new_version(store):
    at = run_page("constitutions")
    text = to_yaml(store.get_version("default@1").constitution).replace(
        "name: default", "name: mine", 1
    )
    at.file_uploader(key="import_files").upload("mine.yaml", text.encode(), "application/x-yaml")
    at.run()
    at.button(key="import_button").click().run()
    assert not at.exception, at.exception

    v = store.get_version("mine@1")
    assert (v.note, v.source) == ("imported from mine.yaml", "import:yaml")
    assert at.selectbox(key="con_name").value == "mine"
    assert successes(at)[0].startswith(f"Saved mine@1 ({v.short_hash}).")


def test_uploading_a_broken_constitution_imports_nothing(store):
    at = run_page("constitutions")
    at.file_uploader(key="import_files").upload(
        "broken.yaml", b"name: mine\nprinciples: [\n", "application/x-yaml"
    )
    at.run()
    at.button(key="import_button").click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["Not saved: 1 problem(s). Nothing was imported."]
    # The document has two lines and a final newline; the parser gives up at the end, line 3.
    # An uploaded file's problems name the file.
    assert problem_lines(at)[0].startswith("broken.yaml: line 3: YAML syntax error")
    assert [s.name for s in store.list_constitutions()] == ["default", "harmless"]


# -- Rendering is text ----------------------------------------------------------------------


def test_user_text_is_stored_verbatim_and_never_rendered_as_markup(store):
    at = open_constitution("harmless")
    v1 = store.get_version("harmless@1")
    data = v1.constitution.model_dump(mode="json", exclude_defaults=True)
    data["description"] = PAYLOAD
    data["principles"][0]["title"] = PAYLOAD
    data["few_shots"][0]["critique"] = PAYLOAD
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    at.text_area(key=f"yaml_{v1.short_hash}").input(text)
    at.text_input(key=f"yaml_note_{v1.short_hash}").input(PAYLOAD)
    at.button(key="save_yaml").click().run()
    assert not at.exception, at.exception

    v2 = store.get_version("harmless@2")
    c2 = v2.constitution
    assert (c2.description, c2.principles[0].title, c2.few_shots[0].critique, v2.note) == (
        PAYLOAD,
    ) * 4
    # Shown as text where it appears: the description box, the few-shot text, the diff.
    assert at.text_area(key=f"desc_{v2.short_hash}").value == PAYLOAD
    assert PAYLOAD in [t.value for t in at.text]
    assert f"~ description: {v1.constitution.description!r} -> {PAYLOAD!r}" in at.code[-1].value

    rendered = markdown_strings(at)
    assert rendered, "expected some markdown on the page"
    assert [s for s in rendered if UNESCAPED.search(s)] == []
    assert all(not m.proto.allow_html for m in [*at.markdown, *at.caption])
    assert len(at.get("html")) == 0


def test_problem_messages_quote_user_text_escaped(store):
    at = open_constitution("harmless")
    tag = store.get_version("harmless@1").short_hash
    bad = at.text_area(key=f"yaml_{tag}").value.replace(
        "name: harmless\n", f"name: harmless\n{PAYLOAD!r}: x\n", 1
    )
    at.text_area(key=f"yaml_{tag}").input(bad)
    at.button(key="save_yaml").click().run()

    assert problem_lines(at)[0].startswith(f"line 2: {PAYLOAD}: unknown key '{PAYLOAD}'")
    assert [s for s in markdown_strings(at) if UNESCAPED.search(s)] == []


# -- Prompts --------------------------------------------------------------------------------


def matching_caption(at: AppTest) -> int:
    counts = [
        int(m[1]) for c in at.caption if (m := re.fullmatch(r"(\d+) matching prompts", c.value))
    ]
    assert len(counts) == 1, [c.value for c in at.caption]
    return counts[0]


def test_prompts_lists_both_sets_and_their_counts(store):
    at = run_page("prompts")
    assert at.selectbox(key="prompt_set").options == [
        f"{s.name} ({s.prompts} prompts)" for s in store.list_prompt_sets()
    ]
    assert at.selectbox(key="prompt_set").value == "helpful"  # first by name
    helpful = len(store.get_prompts("helpful"))
    assert matching_caption(at) == helpful
    assert len(at.dataframe(key="prompt_table").value) == helpful


@pytest.mark.parametrize(
    ("set_name", "split", "category", "search"),
    [
        ("helpful", "test", "all", ""),
        ("red-team", "all", "cybercrime", ""),
        ("red-team", "all", "all", "HOW"),  # search ignores case
        ("red-team", "train", "fraud-scams", "how"),
    ],
)
def test_prompt_filters_change_the_matching_count(store, set_name, split, category, search):
    at = run_page("prompts")
    at.selectbox(key="prompt_set").select(set_name).run()
    at.selectbox(key="prompt_split").select(split)
    at.selectbox(key="prompt_category").select(category)
    at.text_input(key="prompt_search").input(search)
    at.run()
    assert not at.exception, at.exception

    expected = len(
        store.get_prompts(
            set_name,
            split=None if split == "all" else split,
            category=None if category == "all" else category,
            search=search or None,
        )
    )
    total = len(store.get_prompts(set_name))
    assert 0 < expected < total  # the filter has to bite for this test to mean anything
    assert matching_caption(at) == expected
    assert len(at.dataframe(key="prompt_table").value) == expected


def test_prompt_search_matches_only_the_text_of_turns(store):
    at = run_page("prompts")
    at.selectbox(key="prompt_set").select("red-team").run()
    expected = sum(
        1
        for p in store.get_prompts("red-team")
        if any("content" in m["content"].lower() for m in p.messages)
    )  # 0 in the bundled set
    at.text_input(key="prompt_search").input("content").run()
    assert matching_caption(at) == expected


def test_a_selected_prompt_survives_narrowing_the_filter(store):
    at = run_page("prompts")
    at.selectbox(key="prompt_set").select("red-team").run()
    at.session_state["prompt_table"] = {"selection": {"rows": [100], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    at.text_input(key="prompt_search").input("password").run()
    assert not at.exception, at.exception


def test_uploading_prompts_creates_and_selects_the_set(store):
    at = run_page("prompts")
    body = b'{"prompt": "Plan a picnic.", "category": "how-to"}\n{"prompt": "Name a cat."}\n'
    at.file_uploader(key="prompt_upload").upload("mine.jsonl", body, "application/json")
    at.run()
    at.text_input(key="prompt_import_name").input("mine")
    at.button(key="prompt_import_button").click().run()
    assert not at.exception, at.exception

    prompts = {p.text: p.category for p in store.get_prompts("mine")}
    assert prompts == {"Plan a picnic.": "how-to", "Name a cat.": None}
    assert at.selectbox(key="prompt_set").value == "mine"
    assert successes(at)[0].startswith("2 imported into 'mine', 2 rows read")
    assert matching_caption(at) == 2


def test_uploading_prompts_with_bad_rows_imports_nothing(store):
    at = run_page("prompts")
    body = b'{"prompt": "Fine."}\n{"prompt": ""}\n{"prompt": 42}\n'
    at.file_uploader(key="prompt_upload").upload("bad.jsonl", body, "application/json")
    at.run()
    at.text_input(key="prompt_import_name").input("bad")
    at.button(key="prompt_import_button").click().run()
    assert not at.exception, at.exception

    assert [e.value for e in at.error] == ["Nothing imported: 2 bad row(s)."]
    report = at.code[-1].value
    assert "line 2" in report and "line 3" in report, report
    assert not store.prompt_set_exists("bad")
    assert at.text_input(key="prompt_import_name").value == "bad"


def _import_markup_set(store, prompt_id: str = "p1", description: str = "") -> None:
    """A one-prompt set 'markup', as `cai prompts import --description ...` would make it."""
    body = (json.dumps({"prompt": "hi", "id": prompt_id}) + "\n").encode()
    import_prompt_set(store, ("markup.jsonl", body), "markup", description=description)


def test_a_prompt_id_is_shown_as_text(store):
    at = run_page("prompts")
    _import_markup_set(store, prompt_id=PAYLOAD)
    at.run()  # so the set picker offers the new set
    at.selectbox(key="prompt_set").select("markup").run()
    at.session_state["prompt_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    shown = [h.value for h in at.subheader if PAYLOAD in md_unescape(h.value)]
    assert len(shown) == 1, [h.value for h in at.subheader]
    assert not UNESCAPED.search(shown[0]), shown[0]


def test_a_prompt_set_description_is_shown_as_text(store):
    at = run_page("prompts")
    _import_markup_set(store, description=PAYLOAD)
    at.run()  # so the set picker offers the new set
    at.selectbox(key="prompt_set").select("markup").run()
    assert PAYLOAD in [md_unescape(c.value) for c in at.caption]
    assert [s for s in markdown_strings(at) if UNESCAPED.search(s)] == []


def _flashing_page():
    import streamlit as st

    from ui.common import flash, show_flash

    if st.button("Start", key="start"):
        flash("Started the job")
        st.rerun()
    show_flash()


@pytest.mark.parametrize("then", ["page reruns", "another page", "time passes"])
def test_a_confirmation_stays_on_its_page_through_reruns_until_it_has_been_read(then, monkeypatch):
    import ui.common

    at = AppTest.from_function(_flashing_page)
    at.session_state["_page"] = "traces"
    at.run()
    at.button(key="start").click().run()
    assert [s.value for s in at.success] == ["Started the job"]
    if then == "page reruns":  # as a page reruns itself when its job moves on
        at.run()
        at.run()
        assert [s.value for s in at.success] == ["Started the job"]
    elif then == "another page":
        at.session_state["_page"] = "labels"
        at.run()
        assert not at.success
        at.session_state["_page"] = "traces"
        at.run()
        assert not at.success  # gone for good, not kept for a return
    else:
        monkeypatch.setattr(ui.common.time, "monotonic", lambda: float("inf"))
        at.run()
        assert not at.success
