"""Constitutions: the shipped files, validation errors that name file and line, hashes, versions, diffs."""

from __future__ import annotations

import hashlib
import textwrap

import pytest
import yaml

from cai_engine.constitution import (
    Constitution,
    ConstitutionError,
    constitution_from_rows,
    diff_constitutions,
    load_constitution,
    parse_constitution,
    principle_references,
    principle_renames,
    principles_to_rows,
    to_yaml,
    word_diff,
)
from cai_engine.errors import CaiError, NotFoundError
from cai_engine.files import InputFileError
from tests.conftest import ROOT

TINY = textwrap.dedent(
    """\
    name: tiny
    principles:
      - id: kind
        title: Kind
        critique_request: Say how the answer was unkind.
        revision_request: Rewrite it kindly.
        preference_question: Which response is kinder?
    """
)


def tiny(**changes) -> Constitution:
    data = yaml.safe_load(TINY)
    data["principles"][0].update(changes)
    return Constitution.model_validate(data)


def errors_of(text: str, source="c.yaml") -> ConstitutionError:
    with pytest.raises(ConstitutionError) as err:
        parse_constitution(text, source)
    return err.value


# -- the shipped constitutions ------------------------------------------------------------


def test_default_has_the_five_brief_principles_each_complete():
    c = load_constitution(ROOT / "constitutions" / "default.yaml")
    assert [p.id for p in c.principles] == [
        "beneficence", "autonomy", "non-maleficence", "transparency", "justice",
    ]  # fmt: skip
    for p in c.principles:
        assert p.critique_request and p.revision_request and p.preference_question


@pytest.mark.parametrize("name", ["default", "harmless"])
def test_shipped_constitutions_have_a_no_change_few_shot(name):
    c = load_constitution(ROOT / "constitutions" / f"{name}.yaml")
    assert any(s.no_change for s in c.few_shots)
    assert any(not s.no_change for s in c.few_shots)
    assert c.comparison_few_shots
    assert c.warnings() == []


def test_harmless_covers_the_papers_themes_and_discourages_preachiness():
    c = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    assert 14 <= len(c.principles) <= 18
    text = " ".join(
        f"{p.title} {p.critique_request} {p.preference_question}".lower() for p in c.principles
    )
    for theme in ["illegal", "child", "manipulat", "empath", "racis", "gender", "honest", "crim"]:
        assert theme in text, theme
    anti_preachy = (
        "preachy",
        "condescending",
        "accusatory",
        "over-reactive",
        "sanctimonious",
        "moralis",
    )
    discouraging = [
        p for p in c.principles if any(w in p.preference_question.lower() for w in anti_preachy)
    ]
    assert len(discouraging) >= 4
    assert len({p.weight for p in c.principles}) > 1  # some principles are weighted


# -- validation ---------------------------------------------------------------------------


def test_an_unknown_key_names_the_line_and_the_allowed_keys():
    err = errors_of(TINY.replace("    title: Kind\n", "    title: Kind\n    titel: oops\n"))
    (problem,) = err.problems
    assert problem.where == "principles[0].titel"
    assert problem.line == 5
    assert "unknown key 'titel'" in problem.message
    assert "critique_request" in problem.message  # lists what is allowed
    assert str(err).startswith("c.yaml:5: principles[0].titel: unknown key")


def test_a_missing_critique_request_is_named_with_its_principle_line():
    err = errors_of(TINY.replace("    critique_request: Say how the answer was unkind.\n", ""))
    (problem,) = err.problems
    assert problem.where == "principles[0].critique_request"
    assert problem.message == "missing required key 'critique_request'"
    assert problem.line == 3  # the principle's mapping starts on line 3


def test_duplicate_principle_ids_are_refused():
    second = TINY.split("principles:\n")[1]
    err = errors_of(TINY + second)
    (problem,) = err.problems
    assert problem.where == "principles[1].id"
    assert "duplicate principle id 'kind'" in problem.message
    assert problem.line == 8


def test_an_empty_principle_list_is_refused():
    err = errors_of("name: empty\nprinciples: []\n")
    assert err.problems[0].message == "a constitution needs at least one principle"


def test_a_yaml_syntax_error_names_the_line():
    err = errors_of(TINY + "  - id: [unclosed\n")
    # The parser notices at the end of the file (line 9); the message points back to line 8.
    assert err.problems[0].line == 9
    assert "YAML syntax error" in err.problems[0].message
    assert "starts on line 8" in err.problems[0].message


