"""The `cai` command line: help, init, constitutions and prompt sets, and how errors read."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from cai_engine import jobs
from cai_engine.bundled import install_bundled
from cai_engine.cli import build_parser, main
from cai_engine.constitution import ConstitutionError
from cai_engine.prompts import assign_split
from cai_engine.store import Store
from tests.conftest import FIXTURES, ROOT

PROMPTS = FIXTURES / "prompts"


def cai(capsys, *args: str) -> tuple[int, str, str]:
    """Run `cai ARGS` in-process; return `(exit status, stdout, stderr)`."""
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def bundled_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("bundled") / "home"
    install_bundled(Store(home, lock_timeout=5))
    return home


@pytest.fixture
def initialised(cai_home, bundled_home) -> Path:
    """A data home as `cai init` leaves it: a copy of one installed once per module."""
    shutil.copytree(bundled_home, cai_home, dirs_exist_ok=True)
    return cai_home


# -- help ---------------------------------------------------------------------------------

COMMANDS = [
    ("init",),
    ("studio",),
    ("constitution",),
    ("constitution", "list"),
    ("constitution", "show"),
    ("constitution", "history"),
    ("constitution", "validate"),
    ("constitution", "import"),
    ("constitution", "export"),
    ("constitution", "diff"),
    ("prompts",),
    ("prompts", "list"),
    ("prompts", "show"),
    ("prompts", "import"),
    ("jobs",),
    ("jobs", "list"),
    ("jobs", "show"),
    ("jobs", "logs"),
    ("jobs", "cancel"),
    ("jobs", "resume"),
    ("jobs", "submit"),
    ("models",),
    ("models", "list"),
    ("models", "pull"),
    ("models", "chat"),
    ("generate",),
    ("vllm",),
    ("vllm", "serve"),
    ("critique",),
    ("pairs",),
    ("label",),
    ("judge",),
    ("judge", "check"),
    ("judge", "show"),
    ("judge", "list"),
    ("review",),
    ("review", "stats"),
    ("review", "add"),
    ("export",),
    ("export", "sft"),
    ("export", "prefs"),
    ("export", "annotated"),
    ("import",),
    ("import", "hh"),
    ("import", "prefs"),
    ("import", "annotated"),
    ("train",),
    ("train", "sft"),
    ("train", "reward"),
    ("train", "dpo"),
    ("train", "rl"),
    ("demo",),
    ("eval",),
    ("eval", "run"),
    ("eval", "show"),
]


def command_paths(parser: argparse.ArgumentParser, prefix: tuple = ()) -> list[tuple]:
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths += command_paths(sub, (*prefix, name))
    return paths


def test_cai_help_exits_zero_and_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cai ")
    for command in ("init", "studio", "constitution", "prompts"):
        assert f"    {command}" in out


def test_the_command_tree_is_the_one_these_tests_cover():
    assert sorted(command_paths(build_parser())) == sorted(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help(capsys, path):
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: cai {' '.join(path)}")


def test_cai_help_runs_as_a_module_in_a_fresh_interpreter(cai_home):
    done = subprocess.run(
        [sys.executable, "-m", "cai_engine.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CAI_HOME": str(cai_home)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: cai ")
    assert done.stderr == ""


def test_importing_the_cli_loads_no_heavy_module():
    # what keeps `cai --help` instant: every heavy import waits inside a command handler
    heavy = ["torch", "transformers", "streamlit", "pandas", "duckdb", "pydantic", "datasets"]
    probe = ["argparse", *heavy]  # argparse is loaded: proof that the check itself works
    code = f"import sys, cai_engine.cli\nprint(','.join(m for m in {probe!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "argparse"


def test_a_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "the following arguments are required: COMMAND" in capsys.readouterr().err


# -- init ---------------------------------------------------------------------------------


def test_init_installs_the_bundled_sets_and_running_it_again_adds_nothing(capsys, cai_home, store):
    rc, first, _ = cai(capsys, "init")
    assert rc == 0
    sizes = {s.name: s.prompts for s in store.list_prompt_sets()}
    assert set(sizes) == {"helpful", "red-team"}
    assert first.splitlines() == [
        f"data home: {cai_home.resolve()}",
        "constitutions: default@1, harmless@1; "
        f"prompt sets: helpful +{sizes['helpful']}, red-team +{sizes['red-team']}",
    ]
    rc, again, _ = cai(capsys, "init")
    assert rc == 0
    assert again.splitlines()[1] == "constitutions: none new; prompt sets: helpful +0, red-team +0"
    assert {s.name: s.prompts for s in store.list_prompt_sets()} == sizes
    assert [c.versions for c in store.list_constitutions()] == [1, 1]


def test_home_can_be_given_on_the_command_line(capsys, tmp_path, cai_home):
    src = str(PROMPTS / "good.jsonl")
    rc, out, _ = cai(
        capsys, "--home", str(tmp_path / "elsewhere"), "prompts", "import", src, "--name", "mine"
    )
    assert (rc, out) == (0, "4 imported into 'mine', 4 rows read\n")
    assert (tmp_path / "elsewhere" / "cai.duckdb").exists()
    assert not cai_home.exists()  # $CAI_HOME was left alone


# -- constitutions ------------------------------------------------------------------------


def test_constitution_list_shows_each_constitution_with_its_latest_version(capsys, initialised):
    rc, out, _ = cai(capsys, "constitution", "list")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "latest", "hash", "principles", "versions", "description"]
    assert [line.split()[:2] for line in lines[2:]] == [["default", "1"], ["harmless", "1"]]


def test_constitution_show_prints_yaml_that_validates(capsys, initialised, tmp_path):
    rc, out, _ = cai(capsys, "constitution", "show", "harmless")
    assert rc == 0
    header, _, body = out.partition("\n")
    assert header.startswith("# harmless@1 (") and ", bundled, " in header
    (tmp_path / "shown.yaml").write_text(body)
    rc, out, _ = cai(capsys, "constitution", "validate", str(tmp_path / "shown.yaml"))
    assert rc == 0
    assert f"{tmp_path / 'shown.yaml'}: ok - 'harmless', " in out


def test_constitution_show_as_json(capsys, initialised, store):
    rc, out, _ = cai(capsys, "constitution", "show", "harmless", "--format", "json")
    assert rc == 0
    data = json.loads(out)
    assert data["name"] == "harmless"
    c = store.get_version("harmless").constitution
    assert [p["id"] for p in data["principles"]] == [p.id for p in c.principles]


def test_an_edited_export_imports_as_version_2_and_version_1_is_kept(capsys, initialised, tmp_path):
    path = tmp_path / "harmless.yaml"
    rc, out, _ = cai(capsys, "constitution", "export", "harmless", "--out", str(path))
    assert (rc, out) == (0, f"wrote {path}\n")
    data = yaml.safe_load(path.read_text())
    assert data["principles"][0]["title"] == "General harm"
    data["principles"][0]["title"] = "Harm of any kind"
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    rc, out, _ = cai(capsys, "constitution", "import", str(path))
    assert rc == 0
    assert out.startswith("imported harmless@2 (") and out.endswith(") from yaml format\n")

    rc, out, _ = cai(capsys, "constitution", "history", "harmless")
    rows = [line.split()[0] for line in out.splitlines()[2:]]
    assert rows == ["1", "2"]
    assert "imported from harmless.yaml" in out.splitlines()[3]

    rc, out, _ = cai(capsys, "constitution", "diff", "harmless")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("--- harmless@1 (") and lines[1].startswith("+++ harmless@2 (")
    assert lines[2:] == [
        "~ principle 'general-harm'",
        "    title:",
        "      - General harm",
        "      + Harm of any kind",
    ]

    rc, old, _ = cai(capsys, "constitution", "show", "harmless@1")
    assert "title: General harm\n" in old and "Harm of any kind" not in old
    rc, new, _ = cai(capsys, "constitution", "show", "harmless")
    assert new.startswith("# harmless@2 (") and "title: Harm of any kind\n" in new

    rc, out, _ = cai(capsys, "constitution", "import", str(path))
    assert rc == 0
    assert out.startswith("unchanged: identical to harmless@2 (")


def test_diff_between_two_named_versions(capsys, initialised, tmp_path):
    path = tmp_path / "h.yaml"
    cai(capsys, "constitution", "export", "harmless", "--out", str(path))
    data = yaml.safe_load(path.read_text())
    data["description"] = "Shorter."
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cai(capsys, "constitution", "import", str(path))
    rc, out, _ = cai(capsys, "constitution", "diff", "harmless@2", "harmless@1")
    assert rc == 0
    assert out.splitlines()[2].startswith("~ description: 'Shorter.' -> 'A harmlessness-focused")
    rc, out, _ = cai(capsys, "constitution", "diff", "harmless@1", "harmless@1")
    assert out.splitlines()[2:] == ["no differences"]


def test_diff_of_a_constitution_with_one_version_says_so(capsys, initialised):
    rc, _, err = cai(capsys, "constitution", "diff", "harmless")
    assert rc == 1
    assert err == "error: 'harmless' has 1 version(s); nothing to diff against\n"


def test_export_to_the_anthropic_format_writes_three_files_that_import_back(
    capsys, initialised, tmp_path, store
):
    folder = tmp_path / "anthropic"
    rc, out, _ = cai(
        capsys, "constitution", "export", "harmless", "--format", "anthropic", "--out", str(folder)
    )
    assert rc == 0
    names = [
        "CritiqueRevisionFewShotPrompts.json",
        "CritiqueRevisionInstructions.json",
        "RLMadisonInstructions.json",
        "RLMadisonPrecogFewShotPrompts.json",  # harmless's chain-of-thought comparisons
    ]
    assert sorted(p.name for p in folder.iterdir()) == names
    assert sorted(out.splitlines()) == [f"wrote {folder / n}" for n in names]

    files = [str(folder / n) for n in names]
    rc, out, _ = cai(capsys, "constitution", "import", *files, "--name", "harmless-anthropic")
    assert rc == 0
    assert out.splitlines()[-1].startswith("imported harmless-anthropic@1 (")
    assert out.splitlines()[-1].endswith(") from anthropic format")
    original = store.get_version("harmless").constitution
    back = store.get_version("harmless-anthropic").constitution
    fields = ("id", "critique_request", "revision_request", "preference_question")
    assert [[getattr(p, f) for f in fields] for p in back.principles] == [
        [getattr(p, f) for f in fields] for p in original.principles
    ]
    assert len(back.few_shots) == len(original.few_shots)
    keep = ("response_a", "response_b", "preferred", "reasoning")
    assert [[getattr(s, k) for k in keep] for s in back.comparison_few_shots] == [
        [getattr(s, k) for k in keep] for s in original.comparison_few_shots
    ]


def test_export_to_llm_swarm_writes_one_file_that_imports_back(
    capsys, initialised, tmp_path, store
):
    path = tmp_path / "out" / "harmless.json"
    rc, out, _ = cai(
        capsys, "constitution", "export", "harmless", "--format", "llm-swarm", "--out", str(path)
    )
    assert (rc, out) == (0, f"wrote {path}\n")
    assert list(path.parent.iterdir()) == [path]
    rc, out, _ = cai(capsys, "constitution", "import", str(path), "--name", "harmless-swarm")
    assert rc == 0
    assert out.startswith("note: llm-swarm has no preference questions")
    assert out.splitlines()[-1].startswith("imported harmless-swarm@1 (")
    original = store.get_version("harmless").constitution
    back = store.get_version("harmless-swarm").constitution
    assert [p.critique_request for p in back.principles] == [
        p.critique_request for p in original.principles
    ]
    assert [p.revision_request for p in back.principles] == [
        p.revision_request for p in original.principles
    ]
    assert len(back.few_shots) == len(original.few_shots)


def test_export_to_a_folder_names_the_llm_swarm_file_after_the_constitution(
    capsys, initialised, tmp_path
):
    rc, out, _ = cai(
        capsys, *"constitution export harmless --format llm-swarm --out".split(), str(tmp_path)
    )
    assert (rc, out) == (0, f"wrote {tmp_path / 'harmless.llm-swarm.json'}\n")


def test_export_refuses_to_overwrite_a_file_without_force(capsys, initialised, tmp_path):
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "mine.yaml"
    path.write_text("my own notes\n")
    rc, out, err = cai(capsys, "constitution", "export", "harmless", "--out", str(path))
    assert (rc, out) == (1, "")
    assert err == f"error: {path} already exists; pass --force to overwrite it\n"
    assert path.read_text() == "my own notes\n"

    rc, out, _ = cai(capsys, "constitution", "export", "harmless", "--out", str(path), "--force")
    assert (rc, out) == (0, f"wrote {path}\n")
    assert path.read_text().startswith("name: harmless\n")
    assert [p.name for p in path.parent.iterdir()] == ["mine.yaml"]  # no temporary file left


def test_export_to_the_anthropic_format_refuses_to_overwrite_a_file_in_the_folder(
    capsys, initialised, tmp_path
):
    (tmp_path / "CritiqueRevisionInstructions.json").write_text("{}\n")
    rc, _, err = cai(
        capsys, *"constitution export harmless --format anthropic --out".split(), str(tmp_path)
    )
    assert rc == 1
    assert "CritiqueRevisionInstructions.json already exists; pass --force" in err
    assert (tmp_path / "CritiqueRevisionInstructions.json").read_text() == "{}\n"


def test_export_without_out_prints_yaml(capsys, initialised):
    rc, out, _ = cai(capsys, "constitution", "export", "harmless")
    assert rc == 0
    assert yaml.safe_load(out)["name"] == "harmless"


BAD_YAML = """\
name: tiny
principles:
  - id: be-kind
    title: Be kind
    critique_request: Point out anything unkind.
    revision_request: Rewrite it kindly.
    preference_question: Which response is kinder?
    enabeld: false
