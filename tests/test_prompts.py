"""Prompt sets: the bundled sets, the seeded split, imports from files and datasets, bad rows."""

from __future__ import annotations

import json

import pytest

from cai_engine.errors import CaiError, NotFoundError
from cai_engine.files import InputFileError
from cai_engine.prompts import (
    MAX_PROMPT_CHARS,
    BadRow,
    PromptImportError,
    assign_split,
    import_prompt_set,
    parse_prompts,
    prompt_id_for,
)
from cai_engine.store import Store
from tests.conftest import FIXTURES

PROMPTS = FIXTURES / "prompts"
GOOD = PROMPTS / "good.jsonl"  # 4 prompts (and a blank line 3); line 5 is a 4-turn conversation
MALFORMED = PROMPTS / "malformed_middle.jsonl"  # 5 lines; line 3 is not JSON
DUPLICATES = PROMPTS / "duplicates.jsonl"  # 5 rows, 3 distinct prompts
BAD_ROWS = PROMPTS / "bad_rows.jsonl"  # lines 2-4 bad, lines 1 and 5 good
QUESTIONS = PROMPTS / "questions.csv"  # columns question, topic; 3 rows
QUOTING = PROMPTS / "quoting_error.csv"  # a stray quote on line 3


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return str(path)


def texts(prompts) -> list[str]:
    return sorted(p.text for p in prompts)


# -- the bundled sets ---------------------------------------------------------------------


def test_the_bundled_sets_cover_harms_and_benign_look_alikes_in_both_splits(seeded_store):
    red_team = seeded_store.get_prompts("red-team")
    assert len(red_team) >= 150
    assert all(p.category for p in red_team)
    assert len({p.category for p in red_team}) >= 10
    helpful = seeded_store.get_prompts("helpful")
    assert len(helpful) >= 150
    assert any(p.category == "looks-risky" for p in helpful)
    for prompts in (red_team, helpful):
        assert all(p.messages[-1] == {"role": "user", "content": p.text} for p in prompts)
        assert any(len(p.messages) > 1 for p in prompts)  # some are conversations
    for s in seeded_store.list_prompt_sets():
        assert s.train + s.test == s.prompts
        # the default test_fraction is 0.2; ~190 prompts put 0.1-0.3 far outside chance
        assert 0.1 < s.test / s.prompts < 0.3, s.name
        assert len(seeded_store.get_prompts(s.name, split="test")) == s.test
    assert [s.name for s in seeded_store.list_prompt_sets()] == ["helpful", "red-team"]


# -- the split ----------------------------------------------------------------------------

IDS = [f"prompt-{i}" for i in range(10_000)]


def test_assign_split_gives_the_same_answer_every_time():
    first = [assign_split(pid, 1234, 0.2) for pid in IDS[:500]]
    again = [assign_split(pid, 1234, 0.2) for pid in IDS[:500]]
    assert first == again
    assert set(first) == {"train", "test"}


def test_assign_split_depends_on_the_seed():
    a = [assign_split(pid, 1, 0.2) for pid in IDS[:1000]]
    b = [assign_split(pid, 2, 0.2) for pid in IDS[:1000]]
    differing = sum(x != y for x, y in zip(a, b, strict=True))
    # two independent draws differ with probability 2 * 0.2 * 0.8 = 0.32, so ~320 of 1000
    assert 200 < differing < 450


def test_assign_split_puts_about_test_fraction_of_prompts_in_test():
    share = sum(assign_split(pid, 1234, 0.2) == "test" for pid in IDS) / len(IDS)
    # the ids are fixed, so this is deterministic; binomial sd is 0.004, the band is 5 sd wide
    assert 0.18 <= share <= 0.22


def test_a_test_fraction_of_zero_puts_everything_in_train():
    assert {assign_split(pid, 1234, 0.0) for pid in IDS[:1000]} == {"train"}


def test_a_test_fraction_of_one_or_more_is_refused(store):
    with pytest.raises(CaiError, match=r"test_fraction must be in \[0, 1\), got 1.0"):
        import_prompt_set(store, GOOD, "mine", test_fraction=1.0)


def test_a_prompts_split_does_not_change_when_other_prompts_are_added(store, tmp_path):
    import_prompt_set(store, GOOD, "mine")
    before = {p.prompt_id: p.split for p in store.get_prompts("mine")}
    more = write_jsonl(
        tmp_path / "more.jsonl", [{"prompt": f"Extra prompt {i}"} for i in range(200)]
    )
    report = import_prompt_set(store, more, "mine", append=True)
    assert report.imported == 200
    after = {p.prompt_id: p.split for p in store.get_prompts("mine")}
    assert len(after) == 204  # 4 + 200
    assert {pid: after[pid] for pid in before} == before