def test_every_problem_is_reported_at_once():
    bad = TINY.replace("id: kind", "id: Not A Slug").replace("title: Kind", "title: ''")
    err = errors_of(bad.replace("    preference_question: Which response is kinder?\n", ""))
    wheres = {p.where for p in err.problems}
    assert {
        "principles[0].id",
        "principles[0].title",
        "principles[0].preference_question",
    } <= wheres


def test_blank_text_is_refused():
    err = errors_of(TINY.replace("Rewrite it kindly.", "'   '"))
    assert err.problems[0].where == "principles[0]"
    assert "'revision_request' must not be blank" in err.problems[0].message


def test_a_few_shot_must_name_a_real_principle():
    text = TINY + textwrap.dedent(
        """\
        few_shots:
          - principle: nope
            conversation:
              - {role: user, content: hi}
              - {role: assistant, content: go away}
            critique: Rude.
            revision: Hello! How can I help?
        """
    )
    err = errors_of(text)
    assert err.problems[0].where == "few_shots[0].principle"
    assert "unknown principle 'nope'; known ids: kind" in err.problems[0].message
    assert err.problems[0].line == 9


def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(TINY.replace("Kind\n", "Kïnd\n").encode("latin-1"))
    with pytest.raises(InputFileError, match=r"latin1.yaml:4: not valid UTF-8"):
        load_constitution(path)


def test_a_file_over_10_mb_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.truncate(11 * 1024 * 1024)
    with pytest.raises(InputFileError, match=r"11.5 MB; the limit is 10 MB"):
        load_constitution(path)


def test_a_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + TINY.encode())
    assert load_constitution(path).name == "tiny"


def test_a_yaml_alias_bomb_is_refused():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 8):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb += f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    err = errors_of(bomb)  # 10^8 nodes once expanded
    assert "YAML aliases" in err.problems[0].message


def test_the_wrong_top_level_shape_says_what_was_expected():
    err = errors_of("- just\n- a list\n")
    assert "expected a mapping with keys name, description, principles" in err.problems[0].message


# -- identity -----------------------------------------------------------------------------


def test_the_hash_is_sha256_of_canonical_json_without_defaults():
    c = parse_constitution(TINY)
    canonical = (
        '{"name":"tiny","principles":[{"critique_request":"Say how the answer was unkind.",'
        '"id":"kind","preference_question":"Which response is kinder?",'
        '"revision_request":"Rewrite it kindly.","title":"Kind"}]}'
    )
    assert c.canonical_json() == canonical
    assert c.hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert c.hash == "d2ffbcea59d028c53faab0c573c3516346fbad4596661b77f093656dac104212"


def test_key_order_and_spelt_out_defaults_do_not_change_the_hash():
    reordered = textwrap.dedent(
        """\
        principles:
          - preference_question: Which response is kinder?
            revision_request: Rewrite it kindly.
            title: Kind
            id: kind
            critique_request: Say how the answer was unkind.
            enabled: true
            weight: 1.0
            tags: []
        description: ''
        name: tiny
        """
    )
    assert parse_constitution(reordered).hash == parse_constitution(TINY).hash


@pytest.mark.parametrize("name", ["default", "harmless"])
def test_yaml_round_trip_keeps_content_and_hash(name):
    c = load_constitution(ROOT / "constitutions" / f"{name}.yaml")
    again = parse_constitution(to_yaml(c))
    assert again == c
    assert again.hash == c.hash


# -- the studio's table -------------------------------------------------------------------


def test_table_rows_round_trip_and_blank_rows_are_dropped():
    c = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    rows = principles_to_rows(c)
    blank = {k: None for k in rows[0]}
    assert constitution_from_rows(rows + [blank], c) == c


def test_a_blank_required_cell_is_an_error_on_that_row():
    c = parse_constitution(TINY)
    rows = principles_to_rows(c)
    rows[0]["critique_request"] = "  "
    with pytest.raises(ConstitutionError) as err:
        constitution_from_rows(rows, c)
    assert err.value.problems[0].where == "principles[0].critique_request"
    assert err.value.problems[0].message == "missing required key 'critique_request'"