"""


def test_validate_accepts_a_good_file(capsys, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(BAD_YAML.replace("    enabeld: false\n", ""))
    rc, out, err = cai(capsys, "constitution", "validate", str(path))
    assert (rc, err) == (0, "")
    assert out.startswith(f"{path}: ok - 'tiny', 1 principles, 0 few-shots, hash ")


def test_validate_reports_a_bad_file_as_one_line_naming_the_file_and_line(capsys, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(BAD_YAML)
    rc, out, err = cai(capsys, "constitution", "validate", str(path))
    assert (rc, out) == (1, "")
    assert "Traceback" not in err
    assert err.splitlines() == [
        f"error: {path}:8: principles[0].enabeld: unknown key 'enabeld'; allowed keys here: "
        "id, title, critique_request, revision_request, preference_question, tags, enabled, weight, "
        "positive_prompt, negative_prompt"
    ]


def test_validate_reports_a_yaml_syntax_error_with_its_line(capsys, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: tiny\nprinciples:\n  - id: [unclosed\n")
    rc, _, err = cai(capsys, "constitution", "validate", str(path))
    assert rc == 1
    assert err.startswith(f"error: {path}:")
    assert "YAML syntax error" in err and "Traceback" not in err


def test_with_debug_an_error_raises_instead_of_printing_one_line(capsys, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(BAD_YAML)
    with pytest.raises(ConstitutionError, match="unknown key 'enabeld'"):
        main(["--debug", "constitution", "validate", str(path)])


def test_validating_a_missing_file_names_it(capsys, tmp_path):
    rc, _, err = cai(capsys, "constitution", "validate", str(tmp_path / "nope.yaml"))
    assert (rc, err) == (1, f"error: {tmp_path / 'nope.yaml'}: no such file\n")


@pytest.mark.parametrize(
    "args",
    [
        ["constitution", "show", "nope"],
        ["constitution", "show", "nope@2"],
        ["constitution", "export", "nope"],
        ["constitution", "history", "nope"],
        ["constitution", "diff", "nope"],
    ],
    ids=" ".join,
)
def test_an_unknown_constitution_is_an_error_listing_the_known_ones(capsys, initialised, args):
    rc, out, err = cai(capsys, *args)
    assert (rc, out) == (1, "")
    assert err.startswith("error: no constitution named 'nope'")
    assert err.endswith("known: default, harmless\n")


def test_an_unknown_version_lists_the_versions_there_are(capsys, initialised):
    rc, _, err = cai(capsys, "constitution", "show", "harmless@7")
    assert rc == 1
    assert err.startswith("error: version '7' of 'harmless' does not exist; versions: 1 (")


# -- prompts ------------------------------------------------------------------------------


def test_prompts_list_shows_each_set_with_its_split_sizes(capsys, initialised, store):
    rc, out, _ = cai(capsys, "prompts", "list")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "prompts", "train", "test", "categories", "description"]
    expected = [
        [s.name, str(s.prompts), str(s.train), str(s.test), str(s.categories)]
        for s in store.list_prompt_sets()
    ]
    assert [line.split()[:5] for line in lines[2:]] == expected
    assert [row[0] for row in expected] == ["helpful", "red-team"]


def test_prompts_show_name_colon_split_shows_only_that_split(capsys, initialised, store):
    rc, out, _ = cai(
        capsys, "prompts", "show", "red-team:test", "--format", "jsonl", "--limit", "1000"
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["split"] for r in rows} == {"test"}
    assert len(rows) == len(store.get_prompts("red-team", split="test"))
    rc, same, _ = cai(
        capsys, *"prompts show red-team --split test --format jsonl --limit 1000".split()
    )
    assert same == out


def test_prompts_show_prints_a_table_of_at_most_limit_rows(capsys, initialised):
    rc, out, _ = cai(capsys, "prompts", "show", "helpful", "--limit", "5")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["id", "split", "category", "turns", "prompt"]
    assert len(lines) == 2 + 5  # header, rule, five prompts
    rc, out, _ = cai(capsys, "prompts", "show", "helpful")
    assert len(out.splitlines()) == 2 + 20  # the default limit is 20


def test_prompts_show_search_and_category(capsys, initialised, store):
    rc, out, _ = cai(
        capsys, "prompts", "show", "red-team", "--search", "KNOCK", "--format", "jsonl"
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and all("knock" in json.dumps(r["prompt"]).lower() for r in rows)
    assert len(rows) == len(store.get_prompts("red-team", search="knock"))
    rc, out, _ = cai(
        capsys, "prompts", "show", "helpful", "--category", "looks-risky", "--format", "jsonl"
    )
    assert {json.loads(line)["category"] for line in out.splitlines()} == {"looks-risky"}


def test_prompts_show_jsonl_writes_conversations_as_message_lists(capsys, store):
    assert cai(capsys, "prompts", "import", str(PROMPTS / "good.jsonl"), "--name", "mine")[0] == 0
    rc, out, _ = cai(capsys, "prompts", "show", "mine", "--category", "travel", "--format", "jsonl")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user"]
    assert row["prompt"][-1]["content"] == "Make it rainy-day friendly."


def test_prompts_shown_as_jsonl_import_back_as_the_same_prompts(
    capsys, initialised, store, tmp_path
):
    rc, out, _ = cai(capsys, "prompts", "show", "red-team", "--format", "jsonl", "--limit", "1000")
    (tmp_path / "copy.jsonl").write_text(out, "utf-8")
    rc, out, _ = cai(capsys, "prompts", "import", str(tmp_path / "copy.jsonl"), "--name", "copy")
    assert rc == 0
    original = store.get_prompts("red-team")
    assert out == f"{len(original)} imported into 'copy', {len(original)} rows read\n"
    assert store.get_prompts("copy") == original  # same ids, messages, categories and splits


def test_prompts_import_with_a_column_mapping(capsys, store):
    rc, out, _ = cai(
        capsys,
        "prompts", "import", str(PROMPTS / "questions.csv"), "--name", "qs",
        "--column", "prompt=question", "--column", "category=topic",
        "--description", "quiz",
    )  # fmt: skip
    assert (rc, out) == (0, "3 imported into 'qs', 3 rows read\n")
    assert {p.category for p in store.get_prompts("qs")} == {"math", "coding", "science"}
    assert store.list_prompt_sets()[0].description == "quiz"


def test_a_column_option_without_an_equals_sign_is_refused(capsys, store):
    src = str(PROMPTS / "questions.csv")
    rc, _, err = cai(capsys, "prompts", "import", src, "--name", "qs", "--column", "question")
    assert rc == 1
    assert err == "error: --column expects KEY=COLUMN (e.g. prompt=question), got 'question'\n"
    assert store.list_prompt_sets() == []


def test_prompts_import_of_a_file_with_a_bad_line_fails_and_names_the_line(capsys, store):
    src = PROMPTS / "malformed_middle.jsonl"
    rc, out, err = cai(capsys, "prompts", "import", str(src), "--name", "m")
    assert (rc, out) == (1, "")
    assert err.splitlines() == [
        f"error: {src}: 1 bad rows; nothing was imported "
        "(fix them, or import the good rows with --skip-bad):",
        f"  {src}: line 3: malformed JSON at column 28: Expecting ',' delimiter",
    ]
    assert "Traceback" not in err
    assert store.list_prompt_sets() == []


def test_prompts_import_with_skip_bad_imports_the_good_rows_and_lists_the_bad(capsys, store):
    src = PROMPTS / "malformed_middle.jsonl"
    rc, out, err = cai(capsys, "prompts", "import", str(src), "--name", "m", "--skip-bad")
    assert rc == 0
    assert out == "4 imported into 'm', 5 rows read, 1 bad rows skipped\n"
    assert err == f"skipped {src}: line 3: malformed JSON at column 28: Expecting ',' delimiter\n"
    assert len(store.get_prompts("m")) == 4


def test_prompts_import_into_an_existing_set_needs_append(capsys, store):
    src = str(PROMPTS / "good.jsonl")
    assert cai(capsys, "prompts", "import", src, "--name", "mine")[0] == 0
    rc, _, err = cai(capsys, "prompts", "import", src, "--name", "mine")
    assert rc == 1
    assert err == "error: prompt set 'mine' already exists; choose another name or append to it\n"
    rc, out, _ = cai(capsys, "prompts", "import", src, "--name", "mine", "--append")
    assert (rc, out) == (0, "0 imported into 'mine', 4 rows read, 4 already in the set\n")


def test_prompts_import_seed_and_test_fraction_set_the_split(capsys, store, tmp_path):
    src = tmp_path / "many.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"Prompt {i}"}) + "\n" for i in range(50)))
    rc, _, _ = cai(
        capsys,
        "prompts",
        "import",
        str(src),
        "--name",
        "half",
        "--seed",
        "7",
        "--test-fraction",
        "0.5",
    )
    assert rc == 0
    prompts = store.get_prompts("half")
    assert [p.split for p in prompts] == [assign_split(p.prompt_id, 7, 0.5) for p in prompts]
    assert [p.split for p in prompts] != [assign_split(p.prompt_id, 1234, 0.5) for p in prompts]
    rc, _, _ = cai(capsys, "prompts", "import", str(src), "--name", "none", "--test-fraction", "0")
    assert {p.split for p in store.get_prompts("none")} == {"train"}


@pytest.mark.parametrize(
    "args", [["prompts", "show", "nope"], ["prompts", "show", "nope:test"]], ids=" ".join
)
def test_an_unknown_prompt_set_is_an_error_listing_the_known_ones(capsys, initialised, args):
    rc, out, err = cai(capsys, *args)
    assert (rc, out) == (1, "")
    assert err == "error: no prompt set named 'nope'; known: helpful, red-team\n"


def test_an_unknown_split_after_the_colon_is_an_error_naming_train_and_test(capsys, initialised):
    rc, _, err = cai(capsys, "prompts", "show", "red-team:dev")
    assert rc == 1
    assert "train" in err and "test" in err


# -- RL-CAI: pairs, labels, reviews and preference exports -----------------------------------


class RlCai:
    """A data home with a finished `cai pairs` and `cai label` job, run through the CLI."""

    def __init__(self, home: Path, outputs: dict[str, tuple[int, str, str]]):
        self.home, self.outputs = home, outputs
        self.store = Store(home, lock_timeout=10)
        self.pairs_job = outputs["pairs"][1].splitlines()[0].removeprefix("submitted ")
        self.labels_job = outputs["label"][1].splitlines()[0].removeprefix("submitted ")


def run_cli(*args: str) -> tuple[int, str, str]:
    """`cai ARGS` in-process without capsys (module fixtures cannot use it)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def rlcai(tmp_path_factory, tiny_spec) -> RlCai:
    from tests.runners import kill_runners

    home = tmp_path_factory.mktemp("rlcai") / "home"
    install_bundled(Store(home, lock_timeout=5))
    h = ["--home", str(home)]
    outputs = {}
    try:
        outputs["pairs"] = run_cli(
            *h, "pairs", "--prompts", "red-team:train", "--model", tiny_spec, "--limit", "4",
            "--max-new-tokens", "8", "--wait",
        )  # fmt: skip
        assert outputs["pairs"][0] == 0, outputs["pairs"]
        pairs_job = outputs["pairs"][1].splitlines()[0].removeprefix("submitted ")
        outputs["label"] = run_cli(
            *h, "label", "--pairs", pairs_job, "--constitution", "harmless",
            "--model", tiny_spec, "--wait",
        )  # fmt: skip
    finally:
        kill_runners(home)
    return RlCai(home, outputs)


