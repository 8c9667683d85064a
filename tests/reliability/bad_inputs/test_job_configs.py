"""Bad job configs, training data and export paths: refused before anything starts or is
written, with the key (or file, or folder) named, and the user's files and jobs left alone.

Paths outside the data home: `--out` and `--data` are ordinary command-line paths, so a path
outside the home is allowed and used exactly as given (reading /etc finds no training data
there and says so). What must never happen is that a path, or a name that should be a plain
slug, reaches outside its folder by accident, or that an export replaces a folder that holds
something other than an earlier export.
"""

from __future__ import annotations

import json
import re

import pytest

from cai_engine import jobs
from cai_engine.home import db_path, models_dir
from cai_engine.jobs import JobConfigError
from cai_engine.models import ModelError, parse_spec
from tests.reliability.bad_inputs.support import (
    cli,
    constitution_rows,
    finished_critique_job,
    job_rows,
    prompt_rows,
    run_folders,
    tree_digest,
)

# -- validate_config ---------------------------------------------------------------------

# (kind, config, what the message must name)
BAD_CONFIGS = [
    pytest.param("tick", {"total": 5, "totl": 6}, "unknown key 'totl' (allowed: total, shard_size,", id="tick-unknown-key"),
    pytest.param("tick", {"total": -1}, "total: Input should be greater than 0", id="tick-negative-total"),
    pytest.param("tick", {"shard_size": 0}, "shard_size: Input should be greater than 0", id="tick-zero-shard-size"),
    pytest.param("tick", {"delay_s": -0.5}, "delay_s: Input should be greater than or equal to 0", id="tick-negative-delay"),
    pytest.param("tick", {"total": "lots"}, "total: Input should be a valid integer", id="tick-total-is-text"),
    pytest.param("tick", {"total": 2.5}, "total: Input should be a valid integer, got a number with a fractional part", id="tick-total-fraction"),
    pytest.param("generate", {"prompts": "kept", "limit": -3}, "limit: Input should be greater than 0", id="generate-negative-limit"),
    pytest.param("generate", {"prompts": "kept", "samples": 0}, "samples: Input should be greater than or equal to 1", id="generate-zero-samples"),
    pytest.param("generate", {"prompts": "kept", "sampling": {"max_new_tokens": -5}}, "sampling.max_new_tokens: Input should be greater than 0", id="generate-negative-max-new-tokens"),
    pytest.param("generate", {"prompts": "kept", "sampling": {"tempreature": 0.5}}, "unknown key 'sampling.tempreature'", id="generate-nested-unknown-key"),
    pytest.param("generate", {"limit": 2}, "prompts: Field required", id="generate-missing-prompts"),
    pytest.param("critique", {"constitution": "mine", "prompts": "kept", "rounds": -2}, "rounds: Input should be greater than or equal to 1", id="critique-negative-rounds"),
    pytest.param("sft", {"data": "/tmp", "batch_size": -4}, "batch_size: Input should be greater than or equal to 1", id="sft-negative-batch-size"),
    pytest.param("sft", {"data": "/tmp", "epochs": -1}, "epochs: Input should be greater than 0", id="sft-negative-epochs"),
    pytest.param("sft", {"data": "/tmp", "name": "../../escape"}, "name: String should match pattern", id="sft-name-with-dot-dot"),
    pytest.param("sft", {"data": "/tmp", "model": "openai:m?base_url=http://h/v1"}, "only a local model can be trained", id="sft-openai-base-model"),
    pytest.param("sft", {"data": "/tmp", "lr": 0.1}, "unknown key 'lr'", id="sft-unknown-key"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "config", "says"), BAD_CONFIGS)
def test_validate_config_names_the_key_and_the_problem(kind, config, says):
    with pytest.raises(JobConfigError) as caught:
        jobs.validate_config(kind, config)
    message = str(caught.value)
    assert message.startswith(f"invalid {kind} job config: ")
    assert says in message, message


def test_an_unknown_model_spec_is_refused_listing_the_valid_forms():
    with pytest.raises(ModelError) as caught:
        jobs.validate_config("generate", {"prompts": "kept", "model": "gpt-17"})
    assert str(caught.value).startswith("unknown model spec 'gpt-17'; use ")
    assert "openai:<model>?base_url=<url>" in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "config", "says"),
    [p for p in BAD_CONFIGS if p.id in {"tick-unknown-key", "generate-negative-limit"}],
)
def test_submit_with_a_bad_config_records_and_starts_nothing(
    cai_home, user_store, kind, config, says
):
    before = (job_rows(user_store), run_folders(cai_home))
    with pytest.raises(JobConfigError, match=re.escape(says)):
        jobs.submit(user_store, kind, config)
    assert (job_rows(user_store), run_folders(cai_home)) == before


@pytest.mark.parametrize(
    "spec",
    ["model:../../outside", "model:../x", "model:a/../../b"],
)
def test_a_trained_model_name_cannot_leave_the_models_folder(spec):
    with pytest.raises(ModelError) as caught:
        parse_spec(spec)
    assert spec.removeprefix("model:") in str(caught.value)