def test_the_split_seed_given_at_import_decides_the_split(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Prompt number {i}"} for i in range(300)])
    for seed in (1, 99):
        prompts, _ = parse_prompts(src, split_seed=seed, test_fraction=0.3)
        assert [p.split for p in prompts] == [assign_split(p.prompt_id, seed, 0.3) for p in prompts]
    one = [p.split for p in parse_prompts(src, split_seed=1, test_fraction=0.3)[0]]
    other = [p.split for p in parse_prompts(src, split_seed=99, test_fraction=0.3)[0]]
    assert one != other


def test_a_prompts_id_is_the_hash_of_its_conversation_only():
    messages = [{"role": "user", "content": "Hello"}]
    assert prompt_id_for(messages) == prompt_id_for([{"content": "Hello", "role": "user"}])
    assert prompt_id_for(messages) != prompt_id_for([{"role": "user", "content": "hello"}])
    assert len(prompt_id_for(messages)) == 16


# -- importing JSONL ----------------------------------------------------------------------


def test_a_jsonl_file_imports_with_categories_and_skips_blank_lines(store):
    report = import_prompt_set(store, GOOD, "mine", description="my prompts")
    assert (report.rows, report.imported, report.duplicates, report.bad_rows) == (4, 4, 0, [])
    assert report.summary() == "4 imported into 'mine', 4 rows read"
    prompts = store.get_prompts("mine")
    assert {p.text: p.category for p in prompts} == {
        "How do I reverse a list in Python?": "coding",
        "Why does water boil at a lower temperature on a mountain?": "science",
        "Suggest a name for a black cat.": "writing",
        "Make it rainy-day friendly.": "travel",
    }
    (summary,) = store.list_prompt_sets()
    assert (summary.name, summary.description, summary.prompts) == ("mine", "my prompts", 4)
    assert summary.source == str(GOOD)


def test_a_conversation_ending_with_a_user_turn_is_one_prompt_whose_text_is_that_turn(store):
    import_prompt_set(store, GOOD, "mine")
    (p,) = store.get_prompts("mine", category="travel")
    assert p.text == "Make it rainy-day friendly."
    assert [m["role"] for m in p.messages] == ["system", "user", "assistant", "user"]
    assert p.messages[2]["content"] == "Morning: Alfama. Afternoon: Belém."  # kept as written
    assert p.prompt_id == prompt_id_for(p.messages)


def test_a_conversation_ending_with_an_assistant_turn_is_a_bad_row():
    prompts, report = parse_prompts(BAD_ROWS)
    assert BadRow("line 4", "a conversation prompt must end with a user turn") in report.bad_rows


def test_an_uploaded_file_imports_like_a_file_on_disk(store):
    report = import_prompt_set(store, ("upload.jsonl", GOOD.read_bytes()), "mine")
    assert report.imported == 4
    (summary,) = store.list_prompt_sets()
    assert summary.source == "upload.jsonl"


# -- duplicates ---------------------------------------------------------------------------


def test_exact_duplicates_in_a_file_are_removed_and_counted(store):
    report = import_prompt_set(store, DUPLICATES, "jokes")
    # 5 rows: "cats" three times (once with another category), "dogs", and lower-case "tell ..."
    assert (report.rows, report.duplicates, report.imported) == (5, 2, 3)
    assert report.summary() == "3 imported into 'jokes', 5 rows read, 2 exact duplicates removed"
    by_text = {p.text: p.category for p in store.get_prompts("jokes")}
    assert by_text == {
        "Tell me a joke about cats.": "fun",  # the first row wins
        "Tell me a joke about dogs.": "fun",
        "tell me a joke about cats.": "fun",  # case differs, so not a duplicate
    }


def test_importing_the_same_file_twice_adds_nothing(store):
    first = import_prompt_set(store, GOOD, "mine")
    again = import_prompt_set(store, GOOD, "mine", append=True)
    assert (first.imported, first.already_present) == (4, 0)
    assert (again.imported, again.already_present) == (0, 4)
    assert again.summary() == "0 imported into 'mine', 4 rows read, 4 already in the set"
    assert len(store.get_prompts("mine")) == 4


def test_appending_adds_only_the_new_prompts(store):
    import_prompt_set(store, GOOD, "mine")
    report = import_prompt_set(
        store, ("more.jsonl", GOOD.read_bytes() + b'{"prompt": "New"}\n'), "mine", append=True
    )
    assert (report.imported, report.already_present) == (1, 4)
    assert len(store.get_prompts("mine")) == 5


def test_two_different_prompts_sharing_an_id_are_not_dropped_as_exact_duplicates(tmp_path):
    src = write_jsonl(
        tmp_path / "ids.jsonl",
        [{"id": "q1", "prompt": "First question"}, {"id": "q1", "prompt": "Second question"}],
    )
    try:
        prompts, report = parse_prompts(src)
    except PromptImportError as e:  # refusing the file is fine too
        assert "q1" in str(e)
        return
    # nothing the user wrote may vanish silently: each row is imported or reported as bad
    assert report.duplicates == 0
    assert len(prompts) + len(report.bad_rows) == 2


# -- bad rows -----------------------------------------------------------------------------


def test_a_malformed_line_in_the_middle_imports_nothing_and_names_the_line(store):
    with pytest.raises(PromptImportError) as info:
        import_prompt_set(store, MALFORMED, "mine")
    e = info.value
    assert e.bad_rows == [BadRow("line 3", "malformed JSON at column 28: Expecting ',' delimiter")]
    assert str(e) == (
        f"{MALFORMED}: 1 bad rows; nothing was imported "
        "(fix them, or import the good rows with --skip-bad):\n"
        f"  {MALFORMED}: line 3: malformed JSON at column 28: Expecting ',' delimiter"
    )
    assert not store.prompt_set_exists("mine")
    assert store.list_prompt_sets() == []


def test_with_allow_partial_the_good_rows_are_imported_and_the_bad_ones_reported(store):
    report = import_prompt_set(store, MALFORMED, "mine", allow_partial=True)
    assert (report.rows, report.imported, report.skipped_bad) == (5, 4, True)
    assert [str(b) for b in report.bad_rows] == [
        "line 3: malformed JSON at column 28: Expecting ',' delimiter"
    ]
    assert report.summary() == "4 imported into 'mine', 5 rows read, 1 bad rows skipped"
    assert texts(store.get_prompts("mine")) == [
        "Fifth prompt",
        "First prompt",
        "Fourth prompt",
        "Second prompt",
    ]


def test_every_bad_row_is_reported_with_its_line_and_what_is_wrong(store):
    with pytest.raises(PromptImportError) as info:
        import_prompt_set(store, BAD_ROWS, "mine")
    assert info.value.bad_rows == [
        BadRow("line 2", "the prompt is empty"),
        BadRow("line 3", "the prompt must be text or a list of messages, got int"),
        BadRow("line 4", "a conversation prompt must end with a user turn"),
    ]
    assert not store.prompt_set_exists("mine")
    report = import_prompt_set(store, BAD_ROWS, "mine", allow_partial=True)
    assert (report.imported, len(report.bad_rows)) == (2, 3)
    assert texts(store.get_prompts("mine")) == ["A fine prompt", "Another fine prompt"]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "   "}, "the prompt is empty"),
        ({"prompt": None}, "the prompt is missing (null)"),
        ({"prompt": True}, "the prompt must be text or a list of messages, got bool"),
        ({"prompt": 3.5}, "the prompt must be text or a list of messages, got float"),
        ({"prompt": []}, "the conversation is empty"),
        ({"prompt": [{"role": "user"}]}, 'turn 1 must be {"role": ..., "content": ...}'),
        (
            {"prompt": [{"role": "human", "content": "Hi"}]},
            "turn 1 has role 'human'; use one of system, user, assistant",
        ),
        (
            {"prompt": [{"role": "user", "content": "Hi", "name": "bob"}]},
            'turn 1 must be {"role": ..., "content": ...}',
        ),
        ({"prompt": [{"role": "user", "content": 7}]}, "turn 1 content must be text, got int"),
        ({"prompt": [{"role": "user", "content": "  "}]}, "the last user turn is empty"),
        (
            {"prompt": "Hi", "category": ["a"]},
            "column 'category' (category) must be text, got list",
        ),
        ({"prompt": "Hi", "split": "holdout"}, "split 'holdout' is not 'train' or 'test'"),
        ("just a string", "expected an object with a 'prompt' field, got str"),
    ],
)
def test_a_bad_row_names_what_is_wrong(tmp_path, row, message):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "A good one"}, row])
    prompts, report = parse_prompts(src)
    assert report.bad_rows == [BadRow("line 2", message)]
    assert texts(prompts) == ["A good one"]


