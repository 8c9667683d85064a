"""Exports written by DuckDB (`COPY ... TO`) from one SQL query per export.

Each export kind and format is checked against the Python exports it replaced
(`tests/export_reference.py`): the same rows in the same order, the same counts. The jobs are
synthetic and big enough to hold every case an export filters, built through the engine's own
ingest path: a critique job of 240 traces (`bench.synthetic`), and a pairs job and a label job
of 3,000 labels written as their jobs write them (`tests/export_jobs.py`: Parquet shards, then
`jobs.ingest`), with human verdicts recorded by the store as the Labels page records them.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import pytest

from cai_engine import export
from cai_engine.errors import CaiError
from cai_engine.home import runs_dir
from cai_engine.runs import RunFolder
from cai_engine.store import Store
from cai_engine.store.exports import NOT_SPACE, WHITESPACE
from tests import export_reference as before
from tests.export_jobs import AWKWARD, LABEL_JOB, label_job

TRACES = 240
LABELS = 3000  # 1,500 prompts x 2 pairs
CRITIQUE_JOB = "critique-20260101-000000-synt"


def read_back(out: Path, fmt: str) -> list[dict]:
    if fmt == "jsonl":
        return jsonl_rows((out / "data.jsonl").read_bytes())
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(out / "data.parquet").to_pylist()
    import datasets

    return datasets.load_from_disk(str(out / "dataset")).to_list()


def jsonl_rows(data: bytes) -> list[dict]:
    """One JSON object a line. Lines end at "\n" only: `str.splitlines` would also split at
    the U+2028 and U+0085 that JSON leaves unescaped inside a string."""
    return [json.loads(line) for line in data.decode("utf-8").split("\n") if line]


def same_rows(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    assert got == expected
    # and the same keys in the same order, down to each turn's
    assert [list(e) for e in got] == [list(e) for e in expected]
    turns = [k for k in ("messages", "prompt", "chosen", "rejected") if k in expected[0]]
    assert [[list(m) for k in turns for m in e[k]] for e in got] == [
        [list(m) for k in turns for m in e[k]] for e in expected
    ]


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# -- a critique job with every case the exports filter ---------------------------------------


@pytest.fixture(scope="module")
def critique(tmp_path_factory):
    """240 synthetic traces of 2 rounds (5% of the texts cut off at random), edited so that
    some traces are unfinished, some revisions empty or unchanged, some texts awkward."""
    from bench import synthetic

    store = Store(tmp_path_factory.mktemp("critique-home"), lock_timeout=5)
    synthetic.critique_job(store, TRACES, rounds=2, shards=3, job_id=CRITIQUE_JOB)
    ids = sorted({r[0] for r in _q(store, "SELECT prompt_id FROM traces")})
    final = "job_id = ? AND prompt_id = ? AND round = 2 AND step = 'revision'"
    with store.connect() as con:
        for pid in ids[0:6]:  # unfinished: round 2 not written yet, or no revision at all
            con.rows("DELETE FROM traces WHERE job_id = ? AND prompt_id = ? AND round = 2",
                     [CRITIQUE_JOB, pid])  # fmt: skip
        for pid in ids[3:6]:
            con.rows("DELETE FROM traces WHERE job_id = ? AND prompt_id = ? AND round > 0",
                     [CRITIQUE_JOB, pid])  # fmt: skip
        for pid, text in zip(ids[6:10], ["", "   ", "\u3000\n\t", "\x85\u2028"], strict=True):
            con.rows(f"UPDATE traces SET text = ? WHERE {final}", [text, CRITIQUE_JOB, pid])
        for pid in ids[10:14]:  # unchanged: the final revision repeats the initial answer
            con.rows(
                f"UPDATE traces SET text = (SELECT text FROM traces WHERE job_id = ? AND"
                f" prompt_id = ? AND step = 'initial') WHERE {final}",
                [CRITIQUE_JOB, pid, CRITIQUE_JOB, pid],
            )
        for pid in ids[14:18]:  # awkward texts in every step
            con.rows(
                "UPDATE traces SET text = ? || text || step WHERE job_id = ? AND prompt_id = ?",
                [AWKWARD, CRITIQUE_JOB, pid],
            )
        con.rows(  # a principle left empty: the principles list leaves it out
            "UPDATE traces SET principle_id = '' WHERE job_id = ? AND prompt_id = ? AND round = 1",
            [CRITIQUE_JOB, ids[20]],
        )
    return store


def _q(store: Store, sql: str, params=None) -> list[tuple]:
    with store.connect() as con:
        return con.rows(sql, params)


SFT_CASES = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("all_rounds, drop_truncated", SFT_CASES)
def test_sft_copy_writes_the_rows_the_python_export_wrote(
    critique, tmp_path, all_rounds, drop_truncated
):
    out = tmp_path / "sft"
    result = export.export_sft(
        critique, CRITIQUE_JOB, out, all_rounds=all_rounds, drop_truncated=drop_truncated
    )
    expected, skipped = before.sft_examples(
        critique.traces(CRITIQUE_JOB), all_rounds, drop_truncated
    )
    same_rows(read_back(out, "jsonl"), expected)
    assert result.skipped == skipped
    # 6 traces unfinished: 3 with round 1 only, 3 with no revision; 4 final revisions empty
    assert skipped["incomplete traces"] == 3
    assert skipped["empty revisions"] == 4
    assert (not drop_truncated) or skipped[export.CUT_OFF_SKIP] > 0
    counts = manifest_of(out)["counts"]
    assert counts == {
        "examples": len(expected),
        "traces": TRACES,
        **{f"skipped {k}": v for k, v in skipped.items()},
    }


@pytest.mark.parametrize("drop_truncated", [False, True])
def test_revision_prefs_copy_writes_the_rows_the_python_export_wrote(
    critique, tmp_path, drop_truncated
):
    out = tmp_path / "prefs"
    result = export.export_prefs_from_revisions(
        critique, CRITIQUE_JOB, out, drop_truncated=drop_truncated
    )
    expected, skipped = before.prefs_from_revisions(critique.traces(CRITIQUE_JOB), drop_truncated)
    same_rows(read_back(out, "jsonl"), expected)
    assert result.skipped == skipped
    # 3 traces with no revision (the 3 stopped after round 1 compare round 1's); 4 empty and
    # 4 unchanged final revisions, and the synthetic job's own unchanged ones (both rounds'
    # revisions of share 0 repeat the answer: about 1 trace in 16)
    assert skipped["incomplete traces"] == 3
    assert skipped["unchanged or empty"] >= 8
    assert any(e["principles"].count(",") == 0 for e in expected)  # the empty principle
    assert manifest_of(out)["counts"]["traces"] == TRACES


@pytest.mark.parametrize("fmt", ["parquet", "hf"])
@pytest.mark.parametrize("kind", ["sft", "prefs"])
def test_parquet_and_datasets_exports_hold_the_same_rows(critique, tmp_path, kind, fmt):
    import pyarrow as pa

    out = tmp_path / kind
    if kind == "sft":
        export.export_sft(critique, CRITIQUE_JOB, out, all_rounds=True, fmt=fmt)
        expected, _ = before.sft_examples(critique.traces(CRITIQUE_JOB), all_rounds=True)
    else:
        export.export_prefs_from_revisions(critique, CRITIQUE_JOB, out, fmt=fmt)
        expected, _ = before.prefs_from_revisions(critique.traces(CRITIQUE_JOB))
    same_rows(read_back(out, fmt), expected)
    assert not (out / "dataset" / ".work").exists() and not (out / ".work").exists()
    if fmt == "parquet":  # the columns and types pyarrow gave the Python export's rows
        import pyarrow.parquet as pq

        got = pq.read_schema(out / "data.parquet")
        want = pa.Table.from_pylist(expected).schema
        assert got.names == want.names
        for name in want.names:
            g, w = got.field(name).type, want.field(name).type
            if pa.types.is_list(w):  # DuckDB names a list's item "element", pyarrow "item"
                g, w = g.value_type, w.value_type
            assert g == w, name


def test_a_download_bundle_holds_the_rows_and_manifest_an_export_writes(critique, tmp_path):
    data = export.bundle(critique, CRITIQUE_JOB, "sft", all_rounds=True, drop_truncated=True)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["data.jsonl", "manifest.json"]
        rows = jsonl_rows(zf.read("data.jsonl"))
        manifest = json.loads(zf.read("manifest.json"))
    expected, skipped = before.sft_examples(critique.traces(CRITIQUE_JOB), True, True)
    same_rows(rows, expected)
    assert manifest["counts"]["skipped " + export.CUT_OFF_SKIP] == skipped[export.CUT_OFF_SKIP]
    assert (manifest["all_rounds"], manifest["drop_truncated"]) == (True, True)
    assert list(manifest)[-4:] == ["drop_truncated", "all_rounds", "files", "format"]


def test_the_list_functions_run_the_same_queries(critique):
    rows = critique.traces(CRITIQUE_JOB)
    for all_rounds, drop_truncated in SFT_CASES:
        assert export.sft_examples(rows, all_rounds, drop_truncated) == before.sft_examples(
            rows, all_rounds, drop_truncated
        )
    for drop_truncated in (False, True):
        assert export.prefs_from_revisions(rows, drop_truncated) == before.prefs_from_revisions(
            rows, drop_truncated
        )


def test_training_reads_the_exports_rows_from_the_store(critique):
    from cai_engine.training.data import PREFS, SFT

    rows = critique.traces(CRITIQUE_JOB)
    assert SFT.sources["critique"].examples(critique, CRITIQUE_JOB) == before.sft_examples(rows)[0]
    assert (
        PREFS.sources["critique"].examples(critique, CRITIQUE_JOB)
        == before.prefs_from_revisions(rows)[0]
    )


def test_empty_means_what_str_strip_strips():
    import duckdb

    assert set(WHITESPACE) == {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    # SQL's test, on each of them alone and among others, and on look-alikes that are not
    texts = [*WHITESPACE, WHITESPACE, "", "\u200b", "\x00", "\ufeff", "_", f"{WHITESPACE}a "]
    with duckdb.connect() as con:
        blank = con.execute(
            "SELECT list_transform($texts, lambda t: NOT regexp_matches(t, $not_space))",
            {"texts": texts, "not_space": NOT_SPACE},
        ).fetchone()[0]
    assert blank == [not t.strip() for t in texts]
    assert blank.count(False) == 5


# -- a label job of 3,000 labels, with human verdicts -----------------------------------------


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """3,000 labels; 200 pairs reviewed (A, B, tie, both bad, skip; some twice)."""
    store = Store(tmp_path_factory.mktemp("labels-home"), lock_timeout=5)
    label_job(store, LABELS // 2)
    labels = store.labels(LABEL_JOB)
    verdicts = ["A", "B", "tie", "both_bad", "skip"]
    with store.session():
        for n, r in enumerate(labels[::15]):
            store.add_review(LABEL_JOB, r["prompt_id"], r["pair"], "ann", verdicts[n % 5], "AB")
            if n % 4 == 0:  # a second opinion, by someone else, overrides; a skip does not
                later = verdicts[(n + 1) % 5]
                store.add_review(LABEL_JOB, r["prompt_id"], r["pair"], "bob", later, "BA")
    return store


FILTERS = [
    export.PrefFilters(),
    export.PrefFilters(drop_ties=True),
    export.PrefFilters(drop_inconsistent=True),
    export.PrefFilters(min_confidence=0.4),
    export.PrefFilters(drop_truncated=True),
    export.PrefFilters(True, True, 0.25, True),
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: str(vars(f)))
def test_label_prefs_copy_writes_the_rows_the_python_export_wrote(labelled, tmp_path, filters):
    out = tmp_path / "prefs"
    result = export.export_prefs_from_labels(labelled, LABEL_JOB, out, filters=filters)
    labels, reviews = labelled.labels(LABEL_JOB), labelled.reviews(LABEL_JOB)
    expected, skipped = before.prefs_from_labels(labels, reviews, filters)
    same_rows(read_back(out, "jsonl"), expected)
    assert result.skipped == skipped
    counts = manifest_of(out)["counts"]
    assert counts == {
        "examples": len(expected),
        "labels": LABELS,
        "human": sum(e["label_source"] == "human" for e in expected),
        **{f"skipped {k}": v for k, v in skipped.items()},
    }
    assert counts["human"] > 0
    # each filter leaves out something in this job (and nothing is unscored but overflow)
    assert skipped["unscored"] > 0
    for name, reason in [
        ("drop_ties", "ties"),
        ("drop_inconsistent", "inconsistent"),
        ("drop_truncated", export.CUT_OFF_SKIP),
    ]:
        assert (skipped.get(reason, 0) > 0) == getattr(filters, name), name
    assert (skipped["below confidence"] > 0) == (filters.min_confidence > 0)


@pytest.mark.parametrize("fmt", ["parquet", "hf"])
def test_label_prefs_in_parquet_and_datasets_hold_the_same_rows(labelled, tmp_path, fmt):
    filters = export.PrefFilters(drop_inconsistent=True)
    export.export_prefs_from_labels(labelled, LABEL_JOB, tmp_path / "p", filters=filters, fmt=fmt)
    expected, _ = before.prefs_from_labels(
        labelled.labels(LABEL_JOB), labelled.reviews(LABEL_JOB), filters
    )
    same_rows(read_back(tmp_path / "p", fmt), expected)


def test_the_latest_human_verdict_overrides_the_ai_label_in_sql(labelled, tmp_path):
    labels = {(r["prompt_id"], r["pair"]): r for r in labelled.labels(LABEL_JOB)}
    reviews = labelled.reviews(LABEL_JOB)
    latest = {}
    for r in reviews:  # oldest first
        if r["verdict"] != "skip":
            latest[(r["prompt_id"], r["pair"])] = r["verdict"]
    out = tmp_path / "p"
    export.export_prefs_from_labels(labelled, LABEL_JOB, out)
    got = {(e["prompt_id"], e["pair"]): e for e in read_back(out, "jsonl")}
    assert {k for k, e in got.items() if e["label_source"] == "human"} == set(latest)
    overridden = 0
    for key, verdict in latest.items():
        e, label = got[key], labels[key]
        winner = verdict if verdict in ("A", "B") else "tie"
        assert e["score"] == (1.0 if winner != "tie" else 0.5)
        side = "b" if winner == "B" else "a"
        assert e["chosen"][0]["content"] == label[f"response_{side}"]
        overridden += winner != label["winner"]
    assert overridden > 20
    # a pair whose verdict was followed by a skip keeps the verdict; one only skipped stays AI
    skipped_after = [
        (r["prompt_id"], r["pair"])
        for r in reviews
        if r["verdict"] == "skip" and r["reviewer"] == "bob"
    ]
    assert skipped_after and all(k in latest for k in skipped_after)
    only_skipped = {(r["prompt_id"], r["pair"]) for r in reviews} - set(latest)
    assert only_skipped and all(got[k]["label_source"] == "ai" for k in only_skipped if k in got)


def test_reviewed_pairs_escape_the_ai_filters_but_not_the_cut_off_one(labelled, tmp_path):
    strict = export.PrefFilters(drop_inconsistent=True, min_confidence=0.99, drop_truncated=True)
    out = tmp_path / "p"
    export.export_prefs_from_labels(labelled, LABEL_JOB, out, filters=strict)
    rows = read_back(out, "jsonl")
    assert {e["label_source"] for e in rows} == {"human", "ai"}
    human = [e for e in rows if e["label_source"] == "human"]
    labels = {(r["prompt_id"], r["pair"]): r for r in labelled.labels(LABEL_JOB)}
    kept = [labels[(e["prompt_id"], e["pair"])] for e in human]
    assert any(r["consistent"] is False for r in kept)  # inconsistent, kept: reviewed
    assert any(r["soft_label"] is None for r in kept)  # unscored, kept: reviewed
    assert not any("cut_off" in r["pair_flags"] for r in kept)
    assert all(e["score"] >= 0.99 or e["label_source"] == "human" for e in rows)


def test_the_labels_tab_counts_by_sql_and_zips_on_click(labelled, monkeypatch):
    filters = export.PrefFilters(drop_ties=True)
    manifest = export.labelled_prefs_manifest(labelled, LABEL_JOB, filters, "studio download")
    expected, skipped = before.prefs_from_labels(
        labelled.labels(LABEL_JOB), labelled.reviews(LABEL_JOB), filters
    )
    assert manifest["counts"]["examples"] == len(expected)
    assert manifest["counts"]["skipped ties"] == skipped["ties"]

    def loaded(*_, **__):
        raise AssertionError("the export read a whole job into Python")

    for name in ("labels", "reviews", "traces", "export_examples"):
        monkeypatch.setattr(Store, name, loaded)
    data = export.labelled_prefs_zip(labelled, LABEL_JOB, filters, "studio download")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        rows = jsonl_rows(zf.read("data.jsonl"))
        zipped = json.loads(zf.read("manifest.json"))
    monkeypatch.undo()
    same_rows(rows, expected)
    assert zipped == {**manifest, "created_at": zipped["created_at"]} | {
        "files": ["data.jsonl"],
        "format": "jsonl",
    }


def test_no_export_reads_a_whole_job_into_python(critique, labelled, tmp_path, monkeypatch):
    def loaded(*_, **__):
        raise AssertionError("the export read a whole job into Python")

    for name in ("labels", "reviews", "traces", "trace_steps", "export_examples"):
        monkeypatch.setattr(Store, name, loaded)
    for fmt in ("jsonl", "parquet", "hf"):
        export.export_sft(critique, CRITIQUE_JOB, tmp_path / f"s-{fmt}", fmt=fmt)
        export.export_prefs_from_revisions(critique, CRITIQUE_JOB, tmp_path / f"r-{fmt}", fmt=fmt)
        export.export_prefs_from_labels(labelled, LABEL_JOB, tmp_path / f"l-{fmt}", fmt=fmt)
    export.bundle(critique, CRITIQUE_JOB, "prefs")


def test_label_rows_pass_trls_checks_read_back_from_the_file(labelled, tmp_path, tiny_model_dir):
    """TRL's own helpers on rows read back from the written file: the first 50, the last 50
    and every reviewed one (the rows whose source differs), not all 3,000 renders."""
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    export.export_prefs_from_labels(labelled, LABEL_JOB, tmp_path / "p", fmt="parquet")
    rows = read_back(tmp_path / "p", "parquet")
    sample = rows[:50] + rows[-50:] + [e for e in rows if e["label_source"] == "human"]
    for e in sample:
        assert is_conversational(e)
        rendered = maybe_apply_chat_template(e, tokenizer)
        assert set(rendered) == {"prompt", "chosen", "rejected"}
        assert rendered["prompt"].endswith("<|im_start|>assistant\n")
        assert rendered["chosen"] == f"{e['chosen'][0]['content']}<|im_end|>\n"


def test_a_label_job_with_no_labels_yet_is_refused(store, tmp_path):
    run = RunFolder(runs_dir(store.home) / LABEL_JOB)
    run.create({})
    store.insert_job(LABEL_JOB, "label", {}, str(run.path), "synthetic")
    with pytest.raises(CaiError) as info:
        export.export_prefs_from_labels(store, LABEL_JOB, tmp_path / "x")
    assert str(info.value) == f"label job {LABEL_JOB} has no labels yet (queued)"
    assert not (tmp_path / "x").exists()


def test_a_failed_copy_leaves_no_half_written_export(critique, tmp_path, monkeypatch):
    def broken(*_, **__):
        raise OSError("disk full")

    monkeypatch.setattr(Store, "copy_export", broken)
    with pytest.raises(OSError, match="disk full"):
        export.export_sft(critique, CRITIQUE_JOB, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