# -- `cai jobs submit` ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--set", "total=-3"], "error: invalid tick job config: total: Input should be greater than 0"),
        (["--set", "total=5", "--set", "shard_sise=2"], "error: invalid tick job config: unknown key 'shard_sise'"),
        (["--set", "total"], "error: --set expects KEY=VALUE, got 'total'"),
        (["--set", "=5"], "error: --set expects KEY=VALUE, got '=5'"),
        (["--set", "total=[1, 2]"], "error: invalid tick job config: total: Input should be a valid integer"),
    ],
    ids=["negative-total", "misspelt-key", "no-equals", "no-key", "list-value"],
)  # fmt: skip
def test_cli_submit_refuses_a_bad_set_and_starts_nothing(capsys, cai_home, user_store, argv, says):
    before = (job_rows(user_store), run_folders(cai_home))
    code, out, err = cli(capsys, "jobs", "submit", "tick", *argv)
    assert code == 1 and out == ""
    assert err.startswith(says), err
    assert (job_rows(user_store), run_folders(cai_home)) == before


def alias_bomb_config() -> str:
    lines = ['a0: &a0 ["x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\ntotal: *a9\n"


CONFIG_FILES = [
    pytest.param(b"- total\n- 5\n", ["error: {p}: expected a mapping of config keys"], id="a-list"),
    pytest.param(b"\x00\x01\x02", ["error: {p}: this looks like a binary file"], id="binary"),
    pytest.param(b"", ["error: {p}: the file is empty"], id="empty"),
    pytest.param(b"total: caf\xe9\n", ["error: {p}:1: not valid UTF-8"], id="latin-1"),
    pytest.param(
        alias_bomb_config().encode(),
        ["error: invalid tick job config: total: Input should be a valid integer"],
        id="alias-bomb",
    ),
    pytest.param(
        b"total: 5\nshard_size: [1,\n",
        ["error: {p}:", "line 3"],
        id="yaml-syntax-error",
    ),
]


@pytest.mark.parametrize(("data", "says"), CONFIG_FILES)
def test_cli_submit_refuses_a_bad_config_file_naming_it(
    capsys, tmp_path, cai_home, user_store, data, says
):
    path = tmp_path / "job.yaml"
    path.write_bytes(data)
    before = (job_rows(user_store), run_folders(cai_home))
    code, out, err = cli(capsys, "jobs", "submit", "tick", "--config", str(path))
    assert code == 1
    assert "run with --debug" not in err, err[:500]
    for part in says:
        assert part.format(p=path) in err, err[:1000]
    assert (job_rows(user_store), run_folders(cai_home)) == before


# -- training data ------------------------------------------------------------------------


@pytest.fixture
def base_model(tmp_path) -> str:
    """A local base model folder that passes the submit checks (nothing loads it)."""
    folder = tmp_path / "base-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return f"hf:{folder}"


def export_folder(tmp_path, name: str, files: dict[str, bytes]):
    folder = tmp_path / name
    folder.mkdir()
    for fname, data in files.items():
        (folder / fname).write_bytes(data)
    return folder


SFT_LINE = json.dumps(
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
).encode()

TRAINING_DATA = [
    pytest.param(
        lambda tmp: "/etc",
        ["error: /etc holds no data.jsonl, data.parquet or dataset/ folder"],
        id="data-is-etc",
    ),
    pytest.param(
        lambda tmp: "/etc/hostname",
        ["error: --data '/etc/hostname' is neither an export folder nor a job"],
        id="data-is-a-system-file",
    ),
    pytest.param(
        lambda tmp: str(export_folder(tmp, "x", {"data.jsonl": SFT_LINE + b"\n{oops\n"})),
        ["error: {tmp}/x/data.jsonl:2: not valid JSON"],
        id="data-jsonl-malformed-line",
    ),
    pytest.param(
        lambda tmp: str(export_folder(tmp, "x", {"data.jsonl": b'{"prompt": "Hi"}\n'})),
        ["error: {tmp}/x: example 1 has no 'messages' (it has: prompt)"],
        id="data-wrong-format",
    ),
    pytest.param(
        lambda tmp: str(
            export_folder(
                tmp, "x", {"data.jsonl": SFT_LINE + b"\n" + "café".encode("latin-1") + b"\n"}
            )
        ),
        ["error: {tmp}/x/data.jsonl:2:", "UTF-8"],
        id="data-jsonl-latin-1",
    ),  # fmt: skip
    pytest.param(
        lambda tmp: str(
            export_folder(tmp, "x", {"data.jsonl": SFT_LINE + b"\n", "manifest.json": b'{"kind": '})
        ),
        ["error: {tmp}/x/manifest.json", "JSON"],
        id="data-manifest-malformed",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("make_data", "says"), TRAINING_DATA)
def test_training_refuses_bad_data_naming_it_and_starts_nothing(
    capsys, tmp_path, cai_home, user_store, base_model, make_data, says
):
    data = make_data(tmp_path)
    before = (job_rows(user_store), run_folders(cai_home))
    code, out, err = cli(capsys, "train", "sft", "--model", base_model, "--data", data)
    assert code == 1
    assert "run with --debug" not in err, err[:500]
    for part in says:
        assert part.format(tmp=tmp_path) in err, err[:1000]
    assert (job_rows(user_store), run_folders(cai_home)) == before
    assert not models_dir(cai_home).exists()


def test_a_trained_model_name_with_dot_dot_is_refused(
    capsys, tmp_path, cai_home, user_store, base_model
):
    data = export_folder(tmp_path, "x", {"data.jsonl": SFT_LINE + b"\n"})
    code, _, err = cli(
        capsys, "train", "sft", "--model", base_model, "--data", str(data), "--set", "name=../../escape"
    )  # fmt: skip
    assert code == 1
    assert err.startswith("error: invalid sft job config: name: String should match pattern")
    assert job_rows(user_store) == [] and run_folders(cai_home) == []
    assert not (tmp_path / "escape").exists() and not (cai_home.parent / "escape").exists()


# -- export paths ---------------------------------------------------------------------------


@pytest.fixture
def critique_job(user_store) -> str:
    return finished_critique_job(user_store)


def test_export_out_with_dot_dot_is_written_exactly_there(
    capsys, tmp_path, monkeypatch, cai_home, user_store, critique_job
):
    cwd = tmp_path / "work" / "deep"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    before = (constitution_rows(user_store), prompt_rows(user_store), job_rows(user_store))

    code, out, err = cli(capsys, "export", "sft", "--job", critique_job, "--out", "../../sft-out")

    assert code == 0, err
    written = tmp_path / "sft-out"
    assert sorted(p.name for p in written.iterdir()) == ["data.jsonl", "manifest.json"]
    [example] = [json.loads(x) for x in (written / "data.jsonl").read_text().splitlines()]
    assert example["messages"][-1] == {"role": "assistant", "content": "A clearer answer."}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "sft-out", "work"]
    assert not list(cwd.iterdir())  # nothing left in the working folder (no temp folders)
    assert (constitution_rows(user_store), prompt_rows(user_store), job_rows(user_store)) == before


def test_export_into_a_folder_with_files_is_refused_and_keeps_them(
    capsys, tmp_path, user_store, critique_job
):
    folder = tmp_path / "my-notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("Do not lose me.")
    before = tree_digest(folder)
    code, _, err = cli(capsys, "export", "sft", "--job", critique_job, "--out", str(folder))
    assert code == 1
    assert err.startswith(
        f"error: {folder} already exists and is not empty; choose another --out or pass --force"
    )
    assert tree_digest(folder) == before


def test_export_onto_an_existing_file_is_refused_clearly(
    capsys, tmp_path, user_store, critique_job
):
    target = tmp_path / "report.txt"
    target.write_text("precious")
    code, _, err = cli(capsys, "export", "sft", "--job", critique_job, "--out", str(target))
    assert code == 1
    assert "run with --debug" not in err, err
    assert str(target) in err
    assert target.read_text() == "precious"


def test_force_does_not_delete_a_folder_that_is_not_an_export(
    capsys, tmp_path, user_store, critique_job
):
    folder = tmp_path / "my-notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("Do not lose me.")
    before = tree_digest(folder)
    code, _, err = cli(
        capsys, "export", "sft", "--job", critique_job, "--out", str(folder), "--force"
    )
    assert code == 1
    assert str(folder) in err and "not an export" in err
    assert tree_digest(folder) == before


def test_force_never_deletes_the_data_home(capsys, cai_home, user_store, critique_job):
    before = constitution_rows(user_store)
    code, _, err = cli(
        capsys, "export", "sft", "--job", critique_job, "--out", str(cai_home), "--force"
    )
    assert code == 1
    assert str(cai_home) in err
    assert db_path(cai_home).exists()
    assert constitution_rows(user_store) == before
    assert run_folders(cai_home) == [critique_job]


def test_export_of_a_job_that_is_not_a_critique_job_writes_nothing(
    capsys, tmp_path, user_store, critique_job
):
    user_store.insert_job("tick-20260101-000000-0001", "tick", {}, str(tmp_path / "r"), None)
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "export", "sft", "--job", "tick-20260101-000000-0001", "--out", str(out)
    )
    assert code == 1
    assert err.startswith(
        "error: job tick-20260101-000000-0001 is a tick job; this export needs a critique job"
    )
    assert not out.exists()


def test_export_of_an_unknown_job_says_so_and_writes_nothing(capsys, tmp_path, user_store):
    out = tmp_path / "out"
    code, _, err = cli(capsys, "export", "sft", "--job", "../../etc/passwd", "--out", str(out))
    assert code == 1
    assert err.startswith("error: no job '../../etc/passwd'")
    assert not out.exists()


def test_a_config_file_that_does_not_exist_is_named(capsys, tmp_path, user_store):
    missing = tmp_path / "nope.yaml"
    code, _, err = cli(capsys, "jobs", "submit", "tick", "--config", str(missing))
    assert code == 1
    assert err.startswith(f"error: {missing}: no such file")
