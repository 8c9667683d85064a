"""External pairs (`cai import`): HH-RLHF transcripts, TRL preference rows and annotated pairs
come in as a pairs job plus dataset label jobs, and label jobs go out as annotated pairs.

The fixtures under tests/fixtures/interop/ were written for this project; they follow the
public formats (Anthropic's HH-RLHF `chosen`/`rejected` transcripts, TRL's preference dataset
types, ICAI's annotated-pairs JSON 1.0 and 2.0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai_engine import jobs
from cai_engine.cli import main
from cai_engine.errors import CaiError
from cai_engine.export import labelled_prefs
from cai_engine.external_pairs import (
    annotated_pairs,
    describe_import,
    export_annotated,
    import_pairs,
    parse_transcript,
)
from cai_engine.labels import LabelConfig, label_pairs
from cai_engine.prompts import PromptImportError

FIXTURES = Path(__file__).parent / "fixtures" / "interop"
H, A = "\n\nHuman: ", "\n\nAssistant: "


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def label_job_of(result) -> str:
    (job,) = result.label_jobs.values()
    return job


def chosen_texts(store, labels_job: str) -> dict[str, str]:
    """Each pair's winning answer by its prompt's last user turn (one pair per prompt)."""
    out = {}
    for label in store.labels(labels_job):
        text = label["response_a"] if label["winner"] == "A" else label["response_b"]
        out[label["prompt_messages"][-1]["content"]] = text
    return out


# -- HH-RLHF --------------------------------------------------------------------------------


def test_parse_transcript_splits_the_turns():
    text = f"{H}Hi{A}Hello!{H}How are you?{A}Fine."
    assert parse_transcript(text, "chosen") == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
        {"role": "assistant", "content": "Fine."},
    ]


def test_hh_transcripts_import_as_pairs_with_the_datasets_label(store):
    result = import_pairs(store, FIXTURES / "hh.jsonl", "hh", "hh")
    source = rows_of(FIXTURES / "hh.jsonl")
    assert (result.rows, result.pairs, result.prompts) == (4, 4, 3)  # two rows share a prompt
    pairs_job = jobs.get_job(store, result.pairs_job)
    assert (pairs_job.kind, pairs_job.status) == ("pairs", "succeeded")
    assert pairs_job.config["imported"] == str(FIXTURES / "hh.jsonl")
    pairs = store.pairs(result.pairs_job)
    assert {p["source"] for p in pairs} == {"dataset"}
    # the prompt is the conversation up to the last human turn, the answers its last turn
    multi = next(p for p in pairs if len(p["prompt_messages"]) > 1)
    assert [m["role"] for m in multi["prompt_messages"]] == ["user", "assistant", "user"]
    assert multi["prompt_messages"][-1]["content"] == "He keeps parking in my spot."
    # chosen is shown as A or B by a seeded coin, and the pair records which
    assert {p["a_ref"] for p in pairs} == {"chosen", "rejected"}
    for p in pairs:
        assert p["preferred"] == ("A" if p["a_ref"] == "chosen" else "B")
    labels = store.labels(label_job_of(result))
    assert len(labels) == 4
    assert {(lb["label_source"], lb["soft_label"] in (0.0, 1.0)) for lb in labels} == {
        ("dataset", True)
    }
    chosen_answers = {r["chosen"].rsplit(A, 1)[1] for r in source}
    for lb in labels:
        assert (lb["response_a"] if lb["winner"] == "A" else lb["response_b"]) in chosen_answers
    assert store.prompt_set_exists("hh") and store.count_prompts("hh") == 3


def test_hh_from_parquet_and_a_datasets_folder_gives_the_same_pairs(store, tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = rows_of(FIXTURES / "hh.jsonl")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "hh.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hh-ds"))

    def texts(result):
        return sorted(
            (p["prompt_id"], p["response_a"], p["response_b"])
            for p in store.pairs(result.pairs_job)
        )

    want = texts(import_pairs(store, FIXTURES / "hh.jsonl", "hh", "from-jsonl"))
    assert texts(import_pairs(store, tmp_path / "hh.parquet", "hh", "from-parquet")) == want
    assert texts(import_pairs(store, tmp_path / "hh-ds", "hh", "from-folder")) == want


def test_hh_transcripts_alone_make_a_prompt_set(store):
    result = import_pairs(store, FIXTURES / "hh_transcripts.jsonl", "hh", "transcripts")
    assert result.pairs_job is None and not result.label_jobs
    prompts = store.get_prompts("transcripts")
    by_text = {p.text: p.messages for p in prompts}
    assert by_text["Without padding it?"] == [
        {"role": "user", "content": "How do I make my essay longer?"},
        {"role": "assistant", "content": "Add examples."},
        {"role": "user", "content": "Without padding it?"},
    ]  # the conversation up to the last human turn
    assert "Is it safe to mix bleach and ammonia?" in by_text


# -- TRL ------------------------------------------------------------------------------------


def test_trl_standard_rows_keep_their_score(store):
    result = import_pairs(store, FIXTURES / "trl_standard.jsonl", "prefs", "trl-std")
    assert result.pairs == 3
    by_prompt = {
        lb["prompt_messages"][-1]["content"]: lb for lb in store.labels(label_job_of(result))
    }
    hurt = by_prompt["How can I hurt someone without leaving marks?"]
    chosen_is_a = hurt["winner"] == "A"
    assert hurt["soft_label"] == pytest.approx(0.9 if chosen_is_a else 0.1)
    haiku = by_prompt["Write a haiku about rain."]
    assert haiku["confidence"] == 1.0  # no score: the chosen side, for sure


def test_trl_conversational_and_implicit_prompt_rows(store):
    conv = import_pairs(store, FIXTURES / "trl_conversational.jsonl", "prefs", "trl-conv")
    chosen = chosen_texts(store, label_job_of(conv))
    assert chosen["How do I make a fake ID?"].startswith("I can't help with forging")
    fake_id = next(
        p for p in store.pairs(conv.pairs_job) if "fake ID" in p["prompt_messages"][-1]["content"]
    )
    assert fake_id["prompt_messages"][0] == {
        "role": "system",
        "content": "You are a careful assistant.",
    }
    implicit = import_pairs(store, FIXTURES / "trl_implicit.jsonl", "prefs", "trl-implicit")
    assert chosen_texts(store, label_job_of(implicit)) == {
        "What colour is the sky?": "Blue, on a clear day."
    }


def test_imported_labels_export_as_trl_preferences(store):
    from trl.data_utils import is_conversational

    result = import_pairs(store, FIXTURES / "trl_standard.jsonl", "prefs", "trl-export")
    examples, manifest = labelled_prefs(store, label_job_of(result))
    assert len(examples) == 3
    assert manifest["judge_check"] == "imported with the pairs: no judge"
    source = {r["prompt"]: r for r in rows_of(FIXTURES / "trl_standard.jsonl")}
    for e in examples:
        assert is_conversational(e)
        row = source[e["prompt"][-1]["content"]]
        assert e["chosen"][-1]["content"] == row["chosen"]
        assert e["rejected"][-1]["content"] == row["rejected"]
        assert e["score"] == pytest.approx(row.get("score", 1.0))
        assert e["label_source"] == "dataset"


# -- annotated pairs ------------------------------------------------------------------------


def test_annotated_pairs_import_each_annotator_as_a_label_job(store):
    result = import_pairs(store, FIXTURES / "annotated.json", "annotated", "icai")
    assert result.pairs == 3
    assert set(result.label_jobs) == {"preferred_text", "0c7d4e11", "human_rater"}
    pairs = store.pairs(result.pairs_job)
    assert {p["external_id"] for p in pairs} == {"c1a2b3c4", "d4e5f6a7", "e7f8a9b0"}
    for p in pairs:  # text_a stays A; the default annotator's choice is the preferred side
        assert (p["a_ref"], p["b_ref"]) == ("text_a", "text_b")
    preferred = {p["external_id"]: p["preferred"] for p in pairs}
    assert preferred == {"c1a2b3c4": "A", "d4e5f6a7": "A", "e7f8a9b0": "B"}
    principle = store.labels(result.label_jobs["0c7d4e11"])
    assert len(principle) == 2  # "not_applicable" on one comparison: no label there
    human = store.import_annotator(result.label_jobs["human_rater"])
    assert (human["type"], human["name"]) == ("human", "human_rater")
    record = store.import_record(result.pairs_job)
    assert record["metadata"]["dataset_name"] == "cai-interop-fixture"
    text = describe_import(record)
    assert text.startswith(f"imported from {FIXTURES / 'annotated.json'} (annotated pairs, 3 rows")
    assert f"sha256 {result.sha256[:12]}" in text


def test_annotated_pairs_format_2_reads_responses(store):
    result = import_pairs(store, FIXTURES / "annotated_v2.json", "annotated", "icai-v2")
    winners = {
        lb["response_a"]: lb["winner"] for lb in store.labels(result.label_jobs["preferred_text"])
    }
    assert winners == {"11": "A", "Go away.": "B"}


def test_annotated_export_then_import_gives_the_same_pairs_and_labels(store, tmp_path):
    first = import_pairs(store, FIXTURES / "annotated.json", "annotated", "round-1")
    job = first.label_jobs["preferred_text"]
    pair = store.labels(job)[0]
    store.add_review(job, pair["prompt_id"], pair["pair"], "alice", "B", "AB")
    out, comparisons, annotators = export_annotated(store, job, tmp_path / "out.json")
    assert (comparisons, annotators) == (3, 2)
    data = json.loads(out.read_text())
    assert data["metadata"]["version"] == "1.0"
    default = data["metadata"]["default_annotator"]
    assert data["annotators"][default]["name"] == "preferred_text"  # the source's annotator
    assert {c["id"] for c in data["comparisons"]} == {"c1a2b3c4", "d4e5f6a7", "e7f8a9b0"}
    again = import_pairs(store, out, "annotated", "round-2")

    def pairs(result):
        return sorted(
            (json.dumps(p["prompt_messages"]), p["response_a"], p["response_b"], p["preferred"])
            for p in store.pairs(result.pairs_job)
        )

    def labels(label_job):
        return sorted(
            (lb["response_a"], lb["response_b"], lb["soft_label"], lb["winner"])
            for lb in store.labels(label_job)
        )

    assert pairs(again) == pairs(first)
    assert labels(again.label_jobs["preferred_text"]) == labels(job)
    (alice,) = store.labels(again.label_jobs["alice"])  # the review, as a human annotator
    assert (alice["response_a"], alice["winner"]) == (pair["response_a"], "B")
    with pytest.raises(CaiError, match="exists; pass --force"):
        export_annotated(store, job, out)


def test_a_judge_label_job_exports_as_annotated_pairs(seeded_store):
    """A label job made here: the judge is the default annotator, its soft labels kept."""
    result = import_pairs(seeded_store, FIXTURES / "hh.jsonl", "hh", "judged")
    judge_job = judge_labels(seeded_store, result.pairs_job, prefer_longer=True)
    data = annotated_pairs(seeded_store, judge_job)
    judge = data["annotators"][data["metadata"]["default_annotator"]]
    assert judge["name"] == judge_job and "under constitution harmless@" in judge["description"]
    assert len(data["comparisons"]) == 4
    for c in data["comparisons"]:
        pref = c["annotations"][data["metadata"]["default_annotator"]]
        assert pref["pref"] == ("text_a" if len(c["text_a"]) > len(c["text_b"]) else "text_b")
        assert 0.0 <= pref["soft_label"] <= 1.0


# -- a judge on imported pairs --------------------------------------------------------------


def judge_labels(store, pairs_job: str, *, prefer_longer: bool) -> str:
    """A label job by a fake judge over an imported pairs job, recorded like a finished job."""
    from cai_engine.external_pairs import _record_job
    from tests.test_labels import Judge

    def prefer(first, second):
        longer = len(first) > len(second)
        return 0.9 if longer == prefer_longer else 0.1

    version = store.get_version("harmless")
    config = LabelConfig(
        pairs=pairs_job, constitution=version.pinned, few_shots=0, judge_check=False
    )
    rows = label_pairs(
        store.pairs(pairs_job), version.constitution, version.hash, Judge(prefer), config
    )

    def with_job(job_id):
        return [{**r, "job_id": job_id} for r in rows]

    return _record_job(
        store, "label", config.model_dump(mode="json"), "judge", "labels", with_job, {}
    )


@pytest.mark.parametrize(("prefer_longer", "agree"), [(True, 4), (False, 0)])
def test_a_judge_on_imported_pairs_shows_its_agreement_with_the_dataset(
    seeded_store, prefer_longer, agree
):
    # in hh.jsonl the chosen answer is always the longer one
    result = import_pairs(seeded_store, FIXTURES / "hh.jsonl", "hh", "agree")
    judge_job = judge_labels(seeded_store, result.pairs_job, prefer_longer=prefer_longer)
    got = seeded_store.construction_agreement(judge_job)
    assert (got.pairs, got.decisive, got.agree, got.source) == (4, 4, agree, "dataset")
    assert got.describe().startswith(f"the judge agrees with the dataset's label on {agree * 25}%")
    assert "of 4 imported pairs" in got.describe()
    assert seeded_store.construction_agreement(label_job_of(result)) is None  # not a judge's


def test_review_stats_say_where_imported_labels_came_from(seeded_store, capsys):
    result = import_pairs(seeded_store, FIXTURES / "hh.jsonl", "hh", "stats")
    judge_job = judge_labels(seeded_store, result.pairs_job, prefer_longer=True)
    assert main(["review", "stats", "--labels", judge_job]) == 0
    assert "imported pairs: the judge agrees with the dataset's label on 100%" in (
        capsys.readouterr().out
    )
    assert main(["review", "stats", "--labels", label_job_of(result)]) == 0
    out = capsys.readouterr().out
    assert f"labels imported with pairs job {result.pairs_job} (cai import): no judge" in out
    assert "agreement with the dataset:" in out


# -- bad input ------------------------------------------------------------------------------

BAD = [
    ("hh_no_assistant.jsonl", "hh", "line 2: field 'chosen': no 'Assistant:' turn"),
    ("hh_identical.jsonl", "hh", "line 2: field 'rejected': the same answer as chosen"),
    ("trl_mixed.jsonl", "prefs", "line 2: field 'chosen': a conversational row among standard"),
    (
        "annotated_bad_pref.json",
        "annotated",
        "comparisons[1]: field 'annotations.9a8b7c6d.pref': 'text_c' is not a preference",
    ),
    (
        "annotated_unused_annotator.json",
        "annotated",
        "annotators.77777777: no comparison uses this annotator",
    ),
]


@pytest.mark.parametrize(("name", "fmt", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_file_row_and_field_and_imports_nothing(store, name, fmt, message):
    path = FIXTURES / "bad" / name
    with pytest.raises(CaiError) as info:
        import_pairs(store, path, fmt, "bad")
    assert f"{path}: {message}" in str(info.value)
    assert not store.prompt_set_exists("bad")
    assert not jobs.list_jobs(store)


@pytest.mark.parametrize(
    "name", ["hh_no_assistant.jsonl", "hh_identical.jsonl", "annotated_bad_pref.json"]
)
def test_skip_bad_imports_the_good_rows_and_reports_the_rest(store, name):
    fmt = "annotated" if name.endswith(".json") else "hh"
    result = import_pairs(store, FIXTURES / "bad" / name, fmt, "partial", skip_bad=True)
    assert len(result.skipped) == 1 and result.pairs == result.rows - 1
    assert "1 bad rows skipped" in result.summary()
    assert str(result.skipped[0]) in result.summary()
    assert store.import_record(result.pairs_job)["skipped"] == 1


def test_an_existing_prompt_set_is_never_overwritten(store):
    import_pairs(store, FIXTURES / "hh.jsonl", "hh", "taken")
    before = store.count_prompts("taken")
    with pytest.raises(CaiError, match="prompt set 'taken' already exists"):
        import_pairs(store, FIXTURES / "trl_standard.jsonl", "prefs", "taken")
    assert store.count_prompts("taken") == before
    with pytest.raises(PromptImportError):
        import_pairs(store, FIXTURES / "bad" / "hh_identical.jsonl", "hh", "fresh")


def test_imported_jobs_cannot_be_submitted_or_run(store):
    result = import_pairs(store, FIXTURES / "hh.jsonl", "hh", "norun")
    from cai_engine.labels import submit_labels
    from cai_engine.pairs import submit_pairs

    with pytest.raises(CaiError, match="recorded by `cai import`"):
        submit_pairs(store, {"prompts": "norun", "imported": "x.jsonl"})
    with pytest.raises(CaiError, match="recorded by `cai import`"):
        submit_labels(store, {"pairs": result.pairs_job, "source": "dataset"})


# -- CLI ------------------------------------------------------------------------------------


def test_cli_imports_and_exports(store, capsys, tmp_path):
    home = ["--home", str(store.home)]
    assert main([*home, "import", "hh", str(FIXTURES / "hh.jsonl"), "--name", "cli-hh"]) == 0
    out = capsys.readouterr().out
    assert "4 pairs in pairs job pairs-" in out and "prompt set 'cli-hh'" in out
    path = FIXTURES / "trl_conversational.jsonl"
    assert main([*home, "import", "prefs", str(path), "--name", "cli-trl"]) == 0
    path = FIXTURES / "annotated.json"
    assert main([*home, "import", "annotated", str(path), "--name", "cli-icai"]) == 0
    out = capsys.readouterr().out
    job = out.split("labels of preferred_text in label job ")[1].split(";")[0].split()[0]
    target = tmp_path / "export.json"
    assert main([*home, "export", "annotated", job, "--out", str(target)]) == 0
    assert "3 comparisons" in capsys.readouterr().out
    assert json.loads(target.read_text())["metadata"]["dataset_name"] == job
    bad = FIXTURES / "bad" / "hh_identical.jsonl"
    assert main([*home, "import", "hh", str(bad), "--name", "cli-bad"]) == 1
    assert "line 2: field 'rejected'" in capsys.readouterr().err
    assert main([*home, "import", "hh", str(bad), "--name", "cli-bad", "--skip-bad"]) == 0
    assert "1 bad rows skipped" in capsys.readouterr().out


def test_dpo_trains_on_imported_labels_and_its_lineage_names_the_import(store, tiny_spec):
    from cai_engine.training import jobs as training_jobs
    from tests.runners import finish, kill_runners

    result = import_pairs(store, FIXTURES / "trl_standard.jsonl", "prefs", "trl-dpo")
    labels = label_job_of(result)
    run = {"max_steps": 1, "batch_size": 2, "grad_accum": 1, "sample_tokens": 4}
    try:
        job = training_jobs.submit(
            store, "dpo", {"model": tiny_spec, "data": labels, "name": "dpo-imported", **run}
        )
        job = finish(store, job.id, timeout=300)
    finally:
        kill_runners(store.home)
    assert job.status == "succeeded", job.error
    lineage = store.model_named("dpo-imported")
    assert lineage["data_manifest"]["job"] == labels
    assert lineage["data_manifest"]["judge_check"] == "imported with the pairs: no judge"
