"""`cai demo --tiny`: the whole pipeline as a chain of real jobs on the tiny random model, cut
once by a cancel in its first stage and resumed, then checked stage by stage for the rows and
artifacts each one must leave."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

import pytest

from cai_engine import demo, jobs
from cai_engine.cli import main
from cai_engine.errors import CaiError
from cai_engine.home import models_dir
from tests.runners import finish, wait_until

DEADLINE = 600.0  # the whole chain, on two cores that other tests may share


def test_cai_demo_tiny_runs_every_stage_as_a_real_job_and_resumes_after_a_cancel(
    seeded_store, cai_home, tiny_spec, capsys
):
    # Start it, and cancel it while its first stage (critique) is running.
    assert main(["demo", "--tiny", "--model", tiny_spec, "--no-wait"]) == 0
    (demo_job,) = jobs.list_jobs(seeded_store, kind="demo")
    # every stage uses the version that was newest at the start, even if one is saved meanwhile
    assert demo_job.config["constitution"] == seeded_store.get_version("harmless").pinned
    with pytest.raises(CaiError, match=f"demo {demo_job.id} is still running"):
        demo.submit_demo(seeded_store, {"profile": "tiny", "model": tiny_spec})
    wait_until(lambda: "critique" in demo.read_stages(demo_job.run), "the critique stage", 120)
    critique_id = demo.read_stages(demo_job.run)["critique"]
    assert main(["jobs", "cancel", demo_job.id]) == 0
    assert jobs.get_job(seeded_store, demo_job.id).status == "cancelled"
    assert jobs.get_job(seeded_store, critique_id).status in ("cancelled", "succeeded")

    # Resume it through the CLI, which follows it to the end.
    capsys.readouterr()
    assert main(["demo", "--resume", demo_job.id]) == 0
    out = capsys.readouterr().out
    demo_job = jobs.get_job(seeded_store, demo_job.id)
    assert demo_job.status == "succeeded", demo_job.error
    assert "demo finished in" in out and "harmlessness_win_rate" in out
    assert "revision progress of" in out

    stages = demo.read_stages(demo_job.run)
    assert list(stages) == list(demo.STAGES)
    assert stages["critique"] == critique_id  # the cancelled stage was resumed, not redone
    done = {stage: jobs.get_job(seeded_store, job_id) for stage, job_id in stages.items()}
    assert {stage: j.status for stage, j in done.items()} == dict.fromkeys(demo.STAGES, "succeeded")
    # the demo's counts are its stages, and its tokens those of its stages
    assert (demo_job.done, demo_job.total, demo_job.unit) == (6, 6, "stages")
    assert demo_job.tokens == sum(j.tokens for j in done.values()) > 0
    profile = demo.PROFILES["tiny"]
    n = profile.train_prompts

    # 1. critique: an initial answer, then a critique and a revision per round, per prompt
    traces = seeded_store.traces(stages["critique"])
    assert Counter(r["step"] for r in traces) == {
        "initial": n,
        "critique": n * profile.rounds,
        "revision": n * profile.rounds,
    }
    # 2. sft: a registered model on disk, trained on the critique job's revisions
    models = {m["name"]: m for m in seeded_store.trained_models()}
    sft = models[stages["sft"]]
    assert sft["kind"] == "sft" and sft["base_model"] == tiny_spec
    assert (models_dir(cai_home) / sft["name"] / "config.json").exists()
    lineage = json.loads((models_dir(cai_home) / sft["name"] / "lineage.json").read_text())
    assert lineage["data_manifest"]["job"] == stages["critique"]
    # 3. pairs from the SFT model; 4. a label for each pair
    pairs = seeded_store.pairs(stages["pairs"])
    assert len(pairs) == n and {p["model"] for p in pairs} == {f"model:{stages['sft']}"}
    labels = seeded_store.labels(stages["label"])
    assert len(labels) == n and all(0 <= r["soft_label"] <= 1 for r in labels)
    # 5. dpo: on the labels, from the SFT model
    dpo = models[stages["dpo"]]
    assert dpo["kind"] == "dpo" and dpo["base_model"] == f"model:{stages['sft']}"
    assert dpo["lineage"]["data_manifest"]["job"] == stages["label"]
    # 6. eval: base vs SFT vs DPO on both test splits, and the revision progress
    results = seeded_store.eval_results(stages["eval"])
    evaluated = [tiny_spec, f"model:{stages['sft']}", f"model:{stages['dpo']}"]
    assert done["eval"].config["models"] == evaluated
    wins = {r["model"] for r in results if r["metric"] == "harmlessness_win_rate"}
    assert wins == set(evaluated[1:])
    answers = Counter(a["model"] for a in seeded_store.eval_answers(stages["eval"]))
    assert answers == dict.fromkeys(evaluated, 2 * profile.test_prompts)
    rounds = [r for r in results if r["metric"].startswith("revision_round_")]
    assert [r["metric"] for r in rounds] == ["revision_round_1", "revision_round_2"]
    assert all(r["model"] == stages["critique"] and r["n"] == n for r in rounds)

    rows = demo.stage_rows(seeded_store, demo_job)
    assert [r["status"] for r in rows] == ["succeeded"] * len(demo.STAGES)
    metrics = demo_job.run.metrics()
    assert metrics[-1]["eval_job"] == stages["eval"] and metrics[-1]["seconds"] > 0


def test_the_tiny_profile_builds_its_model_once_under_the_data_home(cai_home):
    spec = demo.tiny_model_spec(cai_home)
    assert spec == f"hf:{cai_home / 'cache' / 'tiny-demo-model'}?dtype=float32"
    config = cai_home / "cache" / "tiny-demo-model" / "config.json"
    first = config.stat().st_mtime_ns
    assert demo.tiny_model_spec(cai_home) == spec and config.stat().st_mtime_ns == first


def test_a_missing_base_model_is_refused_before_any_job_starts(seeded_store, tmp_path):
    with pytest.raises(CaiError, match=r"is not on disk: .*nothing has no config.json"):
        demo.submit_demo(seeded_store, {"profile": "tiny", "model": f"hf:{tmp_path}/nothing"})
    assert jobs.list_jobs(seeded_store) == []


def test_a_stage_that_dies_stops_the_demo_naming_the_stage_and_how_to_go_on(
    seeded_store, tiny_spec
):
    job = demo.submit_demo(seeded_store, {"profile": "tiny", "model": tiny_spec})
    wait_until(lambda: "critique" in demo.read_stages(job.run), "the critique stage", 120)
    stage = jobs.get_job(seeded_store, demo.read_stages(job.run)["critique"])
    wait_until(lambda: jobs.get_job(seeded_store, stage.id).pid, "the stage's process", 60)
    os.killpg(jobs.get_job(seeded_store, stage.id).pid, signal.SIGKILL)
    job = finish(seeded_store, job.id, timeout=120)
    assert job.status == "failed"
    assert f"stage critique ({stage.id}) interrupted" in job.error
    assert "resume the demo to retry it" in job.error


def test_the_contrastive_demo_labels_contrastive_pairs_by_construction_and_the_rest_is_the_same():
    plain = demo.DemoConfig(profile="tiny", constitution="harmless@abc")
    rlcd = demo.DemoConfig(profile="tiny", constitution="harmless@abc", pairs="contrastive")
    done = {"critique": "c", "sft": "s", "pairs": "p", "label": "l", "dpo": "d"}
    configs = {s: demo.stage_config(s, rlcd, "base", done) for s in demo.STAGES}
    same = {s: demo.stage_config(s, plain, "base", done) for s in demo.STAGES}
    # the pairs: the SFT model's, under the demo's constitution's positive/negative prompts
    assert configs["pairs"] == {**same["pairs"], "contrastive": True, "constitution": "harmless@abc"}  # fmt: skip
    # labels by construction instead of the base model as judge
    assert configs["label"] == {"pairs": "p", "source": "construction"}
    for stage in ("critique", "sft", "dpo", "eval"):
        assert configs[stage] == same[stage], stage
    from cai_engine.labels import LabelConfig
    from cai_engine.pairs import PairsConfig

    PairsConfig(**configs["pairs"])  # both validate as their jobs will
    LabelConfig(**configs["label"])
    assert demo.stage_title("label", "contrastive") == "Labels by construction (no judge)"
    assert demo.stage_title("label", "samples") == demo.STAGE_TITLES["label"]
