"""Bad constitution files, through `load_constitution` and `cai constitution import/validate`.

Each case is a file a user might really hand us. Every one must be refused with a message that
names the file, the line (where there is one) and the field, and must leave the versions the
user already has exactly as they were. The store holds `mine@1`, `mine@2` and `other@1` before
each case (see conftest.py), and most bad files also call themselves `mine`, so a half-done
import would show up as a `mine@3`.
"""

from __future__ import annotations

import json

import pytest

from cai_engine.constitution import ConstitutionError, load_constitution
from cai_engine.errors import CaiError
from cai_engine.peer_formats import import_paths
from tests.reliability.bad_inputs.support import (
    GOOD_YAML,
    cli,
    constitution_rows,
    good_constitution,
)


def edit(old: str, new: str) -> str:
    assert old in GOOD_YAML, old
    return GOOD_YAML.replace(old, new, 1)


def text(s: str) -> bytes:
    return s.encode("utf-8")


def alias_bomb(levels: int = 9) -> str:
    """The 'billion laughs' shape: each anchor lists the previous one nine times."""
    lines = ['l0: &l0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n{GOOD_YAML}extra: *l{levels}\n"


XFAIL = pytest.mark.xfail

# (case id, file bytes, what the message must contain; "{p}" is the file's path)
CASES = [
    # -- syntax ---------------------------------------------------------------------------
    pytest.param(
        text(edit("title: Candour\n", 'title: "Candour\n')),
        ["{p}:14: YAML syntax error", "quoted scalar", "(the construct starts on line 5)"],
        id="syntax-unclosed-quote",
    ),
    pytest.param(
        text(edit("    title: Care", "\ttitle: Care")),
        ["{p}:10: YAML syntax error", "tab"],
        id="syntax-tab-indent",
    ),
    pytest.param(
        text(GOOD_YAML + "---\nname: other\n"),
        ["{p}:14: YAML syntax error", "single document"],
        id="syntax-two-documents",
    ),
    # -- wrong types ----------------------------------------------------------------------
    pytest.param(
        text(
            edit(
                "    preference_question: Which answer is more candid?\n",
                "    preference_question: Which answer is more candid?\n    weight: heavy\n",
            )
        ),
        ["{p}:9: principles[0].weight: Input should be a valid number"],
        id="type-weight-text",
    ),  # fmt: skip
    pytest.param(
        text(
            edit(
                "    preference_question: Which answer shows more care?\n",
                "    preference_question: Which answer shows more care?\n    enabled: maybe\n",
            )
        ),
        ["{p}:14: principles[1].enabled: Input should be a valid boolean"],
        id="type-enabled-text",
    ),  # fmt: skip
    pytest.param(
        text("name: mine\nprinciples: all of them\n"),
        ["{p}:2: principles: Input should be a valid list (got str)"],
        id="type-principles-scalar",
    ),
    pytest.param(
        text(edit("title: Candour", "title: 2024-05-01")),
        ["{p}:5: principles[0].title: Input should be a valid string (got date)"],
        id="type-title-is-a-date",
    ),
    pytest.param(
        text(edit("  - id: care", "  - id: 42")),
        ["{p}:9: principles[1].id: Input should be a valid string (got int)"],
        id="type-id-number",
    ),
    pytest.param(
        text("- name: mine\n- principles: []\n"),
        ["{p}: expected a mapping with keys name, description, principles", "got list"],
        id="type-top-level-list",
    ),
    # -- unknown keys, missing fields, duplicates -----------------------------------------
    pytest.param(
        text(edit("    title: Candour", "    titel: Candour")),
        [
            "{p}:5: principles[0].titel: unknown key 'titel'; allowed keys here: id, title,",
            "{p}:4: principles[0].title: missing required key 'title'",
        ],
        id="unknown-key-misspelt",
    ),
    pytest.param(
        text(GOOD_YAML + "author: me\n"),
        ["{p}:14: author: unknown key 'author'; allowed keys here: name, description, principles"],
        id="unknown-key-top-level",
    ),
    pytest.param(
        text(
            edit(
                "    critique_request: Point out anything in the answer that could hurt someone.\n",
                "",
            )
        ),
        ["{p}:9: principles[1].critique_request: missing required key 'critique_request'"],
        id="missing-field",
    ),  # fmt: skip
    pytest.param(
        text(GOOD_YAML.replace("name: mine\n", "", 1)),
        ["{p}:1: name: missing required key 'name'"],
        id="missing-name",
    ),
    pytest.param(
        text(
            edit(
                "revision_request: Rewrite the answer so that it hurts no one.",
                'revision_request: "   "',
            )
        ),
        ["{p}:9: principles[1]:", "'revision_request' must not be blank"],
        id="blank-field",
    ),  # fmt: skip
    pytest.param(
        text(edit("  - id: care", "  - id: candour")),
        ["{p}:9: principles[1].id: duplicate principle id 'candour' (also used by principles[0])"],
        id="duplicate-principle-id",
    ),
    pytest.param(
        text(edit("    title: Care\n", "    title: Care\n    title: Kindness\n")),
        ["{p}:11:", "title", "duplicate"],
        id="duplicate-mapping-key",
    ),
    # -- size, nesting, aliases -----------------------------------------------------------
    pytest.param(
        text(edit("Point out anything in the answer that is misleading.", "x" * 20_001)),
        [
            "{p}:6: principles[0].critique_request: too long (20001 characters)",
            "at most 20000 characters",
        ],
        id="huge-field",
    ),
    pytest.param(
        text(GOOD_YAML + "description2: " + "y" * (10 * 1024 * 1024) + "\n"),
        ["{p}: the file is 10.5 MB; the limit is 10 MB"],
        id="huge-file",
    ),
    pytest.param(
        text(alias_bomb()),
        ["{p}: the document expands to over 200,000 nodes through YAML aliases"],
        id="yaml-alias-bomb",
    ),
    pytest.param(
        text("name: mine\nprinciples: " + "[" * 3000 + "]" * 3000 + "\n"),
        ["{p}:2: YAML syntax error", "nesting depth"],
        id="deeply-nested-flow",
    ),
    pytest.param(
        text("name: mine\n" + "".join(" " * i + f"k{i}:\n" for i in range(1500))),
        ["{p}:1001: YAML syntax error", "nesting depth"],
        id="deeply-nested-block",
    ),
    # -- characters and encodings ---------------------------------------------------------
    pytest.param(
        text(edit("title: Candour", "title: Can\x01dour")),
        ["{p}:5:", "#x0001", "control characters are not allowed"],
        id="control-character",
    ),
    pytest.param(
        GOOD_YAML.replace("small", "café").encode("latin-1"),
        ["{p}:2: not valid UTF-8 (byte 0xe9 at offset", "save the file as UTF-8"],
        id="latin-1-bytes",
    ),
    pytest.param(
        GOOD_YAML.encode("utf-16"),
        ["{p}: this looks like a binary file, expected UTF-8 text"],
        id="utf-16-file",
    ),
    pytest.param(b"", ["{p}: the file is empty"], id="empty-file"),
    pytest.param(b"\n  \n\t\n", ["{p}: the file is empty"], id="whitespace-only-file"),
    pytest.param(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01",
        ["{p}: this looks like a binary file, expected UTF-8 text"],
        id="binary-file",
    ),
    # -- values that validate but cannot be used ------------------------------------------
    pytest.param(
        text(
            edit(
                "    preference_question: Which answer is more candid?\n",
                "    preference_question: Which answer is more candid?\n    weight: .inf\n",
            )
        ),
        ["{p}:9: principles[0].weight:"],
        id="infinite-weight",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("data", "says"), CASES)
def test_load_constitution_names_the_file_line_and_field(tmp_path, data, says):
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    with pytest.raises(CaiError) as caught:
        load_constitution(path)
    message = str(caught.value)
    for part in says:
        assert part.format(p=path) in message, message[:2000]


@pytest.mark.parametrize(("data", "says"), CASES)
def test_cli_import_refuses_in_one_message_and_keeps_every_version(
    capsys, tmp_path, user_store, data, says
):
    before = constitution_rows(user_store)
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)

    code, out, err = cli(capsys, "constitution", "import", str(path), "--note", "bad")

    assert code == 1
    assert err.startswith("error: ") and "Traceback" not in err
    assert "run with --debug" not in err, "an unexpected exception, not a clear message"
    for part in says:
        assert part.format(p=path) in err, err[:2000]
    assert constitution_rows(user_store) == before


def test_python_tags_are_refused_and_never_run(tmp_path, store):
    marker = tmp_path / "pwned"
    path = tmp_path / "tag.yaml"
    path.write_text(
        GOOD_YAML + f"extra: !!python/object/apply:os.system ['touch {marker}']\n",
        encoding="utf-8",
    )
    with pytest.raises(ConstitutionError) as caught:
        load_constitution(path)
    assert f"{path}:14: YAML syntax error" in str(caught.value)
    assert "python/object/apply:os.system" in str(caught.value)
    assert not marker.exists()


def test_a_byte_order_mark_is_dropped_and_the_content_is_unchanged(tmp_path):
    plain, bommed = tmp_path / "plain.yaml", tmp_path / "bom.yaml"
    plain.write_bytes(GOOD_YAML.encode("utf-8"))
    bommed.write_bytes(b"\xef\xbb\xbf" + GOOD_YAML.encode("utf-8"))
    with_bom = load_constitution(bommed)
    assert with_bom.name == "mine"  # not "\ufeffname"
    assert with_bom.hash == load_constitution(plain).hash


# -- JSON files and the import path ------------------------------------------------------


def _json_constitution() -> dict:
    return good_constitution().model_dump(mode="json", exclude_defaults=True)


JSON_CASES = [
    pytest.param(
        json.dumps(_json_constitution(), indent=2).replace('"care"', '"care",', 1).encode(),
        ["{p}:", "invalid JSON"],
        id="json-syntax-error",
    ),
    pytest.param(
        json.dumps({**_json_constitution(), "principals": []}, indent=2).encode(),
        ["{p}:", "principals: unknown key 'principals'"],
        id="json-unknown-key",
    ),
    pytest.param(
        b'{"name": "mine", "principles": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        ["{p}", "nested too deeply"],
        id="json-deeply-nested",
    ),
]


@pytest.mark.parametrize(("data", "says"), JSON_CASES)
def test_cli_import_of_a_bad_json_file_names_it_and_keeps_every_version(
    capsys, tmp_path, user_store, data, says
):
    before = constitution_rows(user_store)
    path = tmp_path / "bad.json"
    path.write_bytes(data)
    code, _, err = cli(capsys, "constitution", "import", str(path))
    assert code == 1
    assert "run with --debug" not in err, err[:500]
    for part in says:
        assert part.format(p=path) in err, err[:2000]
    assert constitution_rows(user_store) == before


def test_cli_validate_reports_each_bad_file_and_stores_nothing(capsys, tmp_path, store):
    path = tmp_path / "bad.yaml"
    path.write_text(edit("  - id: care", "  - id: Care Bear"), encoding="utf-8")
    code, out, err = cli(capsys, "constitution", "validate", str(path))
    assert code == 1 and out == ""
    assert err.startswith(f"error: {path}:9: principles[1].id: must be a slug")
    assert constitution_rows(store) == []


def test_import_with_an_invalid_name_is_refused_and_the_store_stays_readable(
    capsys, tmp_path, user_store
):
    before = constitution_rows(user_store)
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_YAML, encoding="utf-8")

    code, _, err = cli(capsys, "constitution", "import", str(path), "--name", "Not A Slug!")

    assert code == 1
    assert "Not A Slug!" in err and "slug" in err
    assert constitution_rows(user_store) == before
    assert [s.name for s in user_store.list_constitutions()] == ["mine", "other"]


def test_import_paths_with_a_missing_and_a_folder_argument_names_them(tmp_path):
    with pytest.raises(CaiError, match=f"{tmp_path / 'nope.yaml'}: no such file"):
        import_paths([tmp_path / "nope.yaml"])
    with pytest.raises(CaiError, match=f"{tmp_path}: is a folder, expected a file"):
        import_paths([tmp_path])
