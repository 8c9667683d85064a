"""The Training page through AppTest: the launch forms (estimate first, then start), the live
section of a job (progress, curves, samples, cancel and resume) and the trained models with
their lineage.

The jobs are real: TRL on the tiny random model, in subprocesses. The finished ones share a
module-scoped data home; the page's numbers are checked against the engine's own functions.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cai_engine import jobs
from cai_engine.bundled import install_bundled
from cai_engine.models import parse_spec
from cai_engine.store import Store
from cai_engine.training import data as training_data
from cai_engine.training import estimate, monitor
from cai_engine.training import jobs as training_jobs
from tests.runners import kill_runners, wait_until
from tests.test_training import prefs_export, sft_export, sft_rows
from tests.ui.test_pages import md_unescape

PAGE = str(Path(__file__).resolve().parents[2] / "ui" / "app_pages" / "training.py")
DEADLINE = 240.0  # seconds for a tiny job (the two cores may be busy with other jobs)
TINY = {"max_steps": 3, "batch_size": 2, "grad_accum": 1, "sample_tokens": 4}


def plain(text: str) -> str:
    """A message as the reader sees it: `md_escape`'s backslashes undone."""
    return re.sub(r"\\(.)", r"\1", text)


def run_page(timeout: float = 60) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=timeout)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at: AppTest, label: str, n: int = 0):
    return [b for b in at.button if b.label == label][n]