def test_a_prompt_over_the_length_limit_is_a_bad_row_and_one_at_the_limit_is_not(tmp_path):
    src = write_jsonl(
        tmp_path / "long.jsonl",
        [
            {"prompt": "x" * MAX_PROMPT_CHARS},
            {"prompt": "y" * (MAX_PROMPT_CHARS + 1)},
            # the limit counts all turns together: 2 * 60,000 = 120,000 > 100,000
            {
                "prompt": [
                    {"role": "system", "content": "s" * 60_000},
                    {"role": "user", "content": "u" * 60_000},
                ]
            },
        ],
    )
    prompts, report = parse_prompts(src)
    assert [len(p.text) for p in prompts] == [MAX_PROMPT_CHARS]
    assert report.bad_rows == [
        BadRow("line 2", "the prompt is 100,001 characters; the limit is 100,000"),
        BadRow("line 3", "the prompt is 120,000 characters; the limit is 100,000"),
    ]


def test_a_split_column_sets_the_split_and_validation_counts_as_test(tmp_path):
    src = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "one", "split": "train"},
            {"prompt": "two", "split": "test"},
            {"prompt": "three", "split": "validation"},
            {"prompt": "four", "split": "dev"},
        ],
    )
    prompts, _ = parse_prompts(src)
    assert {p.text: p.split for p in prompts} == {
        "one": "train",
        "two": "test",
        "three": "test",
        "four": "test",
    }