@pytest.fixture
def rl(rlcai):
    """The module's label job; verdicts a test records are removed after it."""
    yield rlcai
    with rlcai.store.connect() as con:
        con.rows("DELETE FROM reviews")


def test_cai_pairs_and_label_run_end_to_end(rl, tiny_spec):
    from cai_engine import jobs

    rc, out, err = rl.outputs["pairs"]
    assert (rc, err) == (0, "")
    assert rl.pairs_job.startswith("pairs-")
    assert out.splitlines()[-1] == f"{rl.pairs_job} succeeded"
    rc, out, err = rl.outputs["label"]
    assert (rc, err) == (0, ""), out
    assert rl.labels_job.startswith("label-")
    assert out.splitlines()[-1] == f"{rl.labels_job} succeeded"

    # 4 prompts, 2 answers each: one pair per prompt, each labelled in both orders
    assert len(rl.store.pairs(rl.pairs_job)) == 4
    config = jobs.get_job(rl.store, rl.labels_job).config
    assert config["both_orders"] is True and config["pairs"] == rl.pairs_job
    assert config["constitution"].startswith("harmless@")  # pinned to a version
    jobs.ingest(rl.store, jobs.get_job(rl.store, rl.labels_job))
    labels = rl.store.labels(rl.labels_job)
    assert len(labels) == 4
    assert all(r["p_a_ab"] is not None and r["p_a_ba"] is not None for r in labels)
    assert all(r["pairs_job"] == rl.pairs_job for r in labels)