def markdowns(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def finish(store, job_id: str, timeout: float = DEADLINE) -> jobs.Job:
    job = jobs.wait(store, job_id, timeout=timeout, poll=0.25)
    assert job.status not in jobs.ACTIVE, f"{job_id} still {job.status} after {timeout:.0f}s"
    return job


# -- a home with a finished SFT and a finished reward job --------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_spec):
    """One data home with a finished tiny SFT job (samples at every step), a finished reward
    job and an SFT job with no eval split, submitted together so their start-ups overlap."""
    home = tmp_path_factory.mktemp("training-page") / "home"
    store = Store(home, lock_timeout=10)
    install_bundled(store)
    data = tmp_path_factory.mktemp("training-page-data")
    sft, prefs = sft_export(data / "sft"), prefs_export(data / "prefs")
    try:
        sft_job = training_jobs.submit(
            store, "sft", {"data": str(sft), "model": tiny_spec, "name": "page-sft",
                           "sample_every": 1, **TINY},
        )  # fmt: skip
        rm_job = training_jobs.submit(
            store, "reward", {"data": str(prefs), "model": tiny_spec, "name": "page-rm", **TINY}
        )
        whole_job = training_jobs.submit(
            store, "sft", {"data": str(sft), "model": tiny_spec, "name": "page-whole",
                           "eval_fraction": 0, **TINY},
        )  # fmt: skip
        sft_job, rm_job = finish(store, sft_job.id), finish(store, rm_job.id)
        whole_job = finish(store, whole_job.id)
    finally:
        kill_runners(home)
    for job in (sft_job, rm_job, whole_job):
        assert job.status == "succeeded", f"{job.error}\n{job.run.log_tail()[-2000:]}"
    return home, store, sft_job, rm_job, whole_job


@pytest.fixture
def trained_page(trained, monkeypatch):
    home, *_ = trained
    monkeypatch.setenv("CAI_HOME", str(home))
    return run_page()


# -- 1. no jobs -------------------------------------------------------------------------------


def test_with_no_jobs_the_page_says_how_to_start_one_and_why_there_is_no_ppo(seeded_store):
    at = run_page()
    assert [i.value for i in at.info] == [
        "No training jobs yet. Start one above, or with `cai train sft|reward|dpo|rl`."
    ]
    captions = [c.value for c in at.caption]
    assert any(
        "TRL 1.x has no PPOTrainer" in c and "GRPO" in c and "RLOO" in c for c in captions
    ), captions
    assert any("Models appear here when a training job succeeds" in c for c in captions)
    assert [t.label for t in at.tabs] == ["SFT", "Reward model", "DPO", "Online RL (GRPO / RLOO)"]
    assert [b.label for b in at.button if b.label.startswith("Start")] == [
        "Start SFT job",
        "Start Reward model job",
        "Start DPO job",
        "Start Online RL (GRPO / RLOO) job",
    ]
    assert len([b for b in at.button if b.label == "Estimate"]) == 4
    assert not at.selectbox(key="sft_data_job").value.startswith("sft-")
    assert len(at.dataframe) == 0 and len(at.progress) == 0


# -- 2. estimate ------------------------------------------------------------------------------


def fill_sft(at: AppTest, folder, model: str, steps: int, batch: int = 2, accum: int = 1):
    at.text_input(key="sft_data_path").input(str(folder))
    at.text_input(key="sft_model").input(model)
    at.number_input(key="sft_steps").set_value(steps)
    at.number_input(key="sft_batch").set_value(batch)
    at.number_input(key="sft_accum").set_value(accum)


def estimate_shown(at: AppTest) -> tuple[str, str]:
    """(headline, basis) of the estimate on the page."""
    (info,) = [i.value for i in at.info if "training examples" in i.value]
    headline, basis = info.split("\n\n")
    return headline, basis


def test_estimate_measures_this_machine_once_and_states_its_basis(
    seeded_store, tmp_path, tiny_spec, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the measuring process inherits it
    folder = sft_export(tmp_path / "sft")
    train, _ = training_data.split(sft_rows(), 0.1, 0)  # the default eval share and seed
    at = run_page()
    fill_sft(at, folder, tiny_spec, steps=5)
    button(at, "Estimate").click().run(timeout=DEADLINE)  # the first Estimate is the SFT tab's
    assert not at.exception and not at.error, [e.value for e in at.error]
    headline, basis = estimate_shown(at)
    took = r"(\d+ s|\d+ min \d\d s|\d+ h \d\d min)"  # format_duration's forms
    # then the samples and saving, each left out when it rounds to nothing
    assert re.match(
        rf"~{took}: 5 steps × [\d.]+ s/step measured on this CPU \((bf16|fp32)\) \+ "
        rf"{took} start-up",
        headline,
    ), headline
    assert basis.startswith(f"{len(train)} training examples, about ")
    assert f"by {estimate.MEASURE_STEPS} steps before launch" in basis
    # the page shows the engine's estimate from the measurement it recorded
    cfg = jobs.validate_config("sft", {"data": str(folder), "model": tiny_spec, "max_steps": 5,
                                       "batch_size": 2, "grad_accum": 1})  # fmt: skip
    m = estimate.recorded(seeded_store.home, cfg, "sft")
    assert m is not None
    expected = estimate.estimate(training_data.SFT.preview(seeded_store, cfg), cfg, "sft", 1, m)
    assert headline == expected.headline()

    # -1: the steps of one epoch at batch size x accumulation; the measurement is reused
    fill_sft(at, folder, tiny_spec, steps=-1, batch=2, accum=3)
    button(at, "Estimate").click().run()
    headline, basis = estimate_shown(at)
    steps = math.ceil(len(train) / 6)
    assert headline.split(": ")[1].startswith(f"{steps} steps × "), headline
    assert estimate.recorded(seeded_store.home, cfg, "sft") == m  # not measured again
    assert jobs.list_jobs(seeded_store) == []  # estimating starts nothing


def test_estimate_of_an_export_in_the_wrong_format_names_what_sft_needs(
    seeded_store, tmp_path, tiny_spec
):
    folder = prefs_export(tmp_path / "prefs")
    at = run_page()
    fill_sft(at, folder, tiny_spec, steps=5)
    button(at, "Estimate").click().run()
    assert not at.exception
    (error,) = [plain(e.value) for e in at.error]
    assert error.startswith("Cannot estimate: ")
    assert "'messages'" in error and "preference export" in error
    assert not [i for i in at.info if "training examples" in i.value]
    assert jobs.list_jobs(seeded_store) == []


# -- 3. start ---------------------------------------------------------------------------------


def test_start_submits_the_form_as_an_sft_job_and_selects_it(seeded_store, tmp_path, tiny_spec):
    folder = sft_export(tmp_path / "sft")
    at = run_page()
    fill_sft(at, folder, tiny_spec, steps=3, batch=2, accum=1)
    button(at, "Start SFT job").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (job,) = jobs.list_jobs(seeded_store, kind="sft")
    assert job.config["data"] == str(folder.resolve())
    assert job.config["model"] == str(parse_spec(tiny_spec))
    assert (job.config["max_steps"], job.config["batch_size"], job.config["grad_accum"]) == (
        3,
        2,
        1,
    )
    assert job.config["launcher"] == "python" and job.config["lora"] is False
    assert [plain(s.value) for s in at.success] == [f"Started {job.id}."]
    assert at.selectbox(key="training_job").value == job.id
    jobs.cancel(seeded_store, job.id, grace=5)  # the page's part is done


def test_a_model_served_over_http_is_not_started_and_the_form_is_kept(seeded_store, tmp_path):
    folder = sft_export(tmp_path / "sft")
    spec = "openai:x?base_url=http://127.0.0.1:9"
    at = run_page()
    fill_sft(at, folder, spec, steps=3)
    button(at, "Start SFT job").click().run()
    assert not at.exception
    (error,) = [plain(e.value) for e in at.error]
    assert error.startswith("Not started: invalid sft job config: model: ")
    assert "only a local model can be trained" in error
    assert not at.success
    assert at.text_input(key="sft_model").value == spec
    assert jobs.list_jobs(seeded_store) == []


# -- 4. a finished job -----------------------------------------------------------------------


def test_a_finished_sft_job_shows_its_progress_curves_and_samples(trained, trained_page):
    _, _, sft_job, _, _ = trained
    at = trained_page
    at.selectbox(key="training_job").set_value(sft_job.id).run()
    assert not at.exception
    assert [p.text for p in at.progress] == ["succeeded: step 3/3"]
    titles = markdowns(at)
    for title in ("**Loss**", "**Learning rate**", "**Token accuracy**"):
        assert title in titles, titles
    assert "**Reward accuracy**" not in titles
    expected = [t for t, _ in monitor.curves(sft_job.run.metrics(), "sft")]
    # one chart per curve with data (the two columns are read column by column)
    assert sorted(t for t in titles if t.strip("*") in expected) == sorted(
        f"**{t}**" for t in expected
    )
    assert len(at.get("vega_lite_chart")) == len(expected)
    # the samples table: newest first, every line of samples.jsonl
    samples = monitor.read_samples(sft_job.run.path)
    assert {s["step"] for s in samples} == {0, 1, 2, 3}  # sample_every 1, and the start
    assert "**Sample completions** on held-out prompts, greedy" in titles
    table = next(d.value for d in at.dataframe if "completion" in d.value.columns)
    assert list(table["step"]) == [s["step"] for s in samples[::-1]]
    assert set(table["prompt"]) <= {r["messages"][0]["content"] for r in sft_rows()}
    assert not [b for b in at.button if b.label in ("Cancel", "Resume")]


def test_the_trained_models_table_lists_the_models_with_their_lineage(trained, trained_page):
    _, store, sft_job, rm_job, _ = trained
    at = trained_page
    table = next(d.value for d in at.dataframe if "constitution" in d.value.columns)
    rows = {r["model"]: r for r in table.to_dict("records")}
    assert set(rows) == {"model:page-sft", "model:page-rm", "model:page-whole"}
    assert (rows["model:page-sft"]["kind"], rows["model:page-sft"]["job"]) == ("sft", sft_job.id)
    assert (rows["model:page-rm"]["kind"], rows["model:page-rm"]["job"]) == ("reward", rm_job.id)
    assert rows["model:page-sft"]["base"] == sft_job.config["model"]

    # the RL form offers the trained reward model (and only it); SFT data wants a critique job
    assert at.selectbox(key="rl_reward_model").options == ["(none)", "page-rm"]
    assert at.selectbox(key="sft_data_job").options == ["(no finished job yet)"]

    for name, job in (("page-sft", sft_job), ("page-rm", rm_job)):
        at.selectbox(key="lineage_of").set_value(name).run()
        assert not at.exception
        # in words first: who trained it, on what, from which base
        (table,) = at.table
        said = dict(zip(table.value[""], table.value["value"], strict=True))
        # the job is a link that opens it on this page
        assert said["trained by"].startswith(f"{job.kind} job [")
        assert f"(./training?job={job.id})" in said["trained by"]
        assert md_unescape(said["base model"]) == job.config["model"]
        assert "data" in said
        (code,) = at.code  # everything stored, in an expander below
        lineage = json.loads(code.value)
        assert lineage == json.loads(json.dumps(store.model_named(name), default=str))
        assert (lineage["job"], lineage["base_model"]) == (job.id, job.config["model"])
        assert job.id in code.value and job.config["model"] in code.value


def test_samples_of_a_job_without_an_eval_split_are_called_training_prompts(trained, trained_page):
    _, _, sft_job, _, whole_job = trained
    at = trained_page
    at.selectbox(key="training_job").set_value(whole_job.id).run()
    assert not at.exception
    titles = markdowns(at)
    assert "**Sample completions** on training prompts (no held-out split), greedy" in titles
    assert not [t for t in titles if "held-out prompts" in t], titles
    table = next(d.value for d in at.dataframe if "completion" in d.value.columns)
    assert list(table.columns) == ["step", "prompt", "completion"]
    # and the job with a split says held-out
    at.selectbox(key="training_job").set_value(sft_job.id).run()
    assert "**Sample completions** on held-out prompts, greedy" in markdowns(at)


def test_selecting_the_reward_job_shows_its_reward_accuracy_curve(trained, trained_page):
    _, _, _, rm_job, _ = trained
    at = trained_page
    at.selectbox(key="training_job").set_value(rm_job.id).run()
    assert not at.exception
    titles = markdowns(at)
    assert "**Loss**" in titles and "**Reward accuracy**" in titles, titles
    assert "**Token accuracy**" not in titles
    # no samples for a reward model
    assert not [d for d in at.dataframe if "completion" in d.value.columns]


# -- 5. a running job: ETA, cancel, resume -------------------------------------------------


@pytest.fixture(scope="module")
def long_job(tmp_path_factory, tiny_spec):
    """A home with an SFT job of many steps, running once its first step is logged."""
    home = tmp_path_factory.mktemp("training-long") / "home"
    store = Store(home, lock_timeout=10)
    install_bundled(store)
    folder = sft_export(tmp_path_factory.mktemp("training-long-data") / "sft")
    try:
        job = training_jobs.submit(
            store, "sft", {"data": str(folder), "model": tiny_spec, **TINY, "max_steps": 100_000,
                           "sample_every": 0, "save_steps": 100_000},
        )  # fmt: skip
        wait_until(
            lambda: jobs.get_job(store, job.id).done >= 1,
            "the long job's first step",
            timeout=DEADLINE,
        )
        yield home, store, job.id
    finally:
        kill_runners(home)


def test_an_eta_of_hours_is_not_shown_as_minutes(long_job, monkeypatch):
    home, store, job_id = long_job
    monkeypatch.setenv("CAI_HOME", str(home))
    at = run_page()
    (bar,) = at.progress
    job = jobs.get_job(store, job_id)
    expected = job.eta  # at the pace of its steps since training began (loading not counted)
    assert expected and expected > 2 * 3600  # 100,000 steps of a fraction of a second
    shown = re.search(r"about (.+) left", bar.text)
    assert shown, bar.text
    units = {"d": 86400, "h": 3600, "min": 60, "s": 1}
    seconds = sum(int(n) * units[u] for n, u in re.findall(r"(\d+) (d|h|min|s)\b", shown[1]))
    assert expected / 2 < seconds < expected * 2, (bar.text, expected)


def test_a_running_job_can_be_cancelled_and_resumed_from_the_page(long_job, monkeypatch):
    home, store, job_id = long_job
    monkeypatch.setenv("CAI_HOME", str(home))
    at = run_page()
    assert at.selectbox(key="training_job").value == job_id
    (bar,) = at.progress
    assert re.match(r"running: step \d+/100000 · about \d+ \w+( \d+ \w+)? left$", bar.text), (
        bar.text
    )
    assert at.button(key="train_cancel").label == "Cancel"
    assert not [b for b in at.button if b.key == "train_resume"]

    at.button(key="train_cancel").click().run(timeout=DEADLINE)
    assert not at.exception
    job = jobs.get_job(store, job_id)
    assert job.status == "cancelled", (job.status, job.error)
    assert [e["event"] for e in job.run.events()].count("checkpointed_on_cancel") == 1
    assert not [b for b in at.button if b.key == "train_cancel"]
    assert at.button(key="train_resume").label == "Resume"
    assert at.progress[0].text.startswith("cancelled: step ")

    at.button(key="train_resume").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = jobs.get_job(store, job_id)
    assert job.status in jobs.ACTIVE
    assert [e["event"] for e in job.run.events()].count("resumed") == 1
    assert at.button(key="train_cancel").label == "Cancel"
    assert not [b for b in at.button if b.key == "train_resume"]
    jobs.cancel(store, job_id, grace=10)
    assert jobs.get_job(store, job_id).status in jobs.RESUMABLE


# -- 6. the forms read each kind's config ----------------------------------------------------


def test_the_forms_defaults_and_help_come_from_each_kinds_config(seeded_store):
    at = run_page()
    for kind in ("sft", "reward", "dpo", "rl"):
        assert (
            at.number_input(key=f"{kind}_batch").value,
            at.number_input(key=f"{kind}_accum").value,
        ) == (4, 2)
        assert at.number_input(key=f"{kind}_nproc").value == 1
    # learning rates differ per trainer (config.py)
    assert [at.number_input(key=f"{k}_lr").value for k in ("sft", "reward", "dpo", "rl")] == [
        2e-5, 5e-5, 5e-6, 1e-6,
    ]  # fmt: skip
    assert at.number_input(key="sft_batch").help == "Examples per device per step."
    assert at.number_input(key="rl_batch").help == "Completions per device per step."
    assert at.number_input(key="rl_gen").value == 4
    assert at.selectbox(key="rl_algorithm").options == ["grpo", "rloo"]
    assert at.text_input(key="rl_data").value == "red-team:train"
