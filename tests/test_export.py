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


def test_drop_truncated_leaves_out_texts_cut_off_at_the_token_limit_and_counts_them(finished):
    rows = [dict(r) for trace in finished.traces.values() for r in trace]
    kept, _ = export.sft_examples(rows)
    # cut off: one trace's final revision, and another trace's initial answer only
    first, second = sorted({e["prompt_id"] for e in kept})[:2]
    final_of = {
        pid: max((r for r in rows if r["prompt_id"] == pid and r["step"] == "revision"),
                 key=lambda r: r["round"])
        for pid in (first, second)
    }  # fmt: skip
    for r in rows:
        r["finish_reason"] = "stop"
    final_of[first]["finish_reason"] = "length"
    next(r for r in rows if r["prompt_id"] == second and r["step"] == "initial")[
        "finish_reason"
    ] = "length"

    same, skipped = export.sft_examples(rows)  # off by default: nothing changes
    assert len(same) == len(kept) and export.CUT_OFF_SKIP not in skipped
    examples, skipped = export.sft_examples(rows, drop_truncated=True)
    assert {e["prompt_id"] for e in examples} == {e["prompt_id"] for e in kept} - {first}
    assert skipped[export.CUT_OFF_SKIP] == 1

    changed = {p["prompt_id"] for p in export.prefs_from_revisions(rows)[0]}
    pairs, skipped = export.prefs_from_revisions(rows, drop_truncated=True)
    left_out = changed & {first, second}  # either side cut off leaves the pair out
    assert {p["prompt_id"] for p in pairs} == changed - left_out
    assert skipped[export.CUT_OFF_SKIP] == len(left_out)


def test_a_cut_off_sft_export_says_so_in_its_manifest(finished, tmp_path):
    # 8 new tokens: every text of the tiny model stopped at the limit; keep one cut off
    first = finished.changed[0]
    update = "UPDATE traces SET finish_reason = ? WHERE job_id = ? AND prompt_id <> ?"
    with finished.store.connect() as con:
        con.rows(update, ["stop", finished.job_id, first])
    try:
        out = tmp_path / "sft"
        result = export.export_sft(finished.store, finished.job_id, out, drop_truncated=True)
    finally:
        with finished.store.connect() as con:
            con.rows(update, ["length", finished.job_id, first])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["drop_truncated"] is True
    assert manifest["counts"][f"skipped {export.CUT_OFF_SKIP}"] == 1
    assert result.examples == 2  # 4 traces: one empty, one cut off

    # with every text cut off, nothing is left, and the refusal says why
    with pytest.raises(CaiError, match="1 empty revisions, 3 cut off at the token limit"):
        export.export_sft(finished.store, finished.job_id, tmp_path / "none", drop_truncated=True)


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
        "rejected = initial answer), or --labels <label job>\n"
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


# -- preferences from AI labels (RL-CAI) ---------------------------------------------------


def ai_label(prompt_id, pair, p_ab, p_ba=None, principle="harm") -> dict:
    """A label row as `store.labels` returns it; `p_ab=None` is an unscored (overflow) pair."""
    from cai_engine.judge import combine

    c = combine(p_ab, p_ba) if p_ab is not None else None
    return {
        "job_id": "label-x",
        "pairs_job": "pairs-x",
        "prompt_set": "red-team",
        "prompt_id": prompt_id,
        "pair": pair,
        "principle_id": principle,
        "constitution": "harmless",
        "constitution_hash": "0" * 64,
        "model": "hf:tiny",
        "mode": "logprob",
        "p_a_ab": p_ab,
        "p_a_ba": p_ba,
        "soft_label": c.soft_label if c else None,
        "winner": c.winner if c else None,
        "confidence": c.confidence if c else None,
        "consistent": c.consistent if c else None,
        "flags": "" if c else "overflow",
        "response_a": f"answer A to {prompt_id}/{pair}",
        "response_b": f"answer B to {prompt_id}/{pair}",
        "prompt_messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"question {prompt_id}?"},
        ],
    }


def human(prompt_id, pair, verdict, reviewer="ann") -> dict:
    return {"prompt_id": prompt_id, "pair": pair, "reviewer": reviewer, "verdict": verdict}