def test_an_id_column_sets_the_prompt_id(tmp_path):
    src = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "q-17", "prompt": "Hi"}, {"id": 18, "prompt": "Yo"}]
    )
    prompts, _ = parse_prompts(src)
    assert sorted(p.prompt_id for p in prompts) == ["18", "q-17"]


def test_a_file_with_no_rows_is_refused(tmp_path):
    (tmp_path / "blank.jsonl").write_text("\n\n  \n")
    with pytest.raises(InputFileError, match=r"blank.jsonl: the file is empty"):
        parse_prompts(tmp_path / "blank.jsonl")
    (tmp_path / "header.csv").write_text("prompt,category\n")
    with pytest.raises(PromptImportError, match=r"header.csv: no rows found"):
        parse_prompts(tmp_path / "header.csv")


def test_a_file_whose_rows_are_all_bad_imports_nothing_even_with_allow_partial(store, tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": ""}, {"prompt": 1}])
    with pytest.raises(PromptImportError, match=r"p.jsonl: no valid prompts to import"):
        import_prompt_set(store, src, "mine", allow_partial=True)
    assert not store.prompt_set_exists("mine")


def test_a_line_separator_character_inside_a_jsonl_string_does_not_split_the_line(tmp_path):
    src = write_jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": "one\u2028two"}, {"prompt": "three\x85four"}, {"prompt": "ok"}],
    )
    prompts, report = parse_prompts(src)
    assert report.bad_rows == []
    assert report.rows == 3
    assert texts(prompts) == ["ok", "one\u2028two", "three\x85four"]


# -- existing sets ------------------------------------------------------------------------


def test_importing_into_an_existing_set_without_append_is_refused_and_changes_nothing(store):
    import_prompt_set(store, GOOD, "mine", description="first")
    before = store.get_prompts("mine")
    with pytest.raises(
        CaiError, match=r"^prompt set 'mine' already exists; choose another name or append to it$"
    ):
        import_prompt_set(store, DUPLICATES, "mine", description="second")
    assert store.get_prompts("mine") == before
    (summary,) = store.list_prompt_sets()
    assert (summary.description, summary.prompts) == ("first", 4)


@pytest.mark.parametrize("name", ["", "Mine", "my set", "-x", "a" * 65, "../etc"])
def test_a_set_name_must_be_a_slug(store, name):
    with pytest.raises(CaiError, match="is not a valid prompt set name"):
        import_prompt_set(store, GOOD, name)


# -- CSV ----------------------------------------------------------------------------------


def test_a_column_mapping_reads_prompts_and_categories_from_other_columns(store):
    report = import_prompt_set(
        store, QUESTIONS, "qs", mapping={"prompt": "question", "category": "topic"}
    )
    assert report.imported == 3
    assert {p.text: p.category for p in store.get_prompts("qs")} == {
        "What is a prime number?": "math",
        'Explain "Big O" notation, briefly.': "coding",  # CSV quoting undone
        "How do tides work?": "science",
    }