def test_tags_are_comma_separated_in_the_table():
    c = parse_constitution(TINY)
    rows = principles_to_rows(c)
    rows[0]["tags"] = "harm,  kindness ,"
    assert constitution_from_rows(rows, c).principles[0].tags == ["harm", "kindness"]


# -- versions in the store ----------------------------------------------------------------


def test_saving_the_same_constitution_twice_adds_nothing(store):
    c = parse_constitution(TINY)
    first, created = store.save_constitution(c, note="first")
    again, created_again = store.save_constitution(parse_constitution(TINY), note="again")
    assert (created, created_again) == (True, False)
    assert again == first
    assert len(store.list_versions("tiny")) == 1


def test_an_edit_creates_a_new_version_and_never_rewrites_the_old_one(store):
    v1, _ = store.save_constitution(parse_constitution(TINY))
    v2, created = store.save_constitution(
        tiny(title="Kindness"), note="retitled", parent_hash=v1.hash
    )
    assert created and v2.seq == 2 and v2.parent_hash == v1.hash and v2.note == "retitled"
    assert store.get_version("tiny@1").constitution.principles[0].title == "Kind"
    assert store.get_version("tiny").constitution.principles[0].title == "Kindness"


def test_versions_resolve_by_number_hash_prefix_or_latest(store):
    v1, _ = store.save_constitution(parse_constitution(TINY))
    v2, _ = store.save_constitution(tiny(title="Kindness"))
    assert store.get_version("tiny@1") == v1
    assert store.get_version("tiny@v2") == v2
    assert store.get_version(f"tiny@{v1.hash[:8]}") == v1
    assert store.get_version("tiny@latest") == v2
    with pytest.raises(
        NotFoundError, match=r"version '7' of 'tiny' does not exist; versions: 1 \("
    ):
        store.get_version("tiny@7")
    with pytest.raises(NotFoundError, match="no constitution named 'nope'; known: tiny"):
        store.get_version("nope")
    with pytest.raises(CaiError, match="not a constitution reference"):
        store.get_version("Bad Name")


def test_list_constitutions_summarises_the_latest_version(seeded_store):
    summaries = {s.name: s for s in seeded_store.list_constitutions()}
    assert set(summaries) == {"default", "harmless"}
    assert summaries["default"].principles == 5
    assert summaries["default"].versions == 1


# -- diffs --------------------------------------------------------------------------------


def test_diff_reports_principles_added_removed_and_changed_field_by_field():
    old = load_constitution(ROOT / "constitutions" / "default.yaml")
    data = old.model_dump()
    data["principles"][0]["title"] = "Do good"
    data["principles"][1]["enabled"] = False
    removed = data["principles"].pop(4)["id"]
    data["few_shots"] = data["few_shots"][1:]
    unlinked = 0  # few-shots that named the removed principle now name none: each is a change
    for shot in data["few_shots"]:
        if shot["principle"] == removed:
            shot["principle"] = None
            unlinked += 1
    for shot in data["comparison_few_shots"]:
        if shot["principle"] == removed:
            shot["principle"] = None
    data["principles"].append({**data["principles"][0], "id": "honesty", "title": "Honesty"})
    new = Constitution.model_validate(data)

    d = diff_constitutions(old, new)
    assert d.added == ["honesty"]
    assert d.removed == [removed]
    assert d.changed == {
        "beneficence": [("title", old.principles[0].title, "Do good")],
        "autonomy": [("enabled", True, False)],
    }
    assert unlinked == 1
    assert d.few_shots == (unlinked, 1 + unlinked)  # (added, removed): a change is both
    text = d.render()
    assert "+ principle 'honesty'" in text and f"- principle '{removed}'" in text
    assert "~ principle 'beneficence'" in text and "+ Do good" in text


def test_diff_of_identical_versions_is_empty():
    c = parse_constitution(TINY)
    assert diff_constitutions(c, c).is_empty
    assert diff_constitutions(c, c).render() == "no differences"


# -- every problem at once, with renames ----------------------------------------------------

TWO_SHOTS = textwrap.dedent(
    """\
    few_shots:
      - principle: kind
        conversation:
          - {role: user, content: hi}
          - {role: assistant, content: go away}
        critique: Rude.
        revision: Hello! How can I help?
    comparison_few_shots:
      - principle: kind
        conversation:
          - {role: user, content: hi}
        response_a: go away
        response_b: Hello!
        preferred: B
    """
)


