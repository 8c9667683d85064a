"""Exports of a critique job: SFT and preference data in TRL's formats, with a manifest.

One real tiny-model critique job is run per module. Two of its four traces are then edited in
the store to show the cases an export must skip and count: one whose final revision repeats
its initial answer (what `skip_unchanged` writes) and one whose final revision is empty.
Every example is checked with TRL's own `trl.data_utils` helpers and the real tokenizer.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from cai_engine import critique, export, jobs
from cai_engine.bundled import install_bundled
from cai_engine.cli import main
from cai_engine.errors import CaiError, NotFoundError
from cai_engine.models import parse_spec
from cai_engine.store import Store
from tests.runners import kill_runners

DEADLINE = 90.0


def finish(store, job_id: str) -> jobs.Job:
    job = jobs.wait(store, job_id, timeout=DEADLINE, poll=0.2)
    assert job.status not in jobs.ACTIVE, f"{job_id} still {job.status} after {DEADLINE:.0f}s"
    return job


class Finished:
    """The module's finished critique job, its traces by prompt, and which were edited."""

    def __init__(self, store: Store, job_id: str, unchanged: str, empty: str):
        self.store, self.job_id, self.home = store, job_id, store.home
        self.unchanged, self.empty = unchanged, empty  # prompt ids of the two edited traces
        self.traces: dict[str, list[dict]] = {}
        for r in store.traces(job_id):  # in step order
            self.traces.setdefault(r["prompt_id"], []).append(r)
        self.changed = sorted(set(self.traces) - {unchanged, empty})

    def text(self, prompt_id: str, round_: int, step: str) -> str:
        (row,) = [r for r in self.traces[prompt_id] if (r["round"], r["step"]) == (round_, step)]
        return row["text"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_spec) -> Finished:
    home = tmp_path_factory.mktemp("export-home")
    store = Store(home, lock_timeout=5)
    install_bundled(store)
    config = {
        "constitution": "harmless",
        "prompts": "red-team:train",
        "model": tiny_spec,
        "limit": 4,
        "rounds": 2,
        "sampling": {"max_new_tokens": 8},
    }
    try:
        job = finish(store, critique.submit(store, config).id)
    finally:
        kill_runners(home)
    assert job.status == "succeeded", job.error
    rows = store.traces(job.id)
    assert len(rows) == 4 * 5
    # The tiny model's gibberish is never empty, and no revision repeats the initial answer
    # (rows come five to a trace, in step order: initial, critique, revision, ...).
    assert all(r["text"].strip() for r in rows)
    for t in range(0, 20, 5):
        assert rows[t]["text"] not in (rows[t + 2]["text"], rows[t + 4]["text"])
    unchanged, empty = sorted({r["prompt_id"] for r in rows})[2:]
    (initial,) = [r["text"] for r in rows if (r["prompt_id"], r["round"]) == (unchanged, 0)]
    edit = (
        "UPDATE traces SET text = ?, flags = ?"
        " WHERE job_id = ? AND prompt_id = ? AND round = 2 AND step = 'revision'"
    )
    with store.connect() as con:
        con.rows(edit, [initial, "skipped", job.id, unchanged])  # as skip_unchanged writes it
        con.rows(edit, ["", "empty", job.id, empty])
    return Finished(store, job.id, unchanged, empty)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def load(out: Path, fmt: str, cache: Path) -> list[dict]:
    """The exported examples, read back with `datasets` as a trainer would."""
    import datasets

    if fmt == "jsonl":
        ds = datasets.load_dataset(
            "json", data_files=str(out / "data.jsonl"), split="train", cache_dir=str(cache)
        )
    elif fmt == "parquet":
        ds = datasets.load_dataset(
            "parquet", data_files=str(out / "data.parquet"), split="train", cache_dir=str(cache)
        )
    else:
        ds = datasets.load_from_disk(str(out / "dataset"))
    return ds.to_list()


def check_sft_with_trl(example: dict, tokenizer) -> str:
    from trl.data_utils import apply_chat_template, is_conversational, maybe_apply_chat_template

    assert is_conversational(example)
    rendered = maybe_apply_chat_template(example, tokenizer)
    assert rendered == apply_chat_template(example, tokenizer)
    assert set(rendered) == {"text"}
    last = example["messages"][-1]
    assert last["role"] == "assistant"
    assert rendered["text"].endswith(f"<|im_start|>assistant\n{last['content']}<|im_end|>\n")
    return rendered["text"]