def test_a_csv_without_the_prompt_column_names_it_and_the_columns_present(store):
    with pytest.raises(PromptImportError) as info:
        import_prompt_set(store, QUESTIONS, "qs")
    assert len(info.value.bad_rows) == 3
    assert (
        "line 3: missing column 'prompt' (columns present: question, topic); "
        "map it with --column prompt=NAME"
    ) in str(info.value)
    assert not store.prompt_set_exists("qs")


def test_an_unknown_mapping_key_is_refused():
    with pytest.raises(
        PromptImportError,
        match=r"unknown mapping key\(s\) question; use prompt, category, id, split",
    ):
        parse_prompts(QUESTIONS, mapping={"question": "prompt"})


def test_a_csv_quoting_error_is_reported_at_its_line_and_nothing_is_imported(store):
    with pytest.raises(PromptImportError) as info:
        import_prompt_set(store, QUOTING, "mine")
    assert info.value.bad_rows == [BadRow("line 3", "CSV error: ',' expected after '\"'")]
    assert not store.prompt_set_exists("mine")


def test_a_csv_cell_holding_a_json_conversation_is_read_as_a_conversation(tmp_path):
    convo = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Tell me, briefly, about owls"},
    ]
    cell = json.dumps(convo).replace('"', '""')
    (tmp_path / "c.csv").write_text(f'prompt\n"{cell}"\nA plain prompt\n', "utf-8")
    prompts, report = parse_prompts(tmp_path / "c.csv")
    assert report.bad_rows == []
    assert {p.text: len(p.messages) for p in prompts} == {
        "Tell me, briefly, about owls": 3,
        "A plain prompt": 1,
    }


def test_a_csv_row_with_more_fields_than_the_header_is_a_bad_row(tmp_path):
    (tmp_path / "c.csv").write_text("prompt,category\nfine,a\nfine again,b\ntoo,many,fields\n")
    _, report = parse_prompts(tmp_path / "c.csv")
    assert report.bad_rows == [BadRow("line 4", "more fields than the header has columns")]


def test_a_bad_first_csv_row_is_reported_at_line_2_below_the_header(tmp_path):
    (tmp_path / "c.csv").write_text('prompt,category\n"",a\nfine,b\n')
    _, report = parse_prompts(tmp_path / "c.csv")
    assert report.bad_rows == [BadRow("line 2", "the prompt is empty")]


# -- Parquet ------------------------------------------------------------------------------


def test_a_parquet_file_imports_and_bad_rows_are_named_by_row(store, tmp_path):
    import pandas as pd

    frame = pd.DataFrame(
        {
            "question": ["What is DuckDB?", "", "What is Parquet?"],
            "topic": ["db", "db", "formats"],
        }
    )
    frame.to_parquet(tmp_path / "qs.parquet")
    mapping = {"prompt": "question", "category": "topic"}
    with pytest.raises(PromptImportError) as info:
        import_prompt_set(store, tmp_path / "qs.parquet", "qs", mapping=mapping)
    assert info.value.bad_rows == [BadRow("row 2", "the prompt is empty")]
    report = import_prompt_set(
        store, tmp_path / "qs.parquet", "qs", mapping=mapping, allow_partial=True
    )
    assert report.imported == 2
    assert {p.text: p.category for p in store.get_prompts("qs")} == {
        "What is DuckDB?": "db",
        "What is Parquet?": "formats",
    }


