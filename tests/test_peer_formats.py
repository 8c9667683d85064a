"""Importing and exporting the Anthropic paper-repository and llm-swarm constitution formats."""

from __future__ import annotations

import json

import pytest

from cai_engine.constitution import ConstitutionError, load_constitution
from cai_engine.peer_formats import (
    PeerFormatError,
    export_anthropic,
    export_llm_swarm,
    import_files,
    import_paths,
)
from tests.conftest import FIXTURES, ROOT

ANTHROPIC = FIXTURES / "peer" / "anthropic"
CRITIQUES = ANTHROPIC / "CritiqueRevisionInstructions.json"
RL = ANTHROPIC / "RLMadisonInstructions.json"
FEW_SHOTS = ANTHROPIC / "CritiqueRevisionFewShotPrompts.json"
SWARM = FIXTURES / "peer" / "llm_swarm" / "constitution.json"


def as_upload(obj, name: str) -> tuple[str, bytes]:
    return name, json.dumps(obj).encode()


def test_the_anthropic_critique_file_alone_imports_with_markers_stripped():
    result = import_paths([CRITIQUES])
    c = result.constitution
    assert result.format == "anthropic"
    assert [p.id for p in c.principles] == ["harmful0", "harmful1", "harmful2", "harmful3"]
    p = c.principles[0]
    assert p.critique_request == (
        "Point out every way in which the assistant's previous reply could be hurtful, "
        "unethical, dangerous or against the law."
    )
    assert p.revision_request.startswith("Rewrite the assistant's reply")
    assert "CritiqueRequest" not in p.critique_request and "Revision:" not in p.revision_request
    # No RL file: every preference question is derived, tagged, and the import says so.
    assert all(p.tags == ["derived"] for p in c.principles)
    assert result.notes and "4 preference question(s) were derived" in result.notes[0]


def test_the_three_anthropic_files_import_together_in_any_order():
    result = import_paths([FEW_SHOTS, RL, CRITIQUES], name="paper")
    c = result.constitution
    assert c.name == "paper"
    assert c.principles[0].preference_question == (
        "Which of the two replies is less harmful and more honest? Please choose it."
    )  # "Options:" is ours to add
    assert result.notes == []
    assert len(c.few_shots) == 2
    assert all(s.principle == "harmful0" for s in c.few_shots)  # matched by request text
    assert [s.no_change for s in c.few_shots].count(True) == 1
    assert c.few_shots[0].conversation[0].role == "user"
    assert c.few_shots[0].conversation[-1].role == "assistant"


def test_more_rl_instructions_than_critiques_become_derived_principles():
    critiques = json.loads(CRITIQUES.read_text())
    two = dict(list(critiques.items())[:2])
    result = import_files([as_upload(two, "c.json"), ("rl.json", RL.read_bytes())], "anthropic")
    ids = [p.id for p in result.constitution.principles]
    assert ids == ["harmful0", "harmful1", "rl-2", "rl-3"]  # nothing the user gave is dropped
    assert len(result.notes) == 2


def test_llm_swarm_imports_principles_and_six_turn_few_shots():
    result = import_paths([SWARM], name="swarm")
    c = result.constitution
    assert result.format == "llm-swarm"
    assert [p.id for p in c.principles] == ["principle-1", "principle-2", "principle-3"]
    assert len(c.few_shots) == 2
    shot = c.few_shots[0]
    assert [m.role for m in shot.conversation] == ["user", "assistant"]
    assert shot.principle is not None


@pytest.mark.parametrize("name", ["default", "harmless"])
def test_export_then_import_keeps_every_principle_and_few_shot(name):
    c = load_constitution(ROOT / "constitutions" / f"{name}.yaml")
    files = [as_upload(obj, fname) for fname, obj in export_anthropic(c).items()]
    back = import_files(files, "auto", name).constitution
    keep = ("id", "critique_request", "revision_request", "preference_question")
    assert [[getattr(p, k) for k in keep] for p in back.principles] == [
        [getattr(p, k) for k in keep] for p in c.principles
    ]
    assert [(s.critique, s.revision, s.answer) for s in back.few_shots] == [
        (s.critique, s.revision, s.answer) for s in c.few_shots
    ]

    swarm = import_files([as_upload(export_llm_swarm(c), "s.json")], "auto", name).constitution
    assert [(p.critique_request, p.revision_request) for p in swarm.principles] == [
        (p.critique_request, p.revision_request) for p in c.principles
    ]
    assert [s.revision for s in swarm.few_shots] == [s.revision for s in c.few_shots]


def test_a_yaml_file_is_detected_by_its_extension():
    result = import_files(
        [("harmless.yaml", (ROOT / "constitutions" / "harmless.yaml").read_bytes())]
    )
    assert result.format == "yaml" and result.constitution.name == "harmless"


@pytest.mark.parametrize(
    ("obj", "fmt", "message"),
    [
        ({"constitutions": "nope"}, "llm-swarm", 'with "constitutions": \\[{"critic"'),
        ({"constitutions": [{"critic": "x"}]}, "llm-swarm", r"constitutions\[0\]: expected"),
        ({"harmful0": {"prompt": ["x"]}}, "anthropic", "not one of the Anthropic files"),
        (
            {"harmful0": {"prompt": ["Critique me"], "edit_request": "x"}},
            "anthropic",
            "expected text starting with 'CritiqueRequest:'",
        ),
        (["Which is better?\n\nOptions:"], "anthropic", "needs the critique instructions file"),
        (
            {
                "constitutions": [{"critic": "a", "revision": "b"}],
                "system_chat": [[{"role": "user", "content": "hi"}]],
            },
            "llm-swarm",
            r"system_chat\[0\]: 1 message; expected question, answer, then one or more rounds",
        ),
    ],
)
def test_json_of_the_wrong_shape_for_the_format_is_named(obj, fmt, message):
    with pytest.raises(PeerFormatError, match=message) as err:
        import_files([as_upload(obj, "bad.json")], fmt)
    assert "bad.json" in str(err.value)


def test_invalid_json_names_the_file_and_line():
    with pytest.raises(ConstitutionError, match=r"broken.json:2: invalid JSON"):
        import_files([("broken.json", b'{\n  "harmful0": }\n')], "anthropic")


def test_an_unknown_format_lists_the_valid_ones():
    with pytest.raises(PeerFormatError, match="use one of auto, yaml, anthropic, llm-swarm"):
        import_files([("x.json", b"{}")], "csv")