def test_review_stats_prints_agreement_kappa_calibration_and_principles(capsys, rl):
    rc, out, err = cai(capsys, "--home", str(rl.home), "review", "stats", "--labels", rl.labels_job)
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"label job {rl.labels_job} (succeeded): 4 labels"
    # the judge and its verdict on the gold set come before any of its numbers
    assert lines.pop(1).startswith(f"judge {rl.store.labels(rl.labels_job)[0]['model']}: ")
    assert lines[1].startswith("position consistency: ")
    assert "first-shown response won " in lines[1]
    assert lines[2].startswith("position bias: ")  # the evidence is always stated
    assert lines[3] == "reviewed: 0 verdicts (0 tie, 0 both bad, 0 on AI ties); decisive: 0"
    assert lines[4] == "agreement with the AI: – (0/0); Cohen's kappa: –"
    assert "by principle:" not in out  # no decisive verdicts yet
    assert "calibration (AI confidence vs human agreement):" in out
    assert "0.0–0.2" in out and "0.8–1.0" in out
    assert "per principle:" in out
    principles = {r["principle_id"] for r in rl.store.labels(rl.labels_job)}
    tail = out.split("per principle:")[1]
    assert all(p in tail for p in principles)


def test_review_add_records_a_verdict_that_stats_then_count(capsys, rl):
    labels = rl.store.labels(rl.labels_job)
    row = next(r for r in labels if r["winner"] in ("A", "B"))
    h = ["--home", str(rl.home)]
    rc, out, err = cai(
        capsys, *h, "review", "add", "--labels", rl.labels_job, "--prompt-id", row["prompt_id"],
        "--pair", str(row["pair"]), "--verdict", row["winner"], "--reviewer", "ann",
        "--note", "<b>agree</b>",
    )  # fmt: skip
    assert (rc, err) == (0, "")
    (stored,) = rl.store.reviews(rl.labels_job)
    assert out == (
        f"recorded {row['winner']} on {row['prompt_id']}/{row['pair']} by ann ({stored['id']})\n"
    )
    assert (stored["verdict"], stored["reviewer"], stored["note"]) == (
        row["winner"],
        "ann",
        "<b>agree</b>",
    )

    rc, out, err = cai(capsys, *h, "review", "stats", "--labels", rl.labels_job)
    assert (rc, err) == (0, "")
    assert "reviewed: 1 verdicts (0 tie, 0 both bad, 0 on AI ties); decisive: 1" in out
    assert "agreement with the AI: 100.0% (1/1); Cohen's kappa: –" in out
    assert "by principle:" in out
    assert f"{row['principle_id']}" in out.split("by principle:")[1].split("calibration")[0]

    # a second reviewer disagrees: two decisive verdicts on one pair
    other = "B" if row["winner"] == "A" else "A"
    rc, _, _ = cai(
        capsys, *h, "review", "add", "--labels", rl.labels_job, "--prompt-id", row["prompt_id"],
        "--pair", str(row["pair"]), "--verdict", other, "--reviewer", "bob",
    )  # fmt: skip
    assert rc == 0
    rc, out, _ = cai(capsys, *h, "review", "stats", "--labels", rl.labels_job)
    assert "agreement with the AI: 50.0% (1/2)" in out