def test_a_blank_id_does_not_hide_a_duplicate_id_in_the_table():
    c = parse_constitution(TINY + TINY.split("principles:\n")[1].replace("id: kind", "id: calm"))
    rows = principles_to_rows(c) + [{**principles_to_rows(c)[0]}]  # row 3 copies row 1's id
    rows[1]["id"] = ""  # row 2's id cleared
    with pytest.raises(ConstitutionError) as err:
        constitution_from_rows(rows, c)
    # Two problems, row by row: the pydantic one (blank id) and the cross-field one (duplicate).
    assert [(p.where, p.message) for p in err.value.problems] == [
        ("principles[1].id", "missing required key 'id'"),
        (
            "principles[2].id",
            "duplicate principle id 'kind' (also used by principles[0]); ids must be unique",
        ),
    ]


def test_field_and_cross_field_problems_are_listed_together_in_document_order():
    second = TINY.split("principles:\n")[1]
    text = (
        TINY.replace("    title: Kind\n", "")  # principles[0]: no title (line 3)
        + second  # principles[1]: duplicate id 'kind' (line 7)
        + TWO_SHOTS.replace("principle: kind", "principle: gone", 1)  # few_shots[0]: unknown
    )
    err = errors_of(text)
    assert [(p.line, p.where) for p in err.problems] == [
        (3, "principles[0].title"),
        (7, "principles[1].id"),
        (13, "few_shots[0].principle"),
    ]
    assert err.problems[2].message == "unknown principle 'gone'; known ids: kind"


def test_every_blank_field_of_a_principle_is_named():
    err = errors_of(
        TINY.replace("Rewrite it kindly.", "' '").replace("Which response is kinder?", "'  '")
    )
    (problem,) = err.problems
    assert problem.message == (
        "'revision_request' must not be blank; 'preference_question' must not be blank"
    )


def test_renamed_ids_are_found_by_row_and_their_references_listed():
    c = parse_constitution(TINY + TWO_SHOTS)
    # Row 0 renamed; a row added in the table (index 1) has no old id; a cleared id is no rename.
    assert principle_renames(c, {0: " kindness ", 1: "new"}) == {"kind": "kindness"}
    assert principle_renames(c, {0: "kind"}) == {}
    assert principle_renames(c, {0: None}) == {}
    assert principle_renames(c, {0: "Not A Slug"}) == {}  # references follow only a valid id
    assert principle_references(c, ["kind"]) == [
        ("few_shots[0].principle", "kind"),
        ("comparison_few_shots[0].principle", "kind"),
    ]


def test_renaming_a_referenced_id_is_refused_unless_the_references_follow():
    c = parse_constitution(TINY + TWO_SHOTS)
    rows = principles_to_rows(c)
    rows[0]["id"] = "kindness"
    with pytest.raises(ConstitutionError) as err:
        constitution_from_rows(rows, c)
    assert [p.where for p in err.value.problems] == [
        "few_shots[0].principle",
        "comparison_few_shots[0].principle",
    ]
    renamed = constitution_from_rows(rows, c, renames={"kind": "kindness"})
    assert [s.principle for s in [*renamed.few_shots, *renamed.comparison_few_shots]] == [
        "kindness",
        "kindness",
    ]
    assert c.few_shots[0].principle == "kind"  # the base is untouched


# -- word diffs -----------------------------------------------------------------------------


def test_word_diff_marks_only_the_changed_words():
    old, new = word_diff("Say how the answer was unkind.", "Say how the reply was cruel.")
    assert old == [
        [
            (False, "Say how the "),
            (True, "answer"),
            (False, " was "),
            (True, "unkind"),
            (False, "."),
        ]
    ]
    assert new == [
        [(False, "Say how the "), (True, "reply"), (False, " was "), (True, "cruel"), (False, ".")]
    ]


def test_word_diff_matches_lines_first_and_marks_whole_added_lines():
    old, new = word_diff("one\ntwo red fox\nthree", "one\ntwo blue cat\nthree\nfour")
    assert old == [[(False, "one")], [(False, "two "), (True, "red fox")], [(False, "three")]]
    assert new == [
        [(False, "one")],
        [(False, "two "), (True, "blue cat")],  # the space between two changes joins them
        [(False, "three")],
        [(True, "four")],
    ]
    assert word_diff("same", "same") == ([[(False, "same")]], [[(False, "same")]])