def test_a_parquet_column_of_conversations_imports_as_multi_turn_prompts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hey"},
                {"role": "user", "content": "Joke?"},
            ]
        },
        {"messages": [{"role": "user", "content": "Only one turn"}]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    prompts, report = parse_prompts(tmp_path / "c.parquet", mapping={"prompt": "messages"})
    assert report.bad_rows == []
    assert {p.text: len(p.messages) for p in prompts} == {"Joke?": 3, "Only one turn": 1}


def test_a_file_that_is_not_parquet_is_refused_by_name():
    with pytest.raises(PromptImportError, match=r"^x.parquet: not a readable Parquet file"):
        parse_prompts(("x.parquet", b"this is not parquet"))


def test_an_uploaded_parquet_file_over_10_mb_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cai_engine.files import MAX_INPUT_BYTES

    # 1,200 distinct 10,000-character prompts, uncompressed: ~12 MB > 10 MiB
    rows = [{"prompt": f"{i:05d}" + "x" * 9_995} for i in range(1_200)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "big.parquet", compression="none")
    data = (tmp_path / "big.parquet").read_bytes()
    assert len(data) > MAX_INPUT_BYTES
    with pytest.raises(CaiError, match=r"the limit is 10 MB"):
        parse_prompts(("big.parquet", data))


# -- Hugging Face datasets ----------------------------------------------------------------


def test_a_datasets_save_to_disk_folder_imports(store, tmp_path):
    import datasets

    datasets.Dataset.from_list(
        [
            {"text": "Name three rivers.", "kind": "geo"},
            {"text": "Name three lakes.", "kind": "geo"},
            {"text": "Name three rivers.", "kind": "geo"},
        ]
    ).save_to_disk(str(tmp_path / "ds"))
    report = import_prompt_set(
        store, str(tmp_path / "ds"), "geo", mapping={"prompt": "text", "category": "kind"}
    )
    assert (report.rows, report.duplicates, report.imported) == (3, 1, 2)
    assert texts(store.get_prompts("geo", category="geo")) == [
        "Name three lakes.",
        "Name three rivers.",
    ]


def test_a_dataset_dict_keeps_its_train_and_test_split_names(store, tmp_path):
    import datasets

    train = [{"prompt": f"Train prompt {i}"} for i in range(5)]
    test = [{"prompt": f"Test prompt {i}"} for i in range(5)]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(train), "test": datasets.Dataset.from_list(test)}
    ).save_to_disk(str(tmp_path / "dd"))
    import_prompt_set(store, str(tmp_path / "dd"), "dd", fmt="hf")
    got = {p.text: p.split for p in store.get_prompts("dd")}
    assert got == {**{r["prompt"]: "train" for r in train}, **{r["prompt"]: "test" for r in test}}
    # the seeded split alone would have put some of the "test" prompts in train
    seeded = [
        assign_split(prompt_id_for([{"role": "user", "content": r["prompt"]}]), 1234, 0.2)
        for r in test
    ]
    assert "train" in seeded


def test_one_split_of_a_dataset_dict_can_be_chosen_and_an_unknown_one_is_named(store, tmp_path):
    import datasets

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}]),
            "validation": datasets.Dataset.from_list([{"prompt": "c"}]),
        }
    ).save_to_disk(str(tmp_path / "dd"))
    report = import_prompt_set(store, str(tmp_path / "dd"), "dd", hf_split="validation")
    assert report.rows == 1
    with pytest.raises(PromptImportError, match=r"no split 'test'; it has train, validation"):
        import_prompt_set(store, str(tmp_path / "dd"), "dd2", hf_split="test")


def test_a_folder_that_is_not_a_dataset_is_refused_by_name(store, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PromptImportError, match=r"empty: cannot load as a folder"):
        import_prompt_set(store, str(tmp_path / "empty"), "mine")


# -- unreadable files ---------------------------------------------------------------------


def test_a_non_utf8_file_is_refused_naming_the_line_and_byte(store, tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "ok"}\n{"prompt": "café"}\n'.encode("latin-1"))
    with pytest.raises(InputFileError) as info:
        import_prompt_set(store, path, "mine")
    # offset: len('{"prompt": "ok"}\n') = 17, plus len('{"prompt": "caf') = 15 -> 32
    assert str(info.value) == (
        f"{path}:2: not valid UTF-8 (byte 0xe9 at offset 32); save the file as UTF-8 and try again"
    )
    assert not store.prompt_set_exists("mine")


def test_a_utf8_byte_order_mark_is_ignored(tmp_path):
    (tmp_path / "bom.csv").write_bytes("\ufeffprompt\nBonjour\n".encode())
    prompts, _ = parse_prompts(tmp_path / "bom.csv")
    assert texts(prompts) == ["Bonjour"]


# -- big files: read in chunks, staged outside the store, inserted in one transaction -------