def test_review_add_of_a_pair_without_a_label_is_a_one_line_error(capsys, rl):
    rc, out, err = cai(
        capsys, "--home", str(rl.home), "review", "add", "--labels", rl.labels_job,
        "--prompt-id", "nope", "--pair", "0", "--verdict", "A", "--reviewer", "ann",
    )  # fmt: skip
    assert (rc, out) == (1, "")
    assert err == f"error: label job {rl.labels_job} has no label for prompt nope pair 0\n"
    assert rl.store.reviews(rl.labels_job) == []


def test_cai_export_prefs_from_labels(capsys, rl, tmp_path):
    out_dir = tmp_path / "prefs"
    args = [
        "--home", str(rl.home), "export", "prefs", "--labels", rl.labels_job, "--drop-ties",
        "--min-confidence", "0.0", "--out", str(out_dir),
    ]  # fmt: skip
    rc, out, err = cai(capsys, *args)
    assert (rc, err) == (0, "")
    rows = [json.loads(line) for line in (out_dir / "data.jsonl").read_text().splitlines()]
    ties = sum(r["winner"] == "tie" for r in rl.store.labels(rl.labels_job))
    assert len(rows) == 4 - ties
    assert out.startswith(f"{4 - ties} prefs examples in {out_dir}")
    assert all(set(r) >= {"prompt", "chosen", "rejected", "score"} for r in rows)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["job"] == rl.labels_job and manifest["pairs_job"] == rl.pairs_job
    assert manifest["filters"] == {
        "drop_ties": True,
        "drop_inconsistent": False,
        "min_confidence": 0.0,
        "drop_truncated": False,
    }
    assert manifest["command"] == " ".join(["cai", *args])

    # the default folder is <home>/exports/<job>-prefs
    rc, _, err = cai(capsys, "--home", str(rl.home), "export", "prefs", "--labels", rl.labels_job)
    assert (rc, err) == (0, "")
    assert (rl.home / "exports" / f"{rl.labels_job}-prefs" / "data.jsonl").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["export", "prefs"],
            "say where preferences come from: --labels <label job> (AI labels, human "
            "verdicts override them), or --job <critique job> --from-revisions",
        ),
        (
            ["export", "prefs", "--labels", "label-x", "--job", "critique-x"],
            "say where preferences come from: --labels <label job>",
        ),
        (
            ["export", "prefs", "--labels", "label-x", "--from-revisions"],
            "--from-revisions goes with --job (a critique job), not --labels",
        ),
        (
            ["export", "prefs", "--labels", "label-x", "--min-confidence", "2"],
            "--min-confidence must be between 0 and 1, not 2.0",
        ),
        (
            ["export", "prefs", "--labels", "label-x", "--min-confidence", "-0.1"],
            "--min-confidence must be between 0 and 1, not -0.1",
        ),
        (
            ["label", "--pairs", "pairs-x", "--constitution", "harmless", "--clamp", "abc"],
            "--clamp takes LOW,HIGH such as 0.4,0.6, not 'abc'",
        ),
        (
            ["label", "--pairs", "pairs-x", "--constitution", "harmless", "--clamp", "0.1,0.2,0.3"],
            "--clamp takes LOW,HIGH such as 0.4,0.6, not '0.1,0.2,0.3'",
        ),
        (["review", "stats", "--labels", "label-nope"], "no job 'label-nope'"),
    ],
)
def test_rlcai_refusals_are_one_line_errors(capsys, initialised, tmp_path, args, message):
    rc, out, err = cai(capsys, *args)
    assert (rc, out) == (1, "")
    assert err.startswith(f"error: {message}")
    assert err.count("\n") == 1
    assert not (initialised / "exports").exists()


