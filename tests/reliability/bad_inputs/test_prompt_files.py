"""Bad prompt files, through `import_prompt_set` and `cai prompts import`.

Every case appends to the user's existing set `kept` (see conftest.py), so "imports nothing"
is checked where it matters: the rows the user already had are byte-for-byte the same after
the refusal. Messages must name the file and the line (JSONL and CSV count lines from 1,
header included) and say what is wrong with it.
"""

from __future__ import annotations

import json

import pytest

from cai_engine.errors import CaiError
from cai_engine.prompts import MAX_PROMPT_CHARS, import_prompt_set
from tests.reliability.bad_inputs.support import cli, prompt_rows


def jsonl(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


OK1 = {"prompt": "Name three rivers."}
OK2 = {"prompt": "What rhymes with orange?", "category": "poetry"}
MEGABYTE_PROMPT = "z" * 1_000_000

XFAIL = pytest.mark.xfail

# (file name, bytes, what the message must contain; "{p}" is the file's path)
CASES = [
    # -- malformed JSONL lines ------------------------------------------------------------
    pytest.param(
        "a.jsonl",
        jsonl(OK1, OK2, '{"prompt": "unterminated}', OK1),
        ["{p}: line 3: malformed JSON at column"],
        id="jsonl-unterminated-string",
    ),
    pytest.param(
        "a.jsonl",
        jsonl(OK1, '{"prompt": "trailing comma",}'),
        ["{p}: line 2: malformed JSON at column 29: Expecting property name"],
        id="jsonl-trailing-comma",
    ),
    pytest.param(
        "a.jsonl",
        jsonl(OK1, OK2, "", "", '{"prompt": oops}'),
        ["{p}: line 5: malformed JSON"],  # blank lines still count
        id="jsonl-line-number-counts-blank-lines",
    ),
    pytest.param(
        "a.jsonl",
        jsonl('["just", "a", "list"]'),
        ["{p}: line 1: expected an object with a 'prompt' field, got list"],
        id="jsonl-line-is-a-list",
    ),
    pytest.param(
        "a.jsonl",
        jsonl(OK1, "{bad", OK2, "nope"),
        [
            "{p}: 2 bad rows; nothing was imported",
            "{p}: line 2: malformed",
            "{p}: line 4: malformed",
        ],
        id="jsonl-every-bad-line-listed",
    ),
    # -- missing columns, wrong types, empty prompts --------------------------------------
    pytest.param(
        "a.jsonl",
        jsonl(OK1, {"question": "Where is Lima?", "topic": "geo"}),
        [
            "{p}: line 2: missing column 'prompt' (columns present: question, topic)",
            "--column prompt=NAME",
        ],
        id="jsonl-missing-prompt-column",
    ),  # fmt: skip
    pytest.param(
        "a.jsonl",
        jsonl({"prompt": 42}),
        ["{p}: line 1: the prompt must be text or a list of messages, got int"],
        id="jsonl-prompt-is-a-number",
    ),
    pytest.param(
        "a.jsonl",
        jsonl({"prompt": None}),
        ["{p}: line 1: the prompt is missing (null)"],
        id="jsonl-prompt-is-null",
    ),
    pytest.param(
        "a.jsonl",
        jsonl(OK1, {"prompt": "   \n\t "}),
        ["{p}: line 2: the prompt is empty"],
        id="jsonl-prompt-is-blank",
    ),
    pytest.param(
        "a.jsonl",
        jsonl({"prompt": []}),
        ["{p}: line 1: the conversation is empty"],
        id="jsonl-empty-conversation",
    ),
    pytest.param(
        "a.jsonl",
        jsonl(
            {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
        ),
        ["{p}: line 1: a conversation prompt must end with a user turn"],
        id="jsonl-conversation-ends-with-assistant",
    ),  # fmt: skip
    pytest.param(
        "a.jsonl",
        jsonl({"prompt": [{"role": "robot", "content": "beep"}]}),
        ["{p}: line 1: turn 1 has role 'robot'; use one of system, user, assistant"],
        id="jsonl-unknown-role",
    ),
    pytest.param(
        "a.jsonl",
        jsonl({"prompt": [{"role": "user", "content": ["not", "text"]}]}),
        ["{p}: line 1: turn 1 content must be text, got list"],
        id="jsonl-turn-content-is-a-list",
    ),
    pytest.param(
        "a.jsonl",
        jsonl(OK1, {"prompt": "Fine.", "category": {"nested": True}}),
        ["{p}: line 2: column 'category' (category) must be text, got dict"],
        id="jsonl-category-is-an-object",
    ),
    pytest.param(
        "a.jsonl",
        jsonl({"prompt": "Fine.", "split": "holdout"}),
        ["{p}: line 1: split 'holdout' is not 'train' or 'test'"],
        id="jsonl-unknown-split",
    ),
    pytest.param(
        "a.jsonl",
        jsonl({"prompt": "One", "id": "same"}, {"prompt": "Two", "id": "same"}),
        ["{p}: line 2: id 'same' is already used by line 1 for a different prompt"],
        id="jsonl-id-reused-for-another-prompt",
    ),
    pytest.param(
        "a.jsonl",
        jsonl(OK1, {"prompt": MEGABYTE_PROMPT}),
        [f"{{p}}: line 2: the prompt is 1,000,000 characters; the limit is {MAX_PROMPT_CHARS:,}"],
        id="jsonl-1mb-prompt-refused-with-the-limit",
    ),
    pytest.param(
        "a.jsonl",
        jsonl(OK1, '{"prompt": "broken \\ud800 half of a pair"}'),
        ["{p}: line 2:", "surrogate"],
        id="jsonl-lone-surrogate-escape",
    ),
    pytest.param(
        "a.jsonl",
        jsonl(OK1, '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ["{p}: line 2:", "nested too deeply"],
        id="jsonl-deeply-nested-line",
    ),
    # -- CSV ----------------------------------------------------------------------------
    pytest.param(
        "a.csv",
        b'prompt,category\n"Fine",a\n"never closed,b\nmore text\n',
        ["{p}: line 3: CSV error: unexpected end of data"],
        id="csv-unterminated-quote",
    ),
    pytest.param(
        "a.csv",
        b'prompt,category\nFine,a\n"quoted"tail,b\n',
        ["{p}: line 3: CSV error: ',' expected after '\"'"],
        id="csv-text-after-closing-quote",
    ),
    pytest.param(
        "a.csv",
        b"question,topic\nWhere is Lima?,geo\n",
        ["{p}: line 2: missing column 'prompt' (columns present: question, topic)"],
        id="csv-missing-prompt-column",
    ),
    pytest.param(
        "a.csv",
        b"prompt,category\nFine,a\nToo,many,fields\n",
        ["{p}: line 3: more fields than the header has columns"],
        id="csv-extra-fields",
    ),
    pytest.param(
        "a.csv",
        b"prompt,category\nFine,a\n,b\n",
        ["{p}: line 3: the prompt is empty"],
        id="csv-empty-prompt-cell",
    ),
    pytest.param(
        "a.csv",
        b'prompt,category\n"first line\nsecond line",a\n"",b\n',
        ["{p}: line 4: the prompt is empty"],  # the quoted newline moves the next row down
        id="csv-line-numbers-after-a-quoted-newline",
    ),
    pytest.param("a.csv", b"prompt,category\n", ["{p}: no rows found"], id="csv-header-only"),
    # -- whole files ----------------------------------------------------------------------
    pytest.param(
        "a.csv",
        "prompt\nWhat is a café?\n".encode("latin-1"),
        ["{p}:2: not valid UTF-8 (byte 0xe9 at offset", "save the file as UTF-8"],
        id="latin-1-file",
    ),
    pytest.param("a.jsonl", b"", ["{p}: the file is empty"], id="empty-file"),
    pytest.param(
        "a.jsonl",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
        ["{p}: this looks like a binary file"],
        id="gzip-file",
    ),
    pytest.param(
        "a.txt",
        jsonl(OK1),
        ["{p}: cannot tell the format from the name; pass one of jsonl, csv, parquet, hf"],
        id="unknown-extension",
    ),
    pytest.param(
        "a.parquet",
        jsonl(OK1),
        ["{p}: not a readable Parquet file"],
        id="jsonl-named-parquet",
    ),
]


@pytest.mark.parametrize(("name", "data", "says"), CASES)
def test_a_bad_file_appended_to_a_set_changes_nothing(tmp_path, user_store, name, data, says):
    before = prompt_rows(user_store)
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CaiError) as caught:
        import_prompt_set(user_store, path, "kept", append=True)
    message = str(caught.value)
    for part in says:
        assert part.format(p=path) in message, message[:2000]
    assert prompt_rows(user_store) == before


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        p
        for p in CASES
        if p.id
        in {
            "jsonl-every-bad-line-listed",
            "csv-unterminated-quote",
            "jsonl-1mb-prompt-refused-with-the-limit",
            "latin-1-file",
            "jsonl-lone-surrogate-escape",
        }
    ],
)
def test_cli_import_refuses_in_one_message_and_keeps_the_set(
    capsys, tmp_path, user_store, name, data, says
):
    before = prompt_rows(user_store)
    path = tmp_path / name
    path.write_bytes(data)
    code, out, err = cli(capsys, "prompts", "import", str(path), "--name", "kept", "--append")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "run with --debug" not in err, err[:500]
    for part in says:
        assert part.format(p=path) in err, err[:2000]
    assert prompt_rows(user_store) == before


def test_skip_bad_imports_only_the_good_rows_and_names_the_skipped_lines(
    capsys, tmp_path, user_store
):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(jsonl(OK1, {"prompt": 7}, OK2))
    code, out, err = cli(capsys, "prompts", "import", str(path), "--name", "fresh", "--skip-bad")
    assert code == 0
    assert f"skipped {path}: line 2: the prompt must be text or a list of messages, got int" in err
    assert sorted(p.text for p in user_store.get_prompts("fresh")) == sorted(
        [OK1["prompt"], OK2["prompt"]]
    )


def test_a_prompt_at_the_limit_is_stored_verbatim(tmp_path, user_store):
    # Multi-byte and combining characters, CRLF and trailing space: stored as given.
    unit = "Ça va? 👩🏽‍💻 שָׁלוֹם\r\n  "
    text = (unit * (MAX_PROMPT_CHARS // len(unit) + 1))[:MAX_PROMPT_CHARS]
    assert len(text) == MAX_PROMPT_CHARS
    path = tmp_path / "long.jsonl"
    path.write_bytes(jsonl({"prompt": text}))
    import_prompt_set(user_store, path, "long")
    (stored,) = user_store.get_prompts("long")
    assert stored.text.encode("utf-8") == text.encode("utf-8")