# -- SFT -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_sft_export_has_the_final_revision_as_the_last_assistant_turn(
    finished, tokenizer, tmp_path, fmt
):
    out = tmp_path / "sft"
    result = export.export_sft(finished.store, finished.job_id, out, fmt=fmt, command="cai test")

    # 4 traces; the one whose final revision is empty is skipped and counted.
    assert (result.kind, result.examples) == ("sft", 3)
    assert result.skipped == {"incomplete traces": 0, "empty revisions": 1}
    assert result.summary() == f"3 sft examples in {out} (skipped: 1 empty revisions)"
    files = {"jsonl": ["data.jsonl"], "parquet": ["data.parquet"], "hf": ["dataset"]}[fmt]
    assert sorted(os.listdir(out)) == sorted(files + ["manifest.json"])
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())

    examples = load(out, fmt, tmp_path / "hf-cache")
    assert len(examples) == 3
    by_prompt = {e["prompt_id"]: e for e in examples}
    assert set(by_prompt) == {*finished.changed, finished.unchanged}
    for prompt_id, e in by_prompt.items():
        final = finished.text(prompt_id, 2, "revision")
        prompt = finished.traces[prompt_id][0]["prompt_messages"]
        assert e["messages"] == prompt + [{"role": "assistant", "content": final}]
        assert (e["round"], e["principle_id"]) == (
            2,
            finished.traces[prompt_id][4]["principle_id"],
        )
        check_sft_with_trl(e, tokenizer)


def test_sft_all_rounds_gives_one_example_per_rounds_revision(finished, tokenizer, tmp_path):
    result = export.export_sft(finished.store, finished.job_id, tmp_path / "all", all_rounds=True)

    # 4 traces x 2 rounds, less the one empty final revision.
    assert result.examples == 7
    assert result.skipped == {"incomplete traces": 0, "empty revisions": 1}
    assert result.manifest["all_rounds"] is True
    examples = read_jsonl(tmp_path / "all" / "data.jsonl")
    assert sorted((e["prompt_id"], e["round"]) for e in examples) == sorted(
        [(p, r) for p in finished.traces for r in (1, 2) if (p, r) != (finished.empty, 2)]
    )
    for e in examples:
        assert e["messages"][-1] == {
            "role": "assistant",
            "content": finished.text(e["prompt_id"], e["round"], "revision"),
        }
        assert e["messages"][:-1] == finished.traces[e["prompt_id"]][0]["prompt_messages"]
        check_sft_with_trl(e, tokenizer)


# -- preferences ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_prefs_from_revisions_choose_the_final_revision_over_the_initial_answer(
    finished, tokenizer, tmp_path, fmt
):
    from trl.data_utils import apply_chat_template, is_conversational, maybe_apply_chat_template

    out = tmp_path / "prefs"
    result = export.export_prefs_from_revisions(finished.store, finished.job_id, out, fmt=fmt)

    # Of 4 traces, one's final revision repeats its answer and one's is empty: 2 pairs.
    assert (result.kind, result.examples) == ("prefs", 2)
    assert result.skipped == {"incomplete traces": 0, "unchanged or empty": 2}
    examples = load(out, fmt, tmp_path / "hf-cache")
    assert sorted(e["prompt_id"] for e in examples) == sorted(finished.changed)
    for e in examples:
        trace = finished.traces[e["prompt_id"]]
        final, initial = finished.text(e["prompt_id"], 2, "revision"), trace[0]["text"]
        assert e["prompt"] == trace[0]["prompt_messages"]
        assert e["chosen"] == [{"role": "assistant", "content": final}]
        assert e["rejected"] == [{"role": "assistant", "content": initial}]
        assert e["principles"] == f"{trace[2]['principle_id']},{trace[4]['principle_id']}"

        assert is_conversational(e)
        rendered = maybe_apply_chat_template(e, tokenizer)
        assert rendered == apply_chat_template(e, tokenizer)
        assert set(rendered) == {"prompt", "chosen", "rejected"}
        assert all(isinstance(v, str) for v in rendered.values())
        assert rendered["prompt"].endswith("<|im_start|>assistant\n")
        assert rendered["chosen"] == f"{final}<|im_end|>\n"
        assert rendered["rejected"] == f"{initial}<|im_end|>\n"


# -- the manifest --------------------------------------------------------------------------


