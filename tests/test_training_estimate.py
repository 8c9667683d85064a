"""The estimate before a training launch: the arithmetic from a measurement (by hand), what a
measurement is kept for, the first steps' warm-up, the text that states its basis, and a real
measurement of a few steps of the tiny model in a subprocess (once, then reused)."""

from __future__ import annotations

import json

import pytest

from cai_engine import jobs
from cai_engine.errors import CaiError
from cai_engine.training import data as training_data
from cai_engine.training import estimate
from tests.test_training import sft_export


def measurement(**override) -> estimate.Measurement:
    fields = {
        "step_s": 4.0,
        "tokens_per_step": 800.0,
        "first_step_s": 1.5,
        "startup_s": 18.0,
        "save_s": 2.0,
        "finish_s": 3.0,
        "sample_s_per_token": 0.05,
        "dtype": "bf16",
        "steps": 4,
        "source": "job sft-test",
        "measured_at": 1_800_000_000.0,
        "load": 3.5,
    }
    return estimate.Measurement(**{**fields, **override})


def sft_config(**override):
    return jobs.validate_config("sft", {"data": "unused", **override})


def rows(n: int, chars: int) -> list[dict]:
    """n SFT examples (TRL's form) whose JSON is exactly `chars` characters long."""
    out = []
    for i in range(n):
        answer = "x" * (chars - 103)  # 103: the JSON around it
        row = {
            "prompt": [{"role": "user", "content": f"q{i:03d}"}],
            "completion": [{"role": "assistant", "content": answer}],
        }
        assert len(json.dumps(row)) == chars
        out.append(row)
    return out


# -- the arithmetic -------------------------------------------------------------------------


def test_the_estimate_adds_start_up_samples_checkpoints_and_finish_to_the_measured_steps():
    # 40 examples of 400 characters (100 tokens); 8 per step (batch 4 x 2) = 800 tokens a step,
    # as measured, so a step takes the measured 4.0 s
    examples = rows(40, 400)
    config = sft_config(max_steps=8, eval_fraction=0, save_steps=5, sample_every=4)
    est = estimate.estimate(examples, config, "sft", 135_000_000, measurement())
    assert (est.train_examples, est.steps, est.tokens) == (40, 8, 6400)
    assert est.step_s == pytest.approx(4.0)
    # steps: 1.5 (the first one's warm-up) + 8 x 4.0
    assert est.steps_s == pytest.approx(33.5)
    # samples at step 0, 4, 8 and the end: 4 x 3 prompts x 48 tokens x 0.05 s = 28.8 s;
    # checkpoints at step 5 and the end: 2 x 2.0 s; start-up 18 s; finish 3 s
    assert (est.startup_s, est.samples_s, est.saving_s) == pytest.approx((18, 28.8, 4.0 + 3.0))
    assert est.seconds == pytest.approx(33.5 + 53.8)
    # 87.3 s in all; the headline names each part
    assert est.headline() == (
        "~1 min 27 s: 8 steps × 4.0 s/step measured on this CPU (bf16) + 18 s start-up, "
        "29 s samples and 7 s saving"
    )


def test_a_step_scales_with_its_tokens_and_the_epochs_set_the_steps():
    # 20 examples of 800 characters (200 tokens), 16 in training (eval_fraction 0.2: 4 out),
    # 8 a step: 2 steps an epoch, 1600 tokens a step = twice the measured 800
    config = sft_config(max_steps=-1, epochs=2, batch_size=4, grad_accum=2, eval_fraction=0.2)
    est = estimate.estimate(rows(20, 800), config, "sft", 135_000_000, measurement())
    assert (est.train_examples, est.steps) == (16, 4)
    assert est.step_s == pytest.approx(8.0)


def test_online_rl_counts_each_prompts_completions_and_their_tokens():
    config = jobs.validate_config(
        "rl",
        {"reward_model": "model:rm", "max_steps": -1, "num_generations": 4, "batch_size": 4,
         "grad_accum": 1, "max_completion_length": 100, "eval_fraction": 0},
    )  # fmt: skip
    # 6 prompts of 400 characters (100 tokens; 45 of them the JSON around the text)
    prompts = [{"prompt": [{"role": "user", "content": "x" * 355}]} for _ in range(6)]
    assert len(json.dumps(prompts[0])) == 400
    est = estimate.estimate(prompts, config, "rl", 135_000_000, measurement())
    # 6 prompts x 4 completions / 4 a step = 6 steps; each step 4 x (100 + 100) tokens
    assert (est.steps, est.tokens) == (6, 6 * 800)