def write_numbered(path, n: int, bad_line: int | None = None) -> str:
    """`n` distinct prompts, one a line ("Prompt 000000: ..."); `bad_line` holds a null."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(1, n + 1):
            prompt = None if i == bad_line else f"Prompt {i:06d}: how do rivers form deltas?"
            f.write(json.dumps({"prompt": prompt, "category": f"c{i % 7}"}) + "\n")
    return str(path)


@pytest.fixture
def staged_chunks(monkeypatch) -> list[int]:
    """The size of every chunk an import stages."""
    from cai_engine.store.prompts import PromptStaging

    sizes: list[int] = []
    add = PromptStaging.add

    def spy(self, rows):
        if rows:
            sizes.append(len(rows))
        return add(self, rows)

    monkeypatch.setattr(PromptStaging, "add", spy)
    return sizes


def test_a_200k_row_file_over_10_mb_imports_a_chunk_at_a_time(store, tmp_path, staged_chunks):
    from cai_engine.files import MAX_INPUT_BYTES
    from cai_engine.prompts import CHUNK_ROWS

    path = write_numbered(tmp_path / "big.jsonl", 200_000)
    assert (tmp_path / "big.jsonl").stat().st_size > MAX_INPUT_BYTES  # no limit on files
    report = import_prompt_set(store, path, "big")
    assert (report.rows, report.imported, report.duplicates) == (200_000, 200_000, 0)
    assert store.count_prompts("big") == 200_000
    # 200,000 rows / 10,000 a chunk = 20 chunks, never more than one in memory
    assert CHUNK_ROWS == 10_000 and staged_chunks == [10_000] * 20
    # read back as stored: the 123,456th line, its category 123456 % 7 = 4 (7 x 17,636 = 123,452)
    (p,) = store.get_prompts("big", search="Prompt 123456:")
    assert (p.text, p.category) == ("Prompt 123456: how do rivers form deltas?", "c4")


def test_a_bad_row_deep_in_a_big_file_names_its_line_and_imports_nothing(store, tmp_path):
    import_prompt_set(store, ("kept.jsonl", b'{"prompt": "Keep me."}\n'), "mine")
    path = write_numbered(tmp_path / "big.jsonl", 30_000, bad_line=25_001)
    with pytest.raises(PromptImportError) as info:
        import_prompt_set(store, path, "mine", append=True)
    assert info.value.bad_rows == [BadRow("line 25001", "the prompt is missing (null)")]
    assert f"{path}: line 25001: the prompt is missing (null)" in str(info.value)
    assert texts(store.get_prompts("mine")) == ["Keep me."]  # the set is as it was


def test_an_id_clash_across_chunks_is_a_bad_row_naming_the_first_use(tmp_path, monkeypatch):
    import cai_engine.prompts as prompts_module

    monkeypatch.setattr(prompts_module, "CHUNK_ROWS", 2)  # lines 1-2, 3-4, 5 in three chunks
    src = write_jsonl(
        tmp_path / "ids.jsonl",
        [
            {"prompt": "First", "id": "a"},
            {"prompt": "Second", "id": "b"},
            {"prompt": "First", "id": "a"},  # the same prompt again: a duplicate
            {"prompt": "Other", "id": "c"},
            {"prompt": "Not the first", "id": "a"},  # another prompt under id a: bad
        ],
    )
    prompts, report = parse_prompts(src)
    assert [p.prompt_id for p in prompts] == ["a", "b", "c"]
    assert report.duplicates == 1
    assert report.bad_rows == [
        BadRow("line 5", "id 'a' is already used by line 1 for a different prompt")
    ]


def test_the_readers_memory_does_not_grow_with_the_file(tmp_path, monkeypatch):
    import tracemalloc

    import cai_engine.prompts as prompts_module

    monkeypatch.setattr(prompts_module, "CHUNK_ROWS", 1_000)
    parse_prompts(write_numbered(tmp_path / "warm.jsonl", 10))  # imports the libraries first
    peaks = {}
    for n in (4_000, 16_000):
        path = write_numbered(tmp_path / f"{n}.jsonl", n)
        store = Store(tmp_path / f"home{n}", lock_timeout=5)
        tracemalloc.start()
        import_prompt_set(store, path, "big")
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert store.count_prompts("big") == n
    # Python holds one chunk of 1,000 rows, not the file: 4x the rows, about the same peak
    # (a whole-file reader would hold 16,000 rows of dicts and lists, several times more)
    assert peaks[16_000] < 1.5 * peaks[4_000], peaks


def test_an_uploaded_text_file_over_10_mb_is_refused():
    data = b'{"prompt": "x"}\n' * (11 * 1024 * 1024 // 16)  # 16 bytes a line, 11 MiB in all
    with pytest.raises(
        InputFileError, match=r"^up.jsonl: the file is 11.5 MB; the limit is 10 MB$"
    ):
        parse_prompts(("up.jsonl", data))


def test_a_file_whose_format_cannot_be_told_from_its_name_asks_for_one(tmp_path):
    (tmp_path / "prompts.txt").write_text("prompt\nhello\n")
    with pytest.raises(
        PromptImportError,
        match=r"prompts.txt: cannot tell the format from the name; pass one of jsonl, csv, parquet, hf",
    ):
        parse_prompts(tmp_path / "prompts.txt")
    prompts, _ = parse_prompts(tmp_path / "prompts.txt", fmt="csv")
    assert texts(prompts) == ["hello"]


def test_a_missing_file_is_refused_by_name(tmp_path):
    with pytest.raises(InputFileError, match=r"nope.jsonl: no such file"):
        parse_prompts(tmp_path / "nope.jsonl")


# -- reading prompts back -----------------------------------------------------------------


@pytest.fixture(scope="module")
def kitchen(tmp_path_factory) -> Store:
    """A store holding one small set with known splits and categories; the tests only read it."""
    tmp_path = tmp_path_factory.mktemp("kitchen")
    store = Store(tmp_path / "home", lock_timeout=5)
    src = write_jsonl(
        tmp_path / "kitchen.jsonl",
        [
            {"prompt": "Bake sourdough bread", "category": "cooking", "split": "train"},
            {"prompt": "Bake a CHOCOLATE cake", "category": "cooking", "split": "test"},
            {"prompt": "Fix a flat bicycle tyre", "category": "how-to", "split": "train"},
            {"prompt": "Write a haiku about chocolate", "category": "writing", "split": "test"},
        ],
    )
    import_prompt_set(store, src, "kitchen")
    return store


def test_get_prompts_filters_by_split(kitchen):
    assert texts(kitchen.get_prompts("kitchen", split="test")) == [
        "Bake a CHOCOLATE cake",
        "Write a haiku about chocolate",
    ]
    assert len(kitchen.get_prompts("kitchen", split="train")) == 2


def test_get_prompts_filters_by_category(kitchen):
    assert texts(kitchen.get_prompts("kitchen", category="cooking")) == [
        "Bake a CHOCOLATE cake",
        "Bake sourdough bread",
    ]
    assert kitchen.get_prompts("kitchen", category="Cooking") == []  # categories match exactly


def test_get_prompts_search_is_case_insensitive(kitchen):
    expected = ["Bake a CHOCOLATE cake", "Write a haiku about chocolate"]
    assert texts(kitchen.get_prompts("kitchen", search="chocolate")) == expected
    assert texts(kitchen.get_prompts("kitchen", search="ChoCoLate")) == expected
    assert kitchen.get_prompts("kitchen", search="pizza") == []


def test_get_prompts_filters_combine_and_limit_caps_the_count(kitchen):
    assert texts(kitchen.get_prompts("kitchen", split="train", category="cooking")) == [
        "Bake sourdough bread"
    ]
    assert texts(kitchen.get_prompts("kitchen", split="test", search="bake")) == [
        "Bake a CHOCOLATE cake"
    ]
    assert len(kitchen.get_prompts("kitchen", limit=3)) == 3


def test_search_matches_earlier_turns_of_a_conversation(store):
    import_prompt_set(store, GOOD, "mine")
    assert texts(store.get_prompts("mine", search="alfama")) == ["Make it rainy-day friendly."]


def test_prompt_categories_counts_train_and_test_per_category(kitchen):
    assert kitchen.prompt_categories("kitchen") == [
        ("cooking", 1, 1),
        ("how-to", 1, 0),
        ("writing", 0, 1),
    ]


def test_an_unknown_set_is_an_error_listing_the_known_sets(kitchen):
    with pytest.raises(NotFoundError, match=r"^no prompt set named 'pantry'; known: kitchen$"):
        kitchen.get_prompts("pantry")


def test_search_finds_text_that_contains_a_double_quote(store, tmp_path):
    src = write_jsonl(tmp_path / "q.jsonl", [{"prompt": 'Say "hi" to Bob'}, {"prompt": "Say bye"}])
    import_prompt_set(store, src, "q")
    assert texts(store.get_prompts("q", search='"hi"')) == ['Say "hi" to Bob']


def test_search_does_not_match_the_json_keys_and_roles_around_the_text(kitchen):
    assert kitchen.get_prompts("kitchen", search="content") == []
    assert kitchen.get_prompts("kitchen", search="user") == []