def by_key(examples: list[dict]) -> dict[tuple[str, int], dict]:
    return {(e["prompt_id"], e["pair"]): e for e in examples}


def sides(e: dict) -> tuple[str, str]:
    return e["chosen"][0]["content"], e["rejected"][0]["content"]


def test_prefs_from_ai_labels_choose_the_ai_winner_with_its_probability(tokenizer):
    from trl.data_utils import apply_chat_template, is_conversational, maybe_apply_chat_template

    labels = [ai_label("p1", 0, 0.9, 0.7), ai_label("p2", 0, 0.2, 0.3, principle="honest")]
    examples, skipped = export.prefs_from_labels(labels, [])
    assert skipped == {"unscored": 0, "ties": 0, "inconsistent": 0, "below confidence": 0}
    a, b = examples
    assert sides(a) == ("answer A to p1/0", "answer B to p1/0")
    assert sides(b) == ("answer B to p2/0", "answer A to p2/0")  # the AI preferred B
    assert a["score"] == pytest.approx(0.8) and b["score"] == pytest.approx(0.75)
    assert a == {
        "prompt": labels[0]["prompt_messages"],
        "chosen": [{"role": "assistant", "content": "answer A to p1/0"}],
        "rejected": [{"role": "assistant", "content": "answer B to p1/0"}],
        "score": a["score"],
        "label_source": "ai",
        "principle_id": "harm",
        "consistent": True,
        "prompt_id": "p1",
        "pair": 0,
    }
    assert b["principle_id"] == "honest"

    for e in examples:
        assert is_conversational(e)
        rendered = maybe_apply_chat_template(e, tokenizer)
        assert rendered == apply_chat_template(e, tokenizer)
        assert set(rendered) == {"prompt", "chosen", "rejected"}
        assert rendered["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
        assert rendered["prompt"].endswith("<|im_start|>assistant\n")
        chosen, rejected = sides(e)
        assert (rendered["chosen"], rendered["rejected"]) == (
            f"{chosen}<|im_end|>\n",
            f"{rejected}<|im_end|>\n",
        )


def test_a_human_verdict_overrides_the_ai_label():
    labels = [
        ai_label("agree", 0, 0.9, 0.9),
        ai_label("flip", 0, 0.9, 0.9),  # AI: A; the human says B
        ai_label("flip", 1, 0.1, 0.1),  # AI: B; the human says A
        ai_label("latest", 0, 0.6, 0.6),
        ai_label("skipped", 0, 0.6, 0.6),
        ai_label("untouched", 0, 0.3, 0.3),
    ]
    reviews = [
        human("agree", 0, "A"),
        human("flip", 0, "B"),
        human("flip", 1, "A"),
        human("latest", 0, "A"),
        human("latest", 0, "B", reviewer="bob"),  # the most recent verdict by anyone counts
        human("skipped", 0, "skip"),  # a skip is no verdict: the AI label stays
    ]
    examples, _ = export.prefs_from_labels(labels, reviews)
    got = by_key(examples)
    assert len(examples) == 6
    for key, chosen_side in [
        (("agree", 0), "A"),
        (("flip", 0), "B"),
        (("flip", 1), "A"),
        (("latest", 0), "B"),
    ]:
        e = got[key]
        assert (e["label_source"], e["score"]) == ("human", 1.0), key
        assert sides(e)[0] == f"answer {chosen_side} to {key[0]}/{key[1]}", key
    for key, score in [(("skipped", 0), 0.6), (("untouched", 0), 0.7)]:
        assert (got[key]["label_source"], got[key]["score"]) == ("ai", pytest.approx(score))


def test_ties_are_kept_with_score_one_half_or_dropped():
    labels = [
        ai_label("ai-tie", 0, 0.5, 0.5),  # the AI's soft label is exactly 0.5
        ai_label("human-tie", 0, 0.9, 0.9),
        ai_label("both-bad", 0, 0.1, 0.1),
        ai_label("decided", 0, 0.9, 0.9),
    ]
    reviews = [human("human-tie", 0, "tie"), human("both-bad", 0, "both_bad")]
    examples, skipped = export.prefs_from_labels(labels, reviews)
    got = by_key(examples)
    assert len(examples) == 4 and skipped["ties"] == 0
    for prompt_id, source in [("ai-tie", "ai"), ("human-tie", "human"), ("both-bad", "human")]:
        e = got[(prompt_id, 0)]
        assert (e["score"], e["label_source"]) == (0.5, source)
        assert sides(e) == (f"answer A to {prompt_id}/0", f"answer B to {prompt_id}/0")

    examples, skipped = export.prefs_from_labels(
        labels, reviews, export.PrefFilters(drop_ties=True)
    )
    assert [e["prompt_id"] for e in examples] == ["decided"]
    assert skipped == {"unscored": 0, "ties": 3, "inconsistent": 0, "below confidence": 0}


def test_the_consistency_and_confidence_filters_apply_to_ai_labels_only():
    labels = [
        ai_label("inconsistent", 0, 0.9, 0.3),
        ai_label("inconsistent-reviewed", 0, 0.9, 0.3),
        ai_label("one-order", 0, 0.95),  # consistency unknown: kept
        ai_label("unsure", 0, 0.55, 0.55),  # confidence 0.1
        ai_label("unsure-reviewed", 0, 0.45, 0.45),
        ai_label("sure", 0, 0.1, 0.1),  # confidence 0.8
    ]
    reviews = [human("inconsistent-reviewed", 0, "B"), human("unsure-reviewed", 0, "A")]

    examples, skipped = export.prefs_from_labels(
        labels, reviews, export.PrefFilters(drop_inconsistent=True)
    )
    assert {e["prompt_id"] for e in examples} == {r["prompt_id"] for r in labels} - {"inconsistent"}
    assert skipped == {"unscored": 0, "ties": 0, "inconsistent": 1, "below confidence": 0}
    e = by_key(examples)[("inconsistent-reviewed", 0)]
    assert (e["label_source"], e["consistent"], sides(e)[0]) == (
        "human",
        False,
        "answer B to inconsistent-reviewed/0",
    )

    examples, skipped = export.prefs_from_labels(
        labels, reviews, export.PrefFilters(min_confidence=0.5)
    )
    assert {e["prompt_id"] for e in examples} == {
        "inconsistent-reviewed",
        "one-order",
        "unsure-reviewed",
        "sure",
    }
    assert skipped == {"unscored": 0, "ties": 0, "inconsistent": 0, "below confidence": 2}
    assert all(e["score"] >= 0.75 for e in examples)

    _, skipped = export.prefs_from_labels(
        labels, reviews, export.PrefFilters(drop_inconsistent=True, min_confidence=0.5)
    )
    assert skipped == {"unscored": 0, "ties": 0, "inconsistent": 1, "below confidence": 1}


def test_drop_truncated_leaves_out_pairs_with_a_cut_off_answer_even_reviewed():
    labels = [ai_label("whole", 0, 0.9), ai_label("cut-a", 0, 0.9), ai_label("cut-b", 0, 0.2)]
    labels[1]["pair_flags"], labels[2]["pair_flags"] = "a_cut_off", "identical,b_cut_off"
    reviews = [human("cut-b", 0, "A")]
    examples, skipped = export.prefs_from_labels(labels, reviews)
    assert len(examples) == 3 and export.CUT_OFF_SKIP not in skipped
    examples, skipped = export.prefs_from_labels(
        labels, reviews, export.PrefFilters(drop_truncated=True)
    )
    assert [e["prompt_id"] for e in examples] == ["whole"]
    assert skipped[export.CUT_OFF_SKIP] == 2


def test_the_score_is_the_probability_that_chosen_is_better():
    for p in (0.0, 0.01, 0.3, 0.5, 0.51, 0.99, 1.0):
        ((e,), _) = export.prefs_from_labels([ai_label("p", 0, p)], [])
        assert e["score"] == pytest.approx(max(p, 1 - p))
        assert 0.5 <= e["score"] <= 1.0


def test_unscored_labels_are_skipped_and_counted():
    labels = [ai_label("over", 0, None), ai_label("over", 1, None), ai_label("ok", 0, 0.8)]
    examples, skipped = export.prefs_from_labels(labels, [])
    assert [e["prompt_id"] for e in examples] == ["ok"]
    assert skipped == {"unscored": 2, "ties": 0, "inconsistent": 0, "below confidence": 0}


class Labelled:
    """The module's finished pairs and label jobs (tiny model, 4 prompts, 2 answers each)."""

    def __init__(self, store: Store, pairs_job: str, labels_job: str):
        self.store, self.home = store, store.home
        self.pairs_job, self.labels_job = pairs_job, labels_job
        self.labels = store.labels(labels_job)


@pytest.fixture(scope="module")
def labelled_jobs(tmp_path_factory, tiny_spec) -> Labelled:
    from cai_engine.labels import submit_labels
    from cai_engine.pairs import submit_pairs

    home = tmp_path_factory.mktemp("labels-home")
    store = Store(home, lock_timeout=5)
    install_bundled(store)
    try:
        pairs = finish(
            store,
            submit_pairs(
                store,
                {
                    "prompts": "red-team:train",
                    "model": tiny_spec,
                    "limit": 4,
                    "sampling": {"max_new_tokens": 8},
                },
            ).id,
        )
        assert pairs.status == "succeeded", pairs.error
        labels = finish(
            store,
            submit_labels(
                store, {"pairs": pairs.id, "constitution": "harmless", "model": tiny_spec}
            ).id,
        )
    finally:
        kill_runners(home)
    assert labels.status == "succeeded", labels.error
    jobs.ingest(store, labels)
    return Labelled(store, pairs.id, labels.id)


@pytest.fixture
def labelled(labelled_jobs):
    """The module's label job; verdicts a test records are removed after it."""
    yield labelled_jobs
    with labelled_jobs.store.connect() as con:
        con.rows("DELETE FROM reviews")


def test_export_of_a_label_job_writes_data_and_a_manifest(labelled, tmp_path, tiny_spec, tokenizer):
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from cai_engine import review

    store, job = labelled.store, labelled.labels_job
    assert len(labelled.labels) == 4
    assert all(r["soft_label"] is not None and r["response_a"] for r in labelled.labels)
    # a human disagrees with the AI on one pair
    first = labelled.labels[0]
    flipped = "B" if first["winner"] == "A" else "A"
    review.record(store, job, first["prompt_id"], first["pair"], "ann", flipped, "AB")

    out = tmp_path / "prefs"
    result = export.export_prefs_from_labels(store, job, out, command="cai export prefs x")
    assert (result.kind, result.examples, result.out) == ("prefs", 4, out)
    assert result.skipped == {"unscored": 0, "ties": 0, "inconsistent": 0, "below confidence": 0}
    assert sorted(os.listdir(out)) == ["data.jsonl", "manifest.json"]

    rows = read_jsonl(out / "data.jsonl")
    expected, _ = export.prefs_from_labels(labelled.labels, store.reviews(job))
    assert rows == expected
    got = by_key(rows)[(first["prompt_id"], first["pair"])]
    assert (got["label_source"], got["score"]) == ("human", 1.0)
    assert sides(got)[0] == first[f"response_{flipped.lower()}"]
    for e in rows:
        assert is_conversational(e)
        rendered = maybe_apply_chat_template(e, tokenizer)
        assert set(rendered) == {"prompt", "chosen", "rejected"}

    manifest = json.loads((out / "manifest.json").read_text())
    version = store.get_version("harmless")
    assert manifest == result.manifest | {"files": ["data.jsonl"], "format": "jsonl"}
    assert (manifest["kind"], manifest["source"]) == ("prefs", "labels")
    assert (manifest["job"], manifest["pairs_job"]) == (job, labelled.pairs_job)
    assert (manifest["constitution"], manifest["constitution_hash"]) == ("harmless", version.hash)
    assert manifest["feedback_model"] == str(parse_spec(tiny_spec))
    assert manifest["policy_model"] == str(parse_spec(tiny_spec))
    assert (manifest["mode"], manifest["prompt_set"]) == ("logprob", "red-team")
    assert manifest["filters"] == {
        "drop_ties": False,
        "drop_inconsistent": False,
        "min_confidence": 0.0,
        "drop_truncated": False,
    }
    assert manifest["counts"] == {
        "examples": 4,
        "labels": 4,
        "human": 1,
        "skipped unscored": 0,
        "skipped ties": 0,
        "skipped inconsistent": 0,
        "skipped below confidence": 0,
    }
    assert manifest["command"] == "cai export prefs x"
    assert manifest["created_at"]


def test_export_of_labels_in_parquet_reads_back_with_datasets(labelled, tmp_path):
    from cai_engine import review

    store, job = labelled.store, labelled.labels_job
    first, rest = labelled.labels[0], labelled.labels[1:]
    review.record(store, job, first["prompt_id"], first["pair"], "ann", "A", "AB")
    out = tmp_path / "p"
    filters = export.PrefFilters(drop_inconsistent=True)
    result = export.export_prefs_from_labels(store, job, out, filters=filters, fmt="parquet")
    # the reviewed pair is kept whatever the AI's consistency; the others only if consistent
    inconsistent = sum(r["consistent"] is False for r in rest)
    assert result.examples == 4 - inconsistent
    assert result.skipped["inconsistent"] == inconsistent
    examples = load(out, "parquet", tmp_path / "hf-cache")
    assert len(examples) == result.examples
    got = by_key(examples)
    assert got.pop((first["prompt_id"], first["pair"]))["label_source"] == "human"
    assert all(e["consistent"] is True and e["label_source"] == "ai" for e in got.values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["filters"]["drop_inconsistent"] is True
    assert manifest["counts"]["skipped inconsistent"] == inconsistent
    assert (manifest["format"], manifest["files"]) == ("parquet", ["data.parquet"])


def test_export_of_labels_refuses_a_non_empty_folder_without_force(labelled, tmp_path):
    store, job = labelled.store, labelled.labels_job
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(CaiError, match="already exists and is not empty; choose another --out"):
        export.export_prefs_from_labels(store, job, out)
    assert os.listdir(out) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes"
    assert sorted(os.listdir(tmp_path)) == ["mine"]

    # --force replaces an earlier export only, never a folder of the user's own
    with pytest.raises(CaiError, match="is not an export folder"):
        export.export_prefs_from_labels(store, job, out, force=True)
    assert os.listdir(out) == ["notes.txt"]
    export.export_prefs_from_labels(store, job, tmp_path / "export")
    export.export_prefs_from_labels(store, job, tmp_path / "export", force=True)
    assert sorted(os.listdir(tmp_path / "export")) == ["data.jsonl", "manifest.json"]


def test_export_of_labels_refuses_a_job_that_is_not_a_label_job(labelled, tmp_path):
    pairs = labelled.pairs_job
    with pytest.raises(CaiError) as info:
        export.export_prefs_from_labels(labelled.store, pairs, tmp_path / "x")
    assert str(info.value) == f"job {pairs} is a pairs job; --labels needs a label job"
    with pytest.raises(CaiError, match="is a pairs job"):
        export.labelled_prefs(labelled.store, pairs)
    with pytest.raises(NotFoundError, match="no job 'label-nope'"):
        export.export_prefs_from_labels(labelled.store, "label-nope", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_an_export_that_filters_out_everything_says_what_was_dropped(labelled, tmp_path):
    job = labelled.labels_job
    # the tiny random model is never confident: every label is below confidence 1
    assert all(r["confidence"] < 1.0 for r in labelled.labels)
    with pytest.raises(CaiError) as info:
        export.export_prefs_from_labels(
            labelled.store, job, tmp_path / "x", filters=export.PrefFilters(min_confidence=1.0)
        )
    assert str(info.value) == (
        f"label job {job} leaves no preference pairs to export (dropped: 4 below confidence)"
    )
    assert not (tmp_path / "x").exists()


def test_labelled_prefs_zip_for_a_download(labelled):
    examples, manifest = export.labelled_prefs(
        labelled.store, labelled.labels_job, export.PrefFilters(), command="studio download"
    )
    with zipfile.ZipFile(io.BytesIO(export.zip_examples(examples, manifest))) as zf:
        assert sorted(zf.namelist()) == ["data.jsonl", "manifest.json"]
        lines = zf.read("data.jsonl").decode("utf-8").splitlines()
        zipped = json.loads(zf.read("manifest.json"))
    assert [json.loads(line) for line in lines] == examples
    assert zipped == manifest | {"files": ["data.jsonl"], "format": "jsonl"}
    assert (zipped["job"], zipped["command"]) == (labelled.labels_job, "studio download")