def test_a_reward_models_estimate_leaves_out_the_human_pairs_as_its_job_does():
    from tests.test_training import pref_rows

    pairs = [training_data.PREFS.convert(r, i, "t") for i, r in enumerate(pref_rows(20, 4))]
    config = jobs.validate_config("reward", {"data": "unused", "max_steps": -1})
    est = estimate.estimate(pairs, config, "reward", 135_000_000, measurement())
    # 20 pairs, every 4th human: 15 AI pairs, 2 of them (round(1.5)) held out for eval
    assert est.train_examples == 13
    assert est.samples_s == 0  # a reward model writes no samples


def test_the_first_steps_warm_up_is_kept_apart_and_the_loops_overhead_spread_over_steps():
    m = estimate.from_timings(
        [9.0, 4.0, 2.2, 1.8, 2.1, 1.9],
        loop_s=24.0,  # 21.0 of steps + 1.0 of samples + 1.2 of checkpoints + 0.8 between
        saves=[1.2],
        startup_s=20.0,
        finish_s=3.0,
        sample_s=1.0,
        sample_tokens=40,
        tokens_per_step=500.0,
        dtype="fp32",
        source="test",
    )
    # a steady step: the median of the later half (1.8, 2.1, 1.9), + 0.8 / 6 between steps
    assert m.step_s == pytest.approx(1.9 + 0.8 / 6)
    assert m.first_step_s == pytest.approx(21.0 - 6 * 1.9)  # the warm-up: 9.6 s, charged once
    assert (m.save_s, m.sample_s_per_token) == (pytest.approx(1.2), pytest.approx(0.025))
    # the same steps again add up to what these took: 9.6 + 6 x (1.9 + 0.133) = 21.8 s
    # (5 examples of 100 tokens a step: the 500 tokens measured)
    config = sft_config(max_steps=6, batch_size=5, grad_accum=1, eval_fraction=0)
    est = estimate.estimate(rows(10, 400), config, "sft", 135_000_000, m)
    assert est.steps_s == pytest.approx(21.0 + 0.8)


# -- the text -------------------------------------------------------------------------------


def test_the_text_names_the_time_steps_step_time_device_precision_and_fixed_costs():
    config = sft_config(max_steps=8, eval_fraction=0, sample_prompts=0, save_steps=50)
    est = estimate.estimate(rows(64, 400), config, "sft", 135_000_000, measurement(step_s=4.2))
    # 18 + 1.5 + 8 x 4.2 + 2.0 (one checkpoint, at the end) + 3.0 = 58.1 s; no samples
    assert est.headline() == (
        "~58 s: 8 steps × 4.2 s/step measured on this CPU (bf16) + 18 s start-up and 5 s saving"
    )
    assert est.basis().startswith("64 training examples, about 6,400 tokens. Measured ")
    assert "by job sft-test (4 steps of about 800 tokens; this run's steps: about 800)." in (
        est.basis()
    )
    assert "The load was 3.5 on " in est.basis()  # the machine's load when it was measured
    assert est.text() == f"{est.headline()}. {est.basis()}"


def test_without_a_measurement_the_estimate_says_it_is_a_guess():
    config = sft_config(max_steps=8, eval_fraction=0)
    est = estimate.estimate(rows(64, 400), config, "sft", 135_000_000)
    assert est.measurement is None
    assert "a guess from the model's size (not measured on this CPU yet)" in est.headline()
    assert "measured on this CPU (" not in est.headline()


# -- what a measurement is kept for ---------------------------------------------------------


def test_a_measurement_is_kept_per_machine_model_kind_precision_lora_and_processes(tmp_path):
    config = sft_config(model="hf:/models/a")
    path = estimate.record(tmp_path, config, "sft", measurement())
    assert path.parent == tmp_path / "calibration"
    assert estimate.recorded(tmp_path, config, "sft") == measurement()
    for other, kind in [
        (config.model_copy(update={"lora": True}), "sft"),
        (config.model_copy(update={"precision": "fp32"}), "sft"),
        (sft_config(model="hf:/models/b"), "sft"),
        (config.model_copy(update={"launcher": "torchrun", "nproc": 2}), "sft"),
        (jobs.validate_config("dpo", {"data": "unused", "model": "hf:/models/a"}), "dpo"),
    ]:
        assert estimate.recorded(tmp_path, other, kind) is None, (other, kind)
    # the batch size is not part of it: a step is scaled by its tokens instead
    assert estimate.recorded(tmp_path, config.model_copy(update={"batch_size": 16}), "sft")


def test_a_measurement_from_another_machine_is_not_used(tmp_path, monkeypatch):
    config = sft_config(model="hf:/models/a")
    estimate.record(tmp_path, config, "sft", measurement())
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # torch would get another thread count
    assert estimate.recorded(tmp_path, config, "sft") is None