def test_review_stats_of_a_pairs_job_is_a_one_line_error(capsys, rl):
    rc, out, err = cai(capsys, "--home", str(rl.home), "review", "stats", "--labels", rl.pairs_job)
    assert (rc, out) == (1, "")
    assert err == f"error: job {rl.pairs_job} is a pairs job; --labels needs a label job\n"
    rc, out, err = cai(
        capsys, "--home", str(rl.home), "export", "prefs", "--labels", rl.pairs_job,
        "--out", str(rl.home / "x"),
    )  # fmt: skip
    assert (rc, out) == (1, "")
    assert err == f"error: job {rl.pairs_job} is a pairs job; --labels needs a label job\n"


def test_label_of_a_job_that_is_not_a_pairs_job_is_refused(capsys, rl):
    rc, out, err = cai(
        capsys, "--home", str(rl.home), "label", "--pairs", rl.labels_job,
        "--constitution", "harmless",
    )  # fmt: skip
    assert (rc, out) == (1, "")
    assert err == f"error: job {rl.labels_job} is a label job; --pairs needs a pairs job\n"


@pytest.mark.parametrize("flag", ["--one-order", "--no-both-orders"])
def test_one_order_flags_turn_both_orders_off(capsys, rl, tiny_spec, flag):
    from cai_engine import jobs
    from tests.runners import kill_runners

    rc, out, err = cai(
        capsys, "--home", str(rl.home), "label", "--pairs", rl.pairs_job,
        "--constitution", "harmless", "--model", tiny_spec, "--limit", "1", flag,
    )  # fmt: skip
    try:
        assert (rc, err) == (0, "")
        job_id = out.splitlines()[0].removeprefix("submitted ")  # then the estimate
        job = jobs.get_job(rl.store, job_id)
        assert job.kind == "label"
        assert job.config["both_orders"] is False
        assert job.config["limit"] == 1
    finally:
        for j in jobs.list_jobs(rl.store, kind="label"):
            if j.status in jobs.ACTIVE:
                jobs.cancel(rl.store, j.id, grace=5)
        kill_runners(rl.home)


# -- cai train ------------------------------------------------------------------------------


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def train_home(cai_home):
    """A data home for `cai train`; no job process it starts outlives the test."""
    from tests.runners import kill_runners

    yield cai_home
    kill_runners(cai_home)


