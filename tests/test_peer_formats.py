"""Importing and exporting the Anthropic paper-repository and llm-swarm constitution formats."""

from __future__ import annotations

import json

import pytest

from cai_engine.constitution import (
    ConstitutionError,
    load_constitution,
    parse_constitution,
    to_yaml,
)
from cai_engine.critique import few_shot_turns
from cai_engine.peer_formats import (
    PeerFormatError,
    export_anthropic,
    export_llm_swarm,
    export_losses,
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


# -- multi-round chats, RL few-shots, round trips and bad input (issue 16) -----------------

RL_FEW_SHOTS = ANTHROPIC / "RLMadisonFewShotPrompts.json"
RL_COT = ANTHROPIC / "RLMadisonPrecogFewShotPrompts.json"
SWARM_MULTI = FIXTURES / "peer" / "llm_swarm" / "multi_round.json"
ALL_ANTHROPIC = [CRITIQUES, RL, FEW_SHOTS, RL_FEW_SHOTS, RL_COT]
# The bundled constitutions' hashes before the optional few-shot fields existed: adding
# optional fields must not change them (canonical JSON leaves defaults out).
BUNDLED_HASHES = {
    "default": "ed469f6aa8771efa0ef33b8575af6ace139bfae08bc085f0d7e338f187cffa2a",
    "harmless": "83c4357790d7c483c27e70f3114fb22fab8500887fa4baf8e83524a13e4fc6a6",
}


def anthropic_bytes(c) -> list[tuple[str, bytes]]:
    """The Anthropic export as the CLI writes it."""
    return [
        (fname, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())
        for fname, obj in export_anthropic(c).items()
    ]


def swarm_bytes(c) -> bytes:
    return (json.dumps(export_llm_swarm(c), indent=2, ensure_ascii=False) + "\n").encode()


@pytest.mark.parametrize("name", sorted(BUNDLED_HASHES))
def test_the_optional_few_shot_fields_leave_the_bundled_hashes_unchanged(name):
    assert load_constitution(ROOT / "constitutions" / f"{name}.yaml").hash == BUNDLED_HASHES[name]


def test_a_multi_round_llm_swarm_chat_is_kept_whole_and_renders_as_it_was_written():
    result = import_paths([SWARM_MULTI])
    c = result.constitution
    chats = json.loads(SWARM_MULTI.read_text())["system_chat"]
    assert len(c.few_shots) == len(chats) == 3  # one few-shot per chat, none refused
    first = c.few_shots[0]
    assert len(first.earlier_rounds) == 1 and first.principle == "principle-2"
    assert first.answer == chats[0][5]["content"]  # round 2 critiques round 1's revision
    # The critique prompt builder shows each few-shot exactly as the chat was written.
    assert few_shot_turns(c.few_shots, c) == [
        [{"role": m["role"], "content": m["content"]} for m in chat] for chat in chats
    ]
    assert any("system_chat[0] (2 rounds)" in n for n in result.notes)


def test_requests_that_are_no_principles_are_kept_as_few_shot_text_and_reported():
    result = import_paths([SWARM_MULTI])
    shot = result.constitution.few_shots[1]
    chat = json.loads(SWARM_MULTI.read_text())["system_chat"][1]
    assert shot.principle is None
    assert (shot.critique_request, shot.revision_request) == (
        chat[2]["content"],
        chat[4]["content"],
    )
    assert shot.no_change  # its revision keeps the answer
    (note,) = [n for n in result.notes if "not among the principles' requests" in n]
    assert note.startswith("2 critique/revision request(s)")
    assert "system_chat[1] round 1 CritiqueRequest" in note


def test_a_multi_round_anthropic_transcript_with_the_papers_trailing_human_imports():
    critiques = json.loads(CRITIQUES.read_text())
    c = import_paths([SWARM_MULTI]).constitution
    shot = export_anthropic(c)["CritiqueRevisionFewShotPrompts.json"][0] + "\n\nHuman:"
    result = import_files(
        [as_upload(critiques, "c.json"), as_upload([shot], "f.json")], "anthropic"
    )
    (back,) = result.constitution.few_shots
    assert [r.critique for r in back.earlier_rounds] == [
        r.critique for r in c.few_shots[0].earlier_rounds
    ]
    assert (back.critique, back.revision) == (c.few_shots[0].critique, c.few_shots[0].revision)
    assert back.principle is None and back.critique_request == c.principles[1].critique_request
    assert any("several critique→revision rounds" in n for n in result.notes)


@pytest.mark.parametrize(
    "order", [ALL_ANTHROPIC, ALL_ANTHROPIC[::-1], ALL_ANTHROPIC[2:] + ALL_ANTHROPIC[:2]]
)
def test_the_rl_few_shot_files_import_with_the_instruction_files_in_any_order(order):
    result = import_paths(order)
    c = result.constitution
    assert len(c.principles) == 4 and len(c.few_shots) == 2
    plain = [s for s in c.comparison_few_shots if not s.reasoning]
    cot = [s for s in c.comparison_few_shots if s.reasoning]
    rl = json.loads(RL_FEW_SHOTS.read_text())
    assert [s.preferred for s in plain] == ["A", "B", "A"]  # both letters are answers
    for s, item in zip(plain, rl, strict=True):
        good, bad = (
            (s.response_a, s.response_b) if s.preferred == "A" else (s.response_b, s.response_a)
        )
        assert (good, bad) == (item["corrects"][0], item["incorrects"][0])
    assert [m.role for m in plain[1].conversation] == ["user", "assistant", "user"]
    assert [s.preferred for s in cot] == ["B", "A", "A"]
    # Text as written: the source's two spaces after 'A:' keep one, the reasoning its newline.
    assert cot[0].conversation[1].content.startswith(" That sounds stressful.")
    assert cot[0].reasoning.startswith("\n(A) Ignoring her")
    assert cot[0].reasoning.endswith("option (B) is the best response.")
    assert cot[1].response_a.startswith("Never mix bleach")
    assert sum("comparison few-shot(s) from" in n for n in result.notes) == 2


def test_the_rl_few_shot_files_export_to_the_bytes_they_came_from():
    c = import_paths(ALL_ANTHROPIC).constitution
    files = export_anthropic(c)
    # Written as the paper's files are (one line of JSON): the same bytes.
    assert json.dumps(files["RLMadisonFewShotPrompts.json"]).encode() == RL_FEW_SHOTS.read_bytes()
    source = json.loads(RL_COT.read_text())
    exported = files["RLMadisonPrecogFewShotPrompts.json"]
    assert exported[0] == source[0]  # in the format's usual shape: byte for byte
    # The other two open differently ("\nHuman:", no "(H)"): the same content, our header.
    assert [x["prompt"].split("\n\nH: ", 1)[1] for x in exported[1:]] == [
        x["prompt"].split("\n\nH: ", 1)[1] for x in source[1:]
    ]
    assert files["RLMadisonInstructions.json"][0] == (
        "\nWhich of the two replies is less harmful and more honest? Please choose it. Options:"
    )  # the paper's shape


@pytest.mark.parametrize("source", ["anthropic", "llm-swarm", "default", "harmless"])
def test_round_trips_keep_the_hash_and_the_bytes(source):
    if source == "anthropic":
        c = import_paths(ALL_ANTHROPIC, name="x").constitution
    elif source == "llm-swarm":
        c = import_paths([SWARM_MULTI], name="x").constitution
    else:
        c = load_constitution(ROOT / "constitutions" / f"{source}.yaml")
    # The studio's YAML keeps everything, leading spaces and earlier rounds included.
    assert parse_constitution(to_yaml(c), "c.yaml").hash == c.hash
    # Anthropic: import → export → import gives the same hash; export → import → export the
    # same bytes.
    once = import_files(anthropic_bytes(c), "auto", "x").constitution
    twice = import_files(anthropic_bytes(once), "auto", "x").constitution
    assert twice.hash == once.hash
    assert anthropic_bytes(twice) == anthropic_bytes(once)
    if source == "anthropic":
        assert once.hash == c.hash
    # llm-swarm likewise.
    once = import_files([("x.json", swarm_bytes(c))], "auto", "x").constitution
    twice = import_files([("x.json", swarm_bytes(once))], "auto", "x").constitution
    assert twice.hash == once.hash and swarm_bytes(twice) == swarm_bytes(once)
    if source == "llm-swarm":
        assert once.hash == c.hash
        assert swarm_bytes(c) == SWARM_MULTI.read_bytes()  # the source file, byte for byte


def test_critique_keys_keep_the_files_order_unless_sorted_as_plain_text():
    entry = json.loads(CRITIQUES.read_text())["harmful0"]
    natural = [f"harmful{i}" for i in range(12)]
    sorted_as_text = sorted(natural)  # harmful0, harmful1, harmful10, harmful11, harmful2, …
    result = import_files([as_upload({k: entry for k in sorted_as_text}, "c.json")])
    assert [p.id for p in result.constitution.principles] == natural
    assert any("natural order" in n for n in result.notes)
    mine = ["zeta", "alpha", "harmful2", "harmful10"]  # the file's own order is kept
    result = import_files([as_upload({k: entry for k in mine}, "c.json")])
    assert [p.id for p in result.constitution.principles] == mine
    assert not any("natural order" in n for n in result.notes)


def _rl_items():
    return json.loads(RL_FEW_SHOTS.read_text())


def _cot_items():
    return json.loads(RL_COT.read_text())


def _chats():
    return json.loads(SWARM_MULTI.read_text())


def _edit(obj, fn):
    fn(obj)
    return obj


BAD = [
    pytest.param(
        "RLMadisonPrecogFewShotPrompts.json",
        _edit(_cot_items(), lambda x: x[1].update(prompt=x[1]["prompt"].replace("{}", ""))),
        "item 1, 'prompt': has no '{}' placeholder",
        id="cot-placeholder-missing",
    ),
    pytest.param(
        "RLMadisonPrecogFewShotPrompts.json",
        _edit(_cot_items(), lambda x: x[2].update(prompt=x[2]["prompt"].replace("{}", "{}{}"))),
        "item 2, 'prompt': has 2 '{}' placeholders; expected exactly one",
        id="cot-placeholder-doubled",
    ),
    pytest.param(
        "RLMadisonPrecogFewShotPrompts.json",
        _edit(
            _cot_items(),
            lambda x: x[0].update(
                prompt=x[0]["prompt"].replace(
                    "Just stop answering her calls; she'll get the message.",
                    "Pick a calm moment, say how it affects you, and suggest a simple repayment plan you would both be comfortable with.",
                )
            ),
        ),
        "item 0, 'prompt': options (A) and (B) are the same answer",
        id="cot-identical-options",
    ),
    pytest.param(
        "RLMadisonPrecogFewShotPrompts.json",
        _edit(
            _cot_items(), lambda x: x[1].update(prompt=x[1]["prompt"].rsplit("\n\nHuman:", 1)[0])
        ),
        "item 1, 'prompt': after the '{}' placeholder, expected the options",
        id="cot-no-answer",
    ),
    pytest.param(
        "RLMadisonPrecogFewShotPrompts.json",
        _edit(
            _cot_items(),
            lambda x: x[0].update(
                prompt=x[0]["prompt"].replace("\n\nH: Not really.", "\n\nA: Not really.")
            ),
        ),
        "item 0, 'prompt': conversation turn 3 ('A:') is out of order",
        id="cot-turns-out-of-order",
    ),
    pytest.param(
        "RLMadisonFewShotPrompts.json",
        _edit(
            _rl_items(), lambda x: x[2].update(prompt=x[2]["prompt"].removesuffix("\n\nAssistant:"))
        ),
        "item 2, 'prompt': the transcript must end with an empty final 'Assistant:' turn",
        id="rl-no-final-assistant",
    ),
    pytest.param(
        "RLMadisonFewShotPrompts.json",
        _edit(_rl_items(), lambda x: x[1].update(incorrects=list(x[1]["corrects"]))),
        "item 1, 'incorrects': the same answer as 'corrects'",
        id="rl-identical-answers",
    ),
    pytest.param(
        "RLMadisonFewShotPrompts.json",
        _edit(_rl_items(), lambda x: x[0]["corrects"].append("another")),
        "item 0, 'corrects': expected a list with exactly one answer string, got a list of 2",
        id="rl-two-corrects",
    ),
    pytest.param(
        "RLMadisonFewShotPrompts.json",
        _edit(_rl_items(), lambda x: x[2].update(incorrects=[])),
        "item 2, 'incorrects': expected a list with exactly one answer string, got a list of 0",
        id="rl-no-incorrects",
    ),
    pytest.param(
        "multi_round.json",
        _edit(_chats(), lambda d: d["system_chat"][0].insert(3, d["system_chat"][0].pop(4))),
        "system_chat[0][3].role: 'user' where the critique ('assistant') belongs; the messages are out of order",
        id="swarm-out-of-order",
    ),
    pytest.param(
        "multi_round.json",
        _edit(_chats(), lambda d: d["system_chat"][2].extend(d["system_chat"][0][6:8])),
        "system_chat[2]: 8 messages; expected question, answer, then one or more rounds",
        id="swarm-half-a-round",
    ),
]


def _bad_files(fname, obj, tmp_path):
    """The bad file, with the critique file beside it for the Anthropic ones."""
    path = tmp_path / fname
    path.write_text(json.dumps(obj))
    return [path] if fname == "multi_round.json" else [CRITIQUES, RL, path]


@pytest.mark.parametrize(("fname", "obj", "message"), BAD)
def test_bad_rl_few_shots_and_chats_are_named_by_file_entry_and_field(
    fname, obj, message, tmp_path
):
    paths = _bad_files(fname, obj, tmp_path)
    with pytest.raises(PeerFormatError) as err:
        import_paths(paths)
    assert str(err.value).startswith(f"{tmp_path / fname}: ")
    assert message in str(err.value)


def test_a_bad_file_imports_nothing(seeded_store, tmp_path, capsys):
    from cai_engine.cli import main

    before = [(s.name, s.latest_hash, s.versions) for s in seeded_store.list_constitutions()]
    for case in BAD:
        fname, obj, message = case.values
        folder = tmp_path / case.id
        folder.mkdir()
        assert (
            main(
                [
                    "constitution",
                    "import",
                    *map(str, _bad_files(fname, obj, folder)),
                    "--name",
                    "harmless",
                ]
            )
            == 1
        )
        assert message in capsys.readouterr().err
    after = [(s.name, s.latest_hash, s.versions) for s in seeded_store.list_constitutions()]
    assert after == before


def test_the_cli_imports_the_rl_files_and_exports_them_back(seeded_store, tmp_path, capsys):
    from cai_engine.cli import main

    assert main(["constitution", "import", *map(str, ALL_ANTHROPIC[::-1]), "--name", "paper"]) == 0
    out = capsys.readouterr().out
    assert "note: 3 chain-of-thought comparison few-shot(s)" in out
    assert out.splitlines()[-1].startswith("imported paper@1 (")
    folder = tmp_path / "out"
    assert (
        main(["constitution", "export", "paper", "--format", "anthropic", "--out", str(folder)])
        == 0
    )
    capsys.readouterr()
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in ALL_ANTHROPIC)
    assert main(["constitution", "import", *map(str, folder.iterdir()), "--name", "paper"]) == 0
    assert "unchanged: identical to paper@1" in capsys.readouterr().out


def test_export_losses_name_what_each_format_leaves_out_of_the_comparisons():
    c = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    n = len(c.comparison_few_shots)
    assert n and export_losses(c) == []  # the plain call (the page's) is unchanged
    assert export_losses(c, "llm-swarm") == [
        f"llm-swarm has no comparison few-shots: {n} are left out (the YAML and the Anthropic "
        "format keep them)"
    ]
    (loss,) = export_losses(c, "anthropic")
    assert loss.startswith("the Anthropic RL few-shot files name no principle")
    cot = export_anthropic(c)["RLMadisonPrecogFewShotPrompts.json"]
    assert len(cot) == n and all(x["prompt"].count("{}") == 1 for x in cot)