def test_a_cut_measurement_file_is_measured_again(tmp_path):
    config = sft_config(model="hf:/models/a")
    path = estimate.record(tmp_path, config, "sft", measurement())
    path.write_text('{"measurement": {"step_s": 4')
    assert estimate.recorded(tmp_path, config, "sft") is None


# -- measuring for real ---------------------------------------------------------------------


def test_the_first_estimate_measures_a_few_real_steps_and_later_ones_reuse_them(
    seeded_store, tmp_path, tiny_spec, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    folder = sft_export(tmp_path / "sft")
    config = jobs.validate_config(
        "sft",
        {"data": str(folder), "model": tiny_spec, "max_steps": 30, "batch_size": 2,
         "grad_accum": 1, "sample_tokens": 8},
    )  # fmt: skip
    assert estimate.recorded(seeded_store.home, config, "sft") is None
    first = estimate.estimate_for(seeded_store, "sft", config)
    m = first.measurement
    assert m is not None and m.source == f"{estimate.MEASURE_STEPS} steps before launch"
    assert m.steps == estimate.MEASURE_STEPS
    assert m.step_s > 0 and m.startup_s > 0 and m.save_s > 0 and m.sample_s_per_token > 0
    assert estimate.recorded(seeded_store.home, config, "sft") == m
    # 14 training rows (16, 2 held out), 2 a step, as the job would see them
    assert (first.train_examples, first.steps) == (14, 30)
    assert "measured on this CPU" in first.headline()
    # nothing left behind but the measurement: no job, no model, no run folder
    assert jobs.list_jobs(seeded_store) == [] and seeded_store.trained_models() == []
    assert sorted(p.name for p in (seeded_store.home / "calibration").iterdir()) == [
        estimate.record_path(seeded_store.home, config, "sft").name
    ]
    # the second estimate reads the record: the same measurement, not a new one
    again = estimate.estimate_for(seeded_store, "sft", config)
    assert again.measurement == m and again.seconds == pytest.approx(first.seconds)


def test_measuring_a_model_that_cannot_load_names_the_failure(seeded_store, tmp_path):
    folder = sft_export(tmp_path / "sft")
    missing = tmp_path / "no-model"
    missing.mkdir()
    config = jobs.validate_config("sft", {"data": str(folder), "model": f"hf:{missing}"})
    with pytest.raises(CaiError, match=rf"^measuring {estimate.MEASURE_STEPS} sft steps failed: "):
        estimate.estimate_for(seeded_store, "sft", config)
    assert estimate.recorded(seeded_store.home, config, "sft") is None


# -- the CLI --------------------------------------------------------------------------------


def test_cai_train_estimate_prints_the_estimate_and_its_basis_and_starts_nothing(
    seeded_store, tmp_path, tiny_spec, capsys
):
    from cai_engine.cli import main

    folder = sft_export(tmp_path / "sft")
    flags = {"data": str(folder), "model": tiny_spec, "max_steps": 5, "batch_size": 2}
    config = jobs.validate_config("sft", flags)
    estimate.record(seeded_store.home, config, "sft", measurement())  # measured earlier
    argv = ["--home", str(seeded_store.home), "train", "sft", "--data", str(folder),
            "--model", tiny_spec, "--max-steps", "5", "--batch-size", "2", "--estimate"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    shown = estimate.estimate_for(seeded_store, "sft", config, measure_missing=False)
    assert out == f"estimate: {shown.text()}\n"
    assert shown.headline().startswith("~") and "measured on this CPU (bf16)" in out
    assert jobs.list_jobs(seeded_store) == []


def test_cai_train_prints_the_estimate_after_submitting_and_does_not_measure(
    seeded_store, tmp_path, tiny_spec, capsys
):
    from cai_engine.cli import main
    from tests.runners import kill_runners

    folder = sft_export(tmp_path / "sft")
    argv = ["--home", str(seeded_store.home), "train", "sft", "--data", str(folder),
            "--model", tiny_spec, "--max-steps", "5", "--batch-size", "2"]  # fmt: skip
    try:
        assert main(argv) == 0
        out = capsys.readouterr().out.splitlines()
        (job,) = jobs.list_jobs(seeded_store)
        jobs.cancel(seeded_store, job.id, grace=5)
    finally:
        kill_runners(seeded_store.home)
    # nothing measured yet on this machine: a guess, which says so; no measuring before it
    assert out[0] == f"submitted {job.id}"
    assert out[1].startswith("estimate: ~") and "a guess from the model's size" in out[1], out
    assert not (seeded_store.home / "calibration").exists()