def help_of(capsys, *path: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_cai_train_help_lists_the_four_trainers(capsys):
    out = help_of(capsys, "train")
    assert out.startswith("usage: cai train ")
    for kind in ("sft", "reward", "dpo", "rl"):
        assert f"    {kind} " in out
    assert "TRL SFTTrainer" in out and "GRPOTrainer or" in one_line(out)


def test_cai_train_sft_help_has_a_flag_per_config_field_with_its_description(capsys):
    from cai_engine.training.config import SFTConfig

    out = help_of(capsys, "train", "sft")
    flat = one_line(out)
    for name, field in SFTConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in out, flag
        assert one_line(field.description) in flat, name
    assert one_line(SFTConfig.model_fields["data"].description) + " (required)" in flat
    assert "--lora, --no-lora" in out
    assert "--launcher {python,torchrun,accelerate}" in out
    assert "(default: python)" in flat and "(default: 2e-05)" in flat
    for own in ("--config CONFIG", "--set KEY=VALUE", "--wait"):
        assert own in out
    assert "--beta" not in out and "--soft-labels" not in out  # DPO's and reward's only


def test_cai_train_dpo_help_has_beta_and_soft_label_flags(capsys):
    from cai_engine.training.config import DPOConfig

    out = help_of(capsys, "train", "dpo")
    flat = one_line(out)
    assert "--beta BETA" in out
    assert one_line(DPOConfig.model_fields["beta"].description) + " (default: 0.1)" in flat
    assert "--soft-labels, --no-soft-labels" in out
    assert "(default: 5e-06)" in flat  # DPO's own learning rate, not the shared one
    args = build_parser(["train", "dpo"]).parse_args(
        ["train", "dpo", "--data", "x", "--no-soft-labels", "--beta", "0.25", "--lora"]
    )
    assert (args.soft_labels, args.beta, args.lora, args.data) == (False, 0.25, True, "x")
    assert not hasattr(args, "max_steps")  # an unset flag leaves the config's default alone


@pytest.mark.parametrize(
    "argv, loaded",
    [
        (["--help"], []),
        (["jobs", "list", "--help"], []),
        (["train", "sft", "--help"], ["pydantic"]),  # the configs, but no model code
    ],
)
def test_help_loads_the_training_configs_only_for_train_and_never_torch(argv, loaded):
    heavy = ["torch", "transformers", "trl", "datasets", "pydantic", "streamlit", "duckdb"]
    code = (
        "import sys\nfrom cai_engine.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: cai")
    assert [m for m in done.stderr.strip().split(",") if m] == loaded


def test_cai_train_sft_wait_trains_the_tiny_model_and_prints_the_job(
    capsys, train_home, tmp_path, tiny_model_dir
):
    from cai_engine import jobs
    from tests.test_training import sft_export

    folder = sft_export(tmp_path / "sft")
    rc, out, err = cai(
        capsys, "train", "sft", "--data", str(folder), "--model", f"hf:{tiny_model_dir}",
        "--max-steps", "2", "--batch-size", "2", "--grad-accum", "1", "--sample-tokens", "4",
        "--name", "cli-sft", "--wait",
    )  # fmt: skip
    assert (rc, err) == (0, ""), out
    lines = out.splitlines()
    job_id = lines[0].removeprefix("submitted ")
    assert lines[0] == f"submitted {job_id}" and job_id.startswith("sft-")
    assert lines[-1] == f"{job_id} succeeded"
    store = Store(train_home)
    job = jobs.get_job(store, job_id)
    assert job.status == "succeeded", job.error
    assert job.config["data"] == str(folder.resolve())
    assert job.config["model"] == f"hf:{tiny_model_dir}"
    assert (job.config["max_steps"], job.config["batch_size"], job.config["grad_accum"]) == (
        2,
        2,
        1,
    )
    assert job.config["sample_tokens"] == 4 and job.config["save_steps"] == 50  # a default
    [model] = store.trained_models()
    assert (model["name"], model["kind"], model["job_id"]) == ("cli-sft", "sft", job_id)


def submitted_config(out: str) -> dict:
    from cai_engine import jobs

    job_id = out.splitlines()[0].removeprefix("submitted ")  # then the estimate
    return jobs.get_job(Store(), job_id).config


def test_cai_train_reads_a_config_file_and_flags_and_set_override_it(
    capsys, train_home, tmp_path, tiny_model_dir
):
    from tests.test_training import sft_export

    folder = sft_export(tmp_path / "sft")
    config = tmp_path / "sft.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": str(folder),
                "model": f"hf:{tiny_model_dir}",
                "max_steps": 7,
                "batch_size": 3,
                "save_steps": 9,
                "seed": 5,
            }
        )
    )
    rc, out, err = cai(
        capsys, "train", "sft", "--config", str(config), "--batch-size", "2",
        "--set", "save_steps=1", "--set", "lora=true",
    )  # fmt: skip
    assert (rc, err) == (0, "")
    got = submitted_config(out)
    assert got["data"] == str(folder.resolve()) and got["model"] == f"hf:{tiny_model_dir}"
    assert (got["max_steps"], got["seed"]) == (7, 5)  # from the file
    assert got["batch_size"] == 2  # the flag beats the file
    assert (got["save_steps"], got["lora"]) == (1, True)  # --set, parsed as YAML


def test_cai_train_set_alone_works_and_an_unknown_key_is_named(
    capsys, train_home, tmp_path, tiny_model_dir
):
    from cai_engine import jobs
    from tests.test_training import sft_export

    folder = sft_export(tmp_path / "sft")
    base = ["train", "sft", "--data", str(folder), "--model", f"hf:{tiny_model_dir}"]
    rc, out, err = cai(capsys, *base, "--set", "save_steps=1")
    assert (rc, err) == (0, "")
    assert submitted_config(out)["save_steps"] == 1
    rc, out, err = cai(capsys, *base, "--set", "bogus=1")
    assert (rc, out) == (1, "")
    assert err.startswith("error: invalid sft job config: unknown key 'bogus' (allowed: data, ")
    assert err.count("\n") == 1
    assert len(jobs.list_jobs(Store())) == 1


def refuse_prefs_as_sft(tmp: Path, base: str) -> list[str]:
    from tests.test_training import prefs_export

    return ["--data", str(prefs_export(tmp / "prefs")), "--model", base]