def test_the_manifest_says_where_the_data_came_from(finished, tmp_path, tiny_spec):
    version = finished.store.get_version("harmless")
    export.export_sft(finished.store, finished.job_id, tmp_path / "sft", command="cai export sft x")
    export.export_prefs_from_revisions(
        finished.store, finished.job_id, tmp_path / "prefs", fmt="parquet", command="cai export p"
    )
    sft = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    prefs = json.loads((tmp_path / "prefs" / "manifest.json").read_text())

    for m in (sft, prefs):
        assert m["job"] == finished.job_id
        assert (m["constitution"], m["constitution_hash"]) == ("harmless", version.hash)
        assert m["model"] == str(parse_spec(tiny_spec))
        assert m["prompt_set"] == "red-team"
        assert m["created_at"]
    assert (sft["kind"], sft["format"], sft["files"]) == ("sft", "jsonl", ["data.jsonl"])
    assert sft["command"] == "cai export sft x"
    assert sft["all_rounds"] is False
    assert sft["counts"] == {
        "examples": 3,
        "traces": 4,
        "skipped incomplete traces": 0,
        "skipped empty revisions": 1,
    }
    assert (prefs["kind"], prefs["format"], prefs["files"]) == (
        "prefs",
        "parquet",
        ["data.parquet"],
    )
    assert prefs["command"] == "cai export p"
    assert (prefs["source"], prefs["chosen"], prefs["rejected"]) == (
        "revisions",
        "final revision",
        "initial answer",
    )
    assert prefs["counts"] == {
        "examples": 2,
        "traces": 4,
        "skipped incomplete traces": 0,
        "skipped unchanged or empty": 2,
    }


# -- skipping, from rows -------------------------------------------------------------------


def test_incomplete_traces_are_skipped_and_counted(finished):
    rows = [r for trace in finished.traces.values() for r in trace]
    # The first trace has only its initial answer and round 1's critique so far.
    first = sorted(finished.traces)[0]
    partial = [r for r in rows if r["prompt_id"] != first or r["step"] != "revision"]

    examples, skipped = export.sft_examples(partial)
    assert len(examples) == 2 and first not in {e["prompt_id"] for e in examples}
    assert skipped == {"incomplete traces": 1, "empty revisions": 1}

    pairs, skipped = export.prefs_from_revisions(partial)
    assert [p["prompt_id"] for p in pairs] == [finished.changed[1]]
    assert skipped == {"incomplete traces": 1, "unchanged or empty": 2}


# -- refusals ------------------------------------------------------------------------------


def test_an_export_into_a_non_empty_folder_is_refused_and_nothing_is_overwritten(
    finished, tmp_path
):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(CaiError, match=r"already exists and is not empty; choose another --out"):
        export.export_sft(finished.store, finished.job_id, out)
    assert os.listdir(out) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes"
    assert sorted(os.listdir(tmp_path)) == ["mine"]  # no half-written export beside it

    # An earlier export is not overwritten either, not even by another kind of export.
    done = tmp_path / "done"
    export.export_sft(finished.store, finished.job_id, done)
    before = {p.name: p.read_bytes() for p in done.iterdir()}
    with pytest.raises(CaiError, match="already exists and is not empty"):
        export.export_prefs_from_revisions(finished.store, finished.job_id, done, fmt="parquet")
    assert {p.name: p.read_bytes() for p in done.iterdir()} == before

    # --force replaces it whole.
    export.export_prefs_from_revisions(
        finished.store, finished.job_id, done, fmt="parquet", force=True
    )
    assert sorted(os.listdir(done)) == ["data.parquet", "manifest.json"]
    assert json.loads((done / "manifest.json").read_text())["kind"] == "prefs"


def test_an_empty_existing_folder_is_used(finished, tmp_path):
    (tmp_path / "empty").mkdir()
    result = export.export_sft(finished.store, finished.job_id, tmp_path / "empty")
    assert result.examples == 3
    assert sorted(os.listdir(tmp_path / "empty")) == ["data.jsonl", "manifest.json"]


def test_an_unknown_format_is_refused(finished, tmp_path):
    with pytest.raises(
        CaiError, match="unknown export format 'csv'; use one of jsonl, parquet, hf"
    ):
        export.export_sft(finished.store, finished.job_id, tmp_path / "x", fmt="csv")
    assert not (tmp_path / "x").exists()