def refuse_openai(tmp: Path, base: str) -> list[str]:
    from tests.test_training import sft_export

    data = str(sft_export(tmp / "sft"))
    return ["--data", data, "--model", "openai:x?base_url=http://127.0.0.1:9"]


def refuse_accelerate(tmp: Path, base: str) -> list[str]:
    from tests.test_training import sft_export

    return ["--data", str(sft_export(tmp / "sft")), "--model", base, "--launcher", "accelerate"]


def refuse_missing_data(tmp: Path, base: str) -> list[str]:
    return ["--data", str(tmp / "nowhere"), "--model", base]


def refuse_no_data(tmp: Path, base: str) -> list[str]:
    return ["--model", base]


def refuse_bad_yaml_file(tmp: Path, base: str) -> list[str]:
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    return ["--config", str(tmp / "list.yaml")]


@pytest.mark.parametrize(
    "make, message",
    [
        (refuse_prefs_as_sft, r"error: .*example 1 has no 'messages'.*preference export"),
        (refuse_openai, r"error: invalid sft job config: model: .*only a local model can be trained"),
        (refuse_accelerate, r"error: invalid sft job config: .*launcher accelerate needs accelerate_config"),
        (refuse_missing_data, r"error: --data '.*nowhere' is neither an export folder nor a job"),
        (refuse_no_data, r"error: invalid sft job config: data: Field required"),
        (refuse_bad_yaml_file, r"error: .*list.yaml: expected a mapping of sft config keys"),
    ],
)  # fmt: skip
def test_cai_train_refusals_are_one_line_errors_and_start_nothing(
    capsys, train_home, tmp_path, tiny_model_dir, make, message
):
    import re

    from tests.runners import runner_pids

    args = make(tmp_path, f"hf:{tiny_model_dir}")
    rc, out, err = cai(capsys, "train", "sft", *args)
    assert (rc, out) == (1, "")
    assert re.match(message, err), err
    assert err.count("\n") == 1
    assert Store().job_rows() == []
    assert runner_pids(train_home) == []


def test_train_flags_are_known_after_any_global_options(
    capsys, train_home, tmp_path, tiny_model_dir
):
    from cai_engine.errors import CaiError

    missing = str(tmp_path / "nowhere")
    train = ["train", "sft", "--data", missing, "--model", f"hf:{tiny_model_dir}"]
    # one global option first: the flags are known, and the submit check refuses the folder
    rc, _, err = cai(capsys, "--home", str(train_home), *train)
    assert rc == 1 and "neither an export folder nor a job" in err
    # two: with --debug the refusal is raised, not printed; the flags must still be known
    with pytest.raises(CaiError, match="neither an export folder nor a job"):
        main(["--home", str(train_home), "--debug", *train])


def test_jobs_cancel_leaves_the_grace_to_the_job_kind_unless_given(monkeypatch, cai_home):
    # A training job needs minutes to write its checkpoint on SIGTERM; a fixed 10 s grace in the
    # CLI used to override that and SIGKILL it mid-write.
    asked = []

    def cancel(store, job_id, grace=None):
        asked.append((job_id, grace))
        return types.SimpleNamespace(id=job_id, status="cancelled")

    monkeypatch.setattr(jobs, "cancel", cancel)
    main(["jobs", "cancel", "sft-1"])
    main(["jobs", "cancel", "sft-2", "--grace", "3"])
    assert asked == [("sft-1", None), ("sft-2", 3.0)]


# -- cai jobs list with many jobs -------------------------------------------------------------


def listed_ids(out: str) -> list[str]:
    """The ids of `cai jobs list`'s table (the rows under the header and its rule)."""
    return [line.split()[0] for line in out.splitlines()[2:] if not line.startswith("showing ")]


def test_jobs_list_shows_the_newest_50_and_says_how_many_there_are(store, capsys):
    from tests.test_jobs import many_id, many_jobs

    many_jobs(store, 120)
    rc, out, _ = cai(capsys, "jobs", "list")
    assert rc == 0
    assert listed_ids(out) == [many_id(i) for i in range(119, 69, -1)]
    assert out.splitlines()[-1] == "showing 50 of 120 jobs (newest first; --limit to see more)"

    rc, out, _ = cai(capsys, "jobs", "list", "--limit", "120")
    assert len(listed_ids(out)) == 120 and "showing" not in out  # all of them: nothing to say

    # eval (i % 3 == 1) and failed (i % 4 == 1): i % 12 == 1 -> 1, 13, ..., 109: 10 jobs
    rc, out, _ = cai(capsys, "jobs", "list", "--kind", "eval", "--status", "failed", "--limit", "4")
    assert listed_ids(out) == [many_id(i) for i in (109, 97, 85, 73)]
    assert out.splitlines()[-1] == "showing 4 of 10 jobs (newest first; --limit to see more)"
    # two statuses: failed or cancelled (i % 4 in (1, 2)) of kind eval: i % 12 in (1, 10): 20
    rc, out, _ = cai(
        capsys, "jobs", "list", "--kind", "eval", "--status", "failed", "--status", "cancelled"
    )
    assert len(listed_ids(out)) == 20 and "showing" not in out


@pytest.mark.parametrize(
    "argv, error",
    [
        (["--kind", "evals"], "error: --kind: no job kind 'evals'; known kinds: critique, demo,"),
        (["--limit", "0"], "error: --limit: 0; show at least 1 job"),
    ],
)
def test_jobs_list_refuses_a_bad_filter_in_one_line(store, capsys, argv, error):
    rc, out, err = cai(capsys, "jobs", "list", *argv)
    assert (rc, out) == (1, "")
    assert err.startswith(error) and err.count("\n") == 1


def test_jobs_list_offers_only_real_statuses(store, capsys):
    with pytest.raises(SystemExit):
        main(["jobs", "list", "--status", "done"])
    assert "invalid choice: 'done'" in capsys.readouterr().err
    from cai_engine.cli.jobs import STATUSES

    assert set(STATUSES) == {*jobs.ACTIVE, *jobs.TERMINAL}