def test_a_job_that_is_not_a_critique_job_is_refused(finished, tmp_path):
    tick = jobs.submit(finished.store, "tick", {"total": 1, "delay_s": 0})
    try:
        finish(finished.store, tick.id)
    finally:
        kill_runners(finished.home)
    with pytest.raises(
        CaiError, match=rf"job {tick.id} is a tick job; this export needs a critique job"
    ):
        export.export_sft(finished.store, tick.id, tmp_path / "x")
    with pytest.raises(CaiError, match="is a tick job"):
        export.export_prefs_from_revisions(finished.store, tick.id, tmp_path / "x")
    with pytest.raises(CaiError, match="is a tick job"):
        export.bundle(finished.store, tick.id, "sft")
    with pytest.raises(NotFoundError, match="no job 'critique-nope'"):
        export.export_sft(finished.store, "critique-nope", tmp_path / "x")
    assert not (tmp_path / "x").exists()


# -- the download bundle -------------------------------------------------------------------


@pytest.mark.parametrize("kind, examples", [("sft", 3), ("prefs", 2)])
def test_bundle_is_a_zip_of_data_and_manifest(finished, kind, examples):
    with zipfile.ZipFile(io.BytesIO(export.bundle(finished.store, finished.job_id, kind))) as zf:
        assert sorted(zf.namelist()) == ["data.jsonl", "manifest.json"]
        lines = zf.read("data.jsonl").decode("utf-8").splitlines()
        manifest = json.loads(zf.read("manifest.json"))
    assert len(lines) == examples
    assert all(json.loads(line)["prompt_id"] for line in lines)
    assert (manifest["kind"], manifest["job"]) == (kind, finished.job_id)
    assert (manifest["command"], manifest["format"], manifest["files"]) == (
        "studio download",
        "jsonl",
        ["data.jsonl"],
    )
    assert manifest["counts"]["examples"] == examples


def test_bundle_all_rounds(finished):
    data = export.bundle(finished.store, finished.job_id, "sft", all_rounds=True)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert len(zf.read("data.jsonl").decode("utf-8").splitlines()) == 7


# -- the CLI -------------------------------------------------------------------------------


def cai(capsys, home: Path, *args: str) -> tuple[int, str, str]:
    rc = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_export_sft_and_prefs(finished, tmp_path, capsys):
    home, job = finished.home, finished.job_id
    rc, out, err = cai(capsys, home, "export", "sft", "--job", job, "--out", str(tmp_path / "s"))
    assert (rc, err) == (0, "")
    assert out == f"3 sft examples in {tmp_path / 's'} (skipped: 1 empty revisions)\n"
    assert len(read_jsonl(tmp_path / "s" / "data.jsonl")) == 3

    rc, out, err = cai(
        capsys, home, "export", "sft", "--job", job, "--all-rounds", "--format", "parquet",
        "--out", str(tmp_path / "a"),
    )  # fmt: skip
    assert (rc, err) == (0, "")
    assert out.startswith("7 sft examples in ")
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["format"] == "parquet"

    rc, out, err = cai(
        capsys, home, "export", "prefs", "--job", job, "--from-revisions",
        "--out", str(tmp_path / "p"),
    )  # fmt: skip
    assert (rc, err) == (0, "")
    assert out == f"2 prefs examples in {tmp_path / 'p'} (skipped: 2 unchanged or empty)\n"
    assert len(read_jsonl(tmp_path / "p" / "data.jsonl")) == 2

    # The default folder is <home>/exports/<job>-sft.
    rc, out, _ = cai(capsys, home, "export", "sft", "--job", job)
    assert rc == 0 and (home / "exports" / f"{job}-sft" / "data.jsonl").exists()


def test_cli_export_refusals_are_one_line_errors(finished, tmp_path, capsys):
    home, job = finished.home, finished.job_id
    rc, out, err = cai(capsys, home, "export", "prefs", "--job", job, "--out", str(tmp_path / "p"))
    assert (rc, out) == (1, "")
    assert err == (
        "error: say where preferences come from: --from-revisions (chosen = final revision, "
        "rejected = initial answer)\n"
    )
    assert not (tmp_path / "p").exists()

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    rc, out, err = cai(capsys, home, "export", "sft", "--job", job, "--out", str(tmp_path / "full"))
    assert (rc, out) == (1, "")
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    assert os.listdir(tmp_path / "full") == ["keep"]


def test_cli_export_records_the_command_it_was_given(finished, tmp_path, capsys):
    out = tmp_path / "s"
    args = [
        "--home",
        str(finished.home),
        "export",
        "sft",
        "--job",
        finished.job_id,
        "--out",
        str(out),
    ]
    assert main(args) == 0
    capsys.readouterr()
    assert json.loads((out / "manifest.json").read_text())["command"] == " ".join(["cai", *args])
