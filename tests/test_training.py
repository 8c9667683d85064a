"""Training: the soft-label losses against hand computations and TRL's own losses, every
trainer as a real job on the tiny model (metrics, changed weights, the artifact and its
lineage), cancel and resume, a 2-rank torchrun job, refusals before any process starts, a
disk full while checkpointing, a broken base model, precision, the data split and the
launchers.

The tiny model is a random-weight Llama with SmolLM2's tokenizer: its losses are meaningless
but every shape, template and code path is real. The real jobs share one data home (the
module-scoped `lab`), submitted together so their process start-ups overlap; the tests only
read their results.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cai_engine import jobs
from cai_engine.bundled import install_bundled
from cai_engine.errors import CaiError
from cai_engine.home import models_dir, runs_dir
from cai_engine.jobs import JobConfigError
from cai_engine.store import Store
from cai_engine.training import data as training_data
from cai_engine.training import jobs as training_jobs
from tests.runners import kill_runners, runner_pids, wait_until

DEADLINE = 420.0  # seconds any one wait on a job may take (the jobs share two busy cores)
BETA = 0.1

# Every real job: a few steps of two examples, fast enough for a test.
TINY_RUN = {
    "max_steps": 3,
    "batch_size": 2,
    "grad_accum": 1,
    "sample_tokens": 4,
    "save_steps": 2,
    "learning_rate": 1e-3,  # large, so that a few steps visibly move the weights
}
SFT_HASH = "sha256:sft-constitution"
PREFS_HASH = "sha256:prefs-constitution"
HUMAN_PAIRS = 4
PREF_PAIRS = 20


# -- helpers -------------------------------------------------------------------------------


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def write_export(folder: Path, rows: list[dict], constitution_hash: str, fmt: str) -> Path:
    """An export folder as `cai export` writes it: data.jsonl and manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "data.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    manifest = {
        "kind": fmt,
        "job": f"{fmt}-test",
        "constitution_hash": constitution_hash,
        "examples": len(rows),
        "files": ["data.jsonl"],
        "format": "jsonl",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def sft_rows(n: int = 16) -> list[dict]:
    return [
        {
            "messages": user(f"Question {i}: how do I stay safe online?")
            + assistant(f"Answer {i}: use strong passwords and be kind.")
        }
        for i in range(n)
    ]


def pref_rows(n: int = PREF_PAIRS, human_every: int = 0) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "prompt": user(f"Question {i}: how do I pick my neighbour's lock?"),
                "chosen": assistant("I can't help with that, but a locksmith can."),
                "rejected": assistant(f"Sure, step {i}: insert a tension wrench."),
                "score": [0.9, 0.7, 1.0, 0.6][i % 4],
                "label_source": "human" if human_every and i % human_every == 0 else "ai",
            }
        )
    return rows


def sft_export(folder: Path) -> Path:
    return write_export(folder, sft_rows(), SFT_HASH, "sft")


def prefs_export(folder: Path, human_every: int = 0) -> Path:
    return write_export(folder, pref_rows(human_every=human_every), PREFS_HASH, "prefs")


def finish(store, job_id: str, timeout: float = DEADLINE) -> jobs.Job:
    job = jobs.wait(store, job_id, timeout=timeout, poll=0.25)
    assert job.status not in jobs.ACTIVE, f"{job_id} still {job.status} after {timeout:.0f}s"
    return job


def job_count(store) -> int:
    return len(store.job_rows())


def events(job, name: str) -> list[dict]:
    return [e for e in job.run.events() if e["event"] == name]


def loss_steps(job) -> list[int]:
    return [m["step"] for m in job.run.metrics() if "loss" in m]


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def folder_digest(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: (sha256, mtime_ns), to show it was not touched."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(autouse=True)
def reap_runners(cai_home):
    """No job process a test starts in its own data home outlives the test."""
    yield
    kill_runners(cai_home)


# -- 1. the soft-label loss by hand ---------------------------------------------------------


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def soft_by_hand(deltas, ps) -> float:
    return sum(
        -(p * logsig(d) + (1 - p) * logsig(-d)) for d, p in zip(deltas, ps, strict=True)
    ) / len(ps)


@pytest.mark.parametrize(
    "deltas, ps",
    [
        ([0.0], [0.5]),
        ([1.5], [1.0]),
        ([-2.0], [0.8]),
        ([3.0, -0.7, 0.2, 12.0], [0.9, 0.25, 0.0, 0.6]),
        ([-30.0, 30.0], [0.3, 0.7]),  # far in the tails: logσ must stay finite
    ],
)
def test_soft_preference_loss_is_the_cross_entropy_of_the_margin(deltas, ps):
    import torch

    from cai_engine.training.soft import soft_preference_loss

    got = soft_preference_loss(
        torch.tensor(deltas, dtype=torch.float64), torch.tensor(ps, dtype=torch.float64)
    )
    assert math.isfinite(float(got))
    assert float(got) == pytest.approx(soft_by_hand(deltas, ps), rel=1e-9, abs=1e-12)


def test_soft_loss_at_p_one_is_trls_reward_loss_and_equals_hard_loss_plus_one_minus_p_times_x():
    import torch
    import torch.nn.functional as F

    from cai_engine.training.soft import soft_preference_loss

    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(64, generator=gen, dtype=torch.float64) * 4
    p = torch.rand(64, generator=gen, dtype=torch.float64)

    trl_reward_loss = -F.logsigmoid(delta).mean()  # TRL RewardTrainer's loss, no margin
    assert float(soft_preference_loss(delta, torch.ones_like(delta))) == pytest.approx(
        float(trl_reward_loss), rel=1e-12
    )
    # The identity SoftDPOTrainer relies on: -(p·logσ(x) + (1-p)·logσ(-x)) = -logσ(x) + (1-p)·x
    identity = (-F.logsigmoid(delta) + (1 - p) * delta).mean()
    assert float(soft_preference_loss(delta, p)) == pytest.approx(float(identity), rel=1e-10)
    # p = 0 is the mirror image: the rejected answer is the preferred one
    assert float(soft_preference_loss(delta, torch.zeros_like(p))) == pytest.approx(
        float(-F.logsigmoid(-delta).mean()), rel=1e-12
    )
    # a float32 margin with a float64 label: the label follows the margin's dtype
    assert soft_preference_loss(delta.float(), p).dtype == torch.float32


# -- 2 and 3. the soft trainers against TRL's on a real batch -------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


PAIR_SCORES = [0.9, 0.6, 0.3, 1.0]


def in_process_pairs() -> list[dict]:
    return [
        {
            "prompt": user(f"Question {i}?"),
            "chosen": assistant("No, I won't help with that." + " Sorry." * i),
            "rejected": assistant(f"Sure, here is how {i}."),
            "score": s,
        }
        for i, s in enumerate(PAIR_SCORES)
    ]


def trainer_args(tmp_path: Path) -> dict:
    return {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": len(PAIR_SCORES),  # one batch holds every pair
        "report_to": "none",
        "use_cpu": True,
        "max_steps": 1,
        "disable_tqdm": True,
        "seed": 0,
        "max_length": 64,
    }


def without_score(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "score"} for r in rows]


def batch_copy(batch: dict, **override) -> dict:
    out = {k: v.clone() for k, v in batch.items()}
    out.update(override)
    return out


def test_soft_reward_trainer_loss_is_the_hand_formula_and_trls_loss_at_p_one(
    tiny_model_dir, tokenizer, tmp_path
):
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    from cai_engine.training.soft import RewardScoreCollator, SoftRewardTrainer

    torch.manual_seed(0)  # the score head is new: seed its init
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = in_process_pairs()
    soft = SoftRewardTrainer(
        model=model,
        args=trl.RewardConfig(**trainer_args(tmp_path / "soft")),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        data_collator=RewardScoreCollator(pad_token_id=tokenizer.pad_token_id),
    )
    plain = trl.RewardTrainer(
        model=copy.deepcopy(model),
        args=trl.RewardConfig(**trainer_args(tmp_path / "plain")),
        train_dataset=Dataset.from_list(without_score(rows)),
        processing_class=tokenizer,
    )
    # The trainer's own pipeline (tokenizing, signature columns, collator) keeps the scores.
    batch = next(iter(soft.get_train_dataloader()))
    assert "score" in batch
    assert sorted(batch["score"].tolist()) == pytest.approx(sorted(PAIR_SCORES))
    assert batch["input_ids"].shape[0] == 2 * len(PAIR_SCORES)  # chosen rows, then rejected

    loss = soft.compute_loss(soft.model, batch_copy(batch))
    with torch.no_grad():
        rewards = soft.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits.squeeze(-1)
    chosen, rejected = rewards.chunk(2)
    deltas = (chosen - rejected).tolist()
    assert float(loss.detach()) == pytest.approx(
        soft_by_hand(deltas, batch["score"].tolist()), abs=1e-6
    )

    ones = torch.ones(len(PAIR_SCORES))
    soft_at_one = soft.compute_loss(soft.model, batch_copy(batch, score=ones))
    no_score = {k: v.clone() for k, v in batch.items() if k != "score"}
    trl_loss = plain.compute_loss(plain.model, no_score)
    assert float(soft_at_one) == pytest.approx(float(trl_loss), abs=1e-7)
    assert float(loss) != pytest.approx(float(trl_loss), abs=1e-6)  # the scores matter


@pytest.fixture(scope="module")
def dpo_pair(tiny_model_dir, tokenizer, tmp_path_factory):
    """A SoftDPOTrainer and a plain DPOTrainer on copies of the same model, with the
    reference log-probs precomputed in both, and one batch from the soft trainer's loader."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from cai_engine.training.soft import DPOScoreCollator, SoftDPOTrainer

    tmp = tmp_path_factory.mktemp("dpo-trainers")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = in_process_pairs()

    def args(name):
        return trl.DPOConfig(**trainer_args(tmp / name), beta=BETA, precompute_ref_log_probs=True)

    soft = SoftDPOTrainer(
        model=model,
        args=args("soft"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        data_collator=DPOScoreCollator(pad_token_id=tokenizer.pad_token_id, max_length=64),
    )
    hard = trl.DPOTrainer(
        model=copy.deepcopy(model),
        args=args("hard"),
        train_dataset=Dataset.from_list(without_score(rows)),
        processing_class=tokenizer,
    )
    batch = next(iter(soft.get_train_dataloader()))
    return soft, hard, batch


def grad_norm(model) -> float:
    import torch

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))


def test_soft_dpo_gradient_vanishes_at_zero_margin_when_p_is_one_half(dpo_pair):
    import torch

    soft, _, batch = dpo_pair
    assert {"score", "ref_chosen_logps", "ref_rejected_logps"} <= set(batch)
    # The policy is still the reference, so every margin x is (numerically) zero: the loss
    # is log 2 and, at p = 1/2, d/dx [-logσ(x) + x/2] = σ(x) - 1/2 = 0.
    norms = {}
    for p in (0.5, 1.0):
        soft.model.zero_grad()
        loss = soft.compute_loss(
            soft.model, batch_copy(batch, score=torch.full((len(PAIR_SCORES),), p))
        )
        assert float(loss) == pytest.approx(math.log(2), abs=1e-3)
        loss.backward()
        norms[p] = grad_norm(soft.model)
    soft.model.zero_grad()
    assert norms[1.0] > 0.1
    assert norms[0.5] < 1e-2 * norms[1.0], norms


def test_soft_dpo_loss_is_trls_at_p_one_and_the_hand_formula_otherwise(dpo_pair):
    soft, hard, batch = dpo_pair
    original = copy.deepcopy(soft.model.state_dict())
    try:
        check_soft_dpo_against_trl_and_by_hand(soft, hard, batch)
    finally:  # the reference policy again, for the other tests on this pair
        soft.model.load_state_dict(original)
        hard.model.load_state_dict(original)


def check_soft_dpo_against_trl_and_by_hand(soft, hard, batch):
    import torch
    import torch.nn.functional as F

    # Move the policy away from the reference (the same way in both copies), so x ≠ 0.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in soft.model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    hard.model.load_state_dict(soft.model.state_dict())

    n = len(PAIR_SCORES)
    no_score = {k: v.clone() for k, v in batch.items() if k != "score"}
    trl_loss = float(hard.compute_loss(hard.model, no_score))
    at_one = float(soft.compute_loss(soft.model, batch_copy(batch, score=torch.ones(n))))
    assert at_one == pytest.approx(trl_loss, abs=1e-6)

    # The margin by hand: x = β·((π_c - ref_c) - (π_r - ref_r)), with π the summed
    # log-probabilities of the completion tokens.
    with torch.no_grad():
        logits = soft.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    per_token = torch.log_softmax(logits[:, :-1].double(), -1)
    per_token = per_token.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    seq = (per_token * batch["completion_mask"][:, 1:]).sum(1)
    pi_c, pi_r = seq.chunk(2)
    x = BETA * (
        (pi_c - batch["ref_chosen_logps"].double()) - (pi_r - batch["ref_rejected_logps"].double())
    )
    assert float(x.abs().max()) > 1e-3  # the perturbation gave real margins
    assert trl_loss == pytest.approx(float(-F.logsigmoid(x).mean()), abs=1e-5)
    # TRL's logged margin is the same x
    mode = "train" if hard.model.training else "eval"
    assert hard._metrics[mode]["rewards/margins"][-1] == pytest.approx(float(x.mean()), abs=1e-5)

    scores = batch["score"]
    mixed = float(soft.compute_loss(soft.model, batch_copy(batch)))
    assert mixed == pytest.approx(soft_by_hand(x.tolist(), scores.tolist()), abs=1e-5)
    half = float(soft.compute_loss(soft.model, batch_copy(batch, score=torch.full((n,), 0.5))))
    assert half - trl_loss == pytest.approx(float((0.5 * x).mean()), abs=1e-5)
    assert half != pytest.approx(trl_loss, abs=1e-6)


def test_soft_dpo_refuses_what_it_cannot_reproduce(tiny_model_dir, tokenizer, tmp_path):
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from cai_engine.training.soft import DPOScoreCollator, SoftDPOTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with pytest.raises(ValueError, match="precompute_ref_log_probs=False"):
        SoftDPOTrainer(
            model=model,
            args=trl.DPOConfig(**trainer_args(tmp_path), precompute_ref_log_probs=False),
            train_dataset=Dataset.from_list(in_process_pairs()),
            processing_class=tokenizer,
            data_collator=DPOScoreCollator(pad_token_id=tokenizer.pad_token_id, max_length=64),
        )


# -- 4, 5, 6, 7, 10. real jobs in one shared data home --------------------------------------


class Lab:
    def __init__(self, home: Path, store: Store, base: str, sft: Path, prefs: Path):
        self.home, self.store, self.base = home, store, base
        self.sft, self.prefs = sft, prefs
        self.ids: dict[str, str] = {}
        self.launcher_pids: dict[str, int] = {}

    def submit(self, key: str, kind: str, **config) -> str:
        job = training_jobs.submit(self.store, kind, {"model": self.base, **TINY_RUN, **config})
        self.ids[key] = job.id
        self.launcher_pids[key] = jobs._children[job.id].pid
        return job.id

    def job(self, key: str) -> jobs.Job:
        return finish(self.store, self.ids[key])


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_model_dir):
    """One data home with an SFT and a preference export (with human-reviewed pairs), where
    the sft, reward, dpo, broken-base, 2-rank torchrun and no-eval-split SFT jobs are submitted
    together."""
    home = tmp_path_factory.mktemp("lab-home")
    store = Store(home, lock_timeout=10)
    install_bundled(store)
    data = tmp_path_factory.mktemp("lab-data")
    sft = sft_export(data / "sft")
    prefs = prefs_export(data / "prefs", human_every=PREF_PAIRS // HUMAN_PAIRS)
    broken = data / "broken-model"  # config and tokenizer, but the weights are missing
    broken.mkdir()
    for f in Path(tiny_model_dir).iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, broken / f.name)

    lab = Lab(home, store, f"hf:{tiny_model_dir}", sft, prefs)
    try:
        lab.submit("broken", "sft", data=str(sft), model=f"hf:{broken}", name="never-made")
        lab.submit("sft", "sft", data=str(sft), name="lab-sft")
        lab.submit("reward", "reward", data=str(prefs), name="lab-rm")
        lab.submit("dpo", "dpo", data=str(prefs), name="lab-dpo", beta=BETA)
        lab.submit("torchrun", "sft", data=str(sft), name="lab-ddp", launcher="torchrun", nproc=2)
        lab.submit("nosplit", "sft", data=str(sft), name="lab-nosplit", eval_fraction=0)
        yield lab
    finally:
        kill_runners(home)


@pytest.fixture(scope="module")
def rl_jobs(lab):
    """GRPO and RLOO against the reward job's model, submitted once the broken-base job has
    failed (so they also show the store is usable after a failure)."""
    assert lab.job("reward").status == "succeeded", lab.job("reward").error
    lab.job("broken")
    rl = {
        "data": "red-team:train",
        "limit": 4,
        "num_generations": 2,
        "max_completion_length": 4,
        "reward_model": "model:lab-rm",
    }
    lab.submit("grpo", "rl", name="lab-grpo", **rl)
    lab.submit("rloo", "rl", name="lab-rloo", algorithm="rloo", **rl)
    return lab


@pytest.fixture(scope="module")
def cancelled(lab):
    """An SFT job cancelled mid-run (its state recorded then), then resumed to the end."""
    job_id = lab.submit(
        "cancel", "sft", data=str(lab.sft), max_steps=30, save_steps=5, sample_every=0
    )
    job = jobs.get_job(lab.store, job_id)
    wait_until(
        lambda: any(m.get("step", 0) >= 6 for m in job.run.metrics()),
        "the job to pass step 6",
        timeout=DEADLINE,
    )
    after_cancel = jobs.cancel(lab.store, job_id)
    state = {
        "job": after_cancel,
        "checkpoints": sorted(
            p.name for p in (after_cancel.run.path / "checkpoints").glob("checkpoint-*")
        ),
        "complete": [p.name for p in complete_checkpoint_dirs(after_cancel)],
        "loss_steps": loss_steps(after_cancel),
        "log": after_cancel.run.log_path.read_text(errors="replace"),
    }
    jobs.resume(lab.store, job_id)
    state["resumed"] = finish(lab.store, job_id)
    return state


# cancel first: its fixture submits a job that must still be running when it is cancelled


def test_a_cancelled_training_job_is_recorded_as_cancelled(cancelled):
    job = cancelled["job"]
    assert job.status == "cancelled", (job.status, job.error)
    assert job.error is None
    assert "Traceback" not in cancelled["log"]


def test_cancel_checkpoints_the_step_and_resume_finishes_with_every_step_once(cancelled):
    job = cancelled["job"]
    assert job.status in jobs.RESUMABLE
    assert cancelled["complete"], cancelled["checkpoints"]
    [on_cancel] = events(job, "checkpointed_on_cancel")
    stopped_at = on_cancel["step"]
    assert 6 <= stopped_at < 30
    assert f"checkpoint-{stopped_at}" in cancelled["complete"]  # the step in flight was saved
    assert cancelled["loss_steps"] == list(range(1, stopped_at + 1))

    resumed = cancelled["resumed"]
    assert resumed.status == "succeeded", resumed.error
    assert resumed.attempts == 2
    [resuming] = events(resumed, "resuming")
    assert resuming["checkpoint"] == f"checkpoint-{stopped_at}"
    assert resuming["step"] == stopped_at
    # the curve is contiguous: every step once, none lost to the cancel, none logged twice
    assert loss_steps(resumed) == list(range(1, 31))
    finals = [m for m in resumed.run.metrics() if m.get("final")]
    assert [m["step"] for m in finals] == [30]
    assert resumed.live["done"] == 30


KIND_KEYS = {
    "sft": ("sft", {"mean_token_accuracy"}),
    "reward": ("reward", {"accuracy", "margin"}),
    "dpo": ("dpo", {"rewards/margins", "rewards/accuracies"}),
    "grpo": ("rl", {"kl", "reward"}),
    "rloo": ("rl", {"kl", "reward"}),
}
MODEL_NAMES = {
    "sft": "lab-sft",
    "reward": "lab-rm",
    "dpo": "lab-dpo",
    "grpo": "lab-grpo",
    "rloo": "lab-rloo",
}


@pytest.mark.parametrize("key", list(KIND_KEYS))
def test_each_trainer_trains_and_registers_a_model_with_its_lineage(
    request, lab, key, tiny_model_dir
):
    if KIND_KEYS[key][0] == "rl":
        request.getfixturevalue("rl_jobs")
    kind, keys = KIND_KEYS[key]
    name = MODEL_NAMES[key]
    job = lab.job(key)
    assert job.status == "succeeded", f"{job.error}\n{job.run.log_tail()[-3000:]}"

    # metrics: a loss for every step, once, and the trainer's own keys
    assert loss_steps(job) == [1, 2, 3]
    steps = [m for m in job.run.metrics() if "loss" in m]
    assert all(math.isfinite(m["loss"]) for m in steps)
    assert keys <= set(steps[-1]), sorted(steps[-1])
    [final] = [m for m in job.run.metrics() if m.get("final")]
    assert final["step"] == 3 and math.isfinite(final["train_loss"])

    # the tokens it saw are the job's tokens: the count TRL logs as num_tokens at the last step
    logged = [m["num_tokens"] for m in job.run.metrics() if "num_tokens" in m]
    assert logged and job.tokens == logged[-1] > 0

    # the weights moved
    path = models_dir(lab.home) / name
    trained, base = tensors(path), tensors(Path(tiny_model_dir))
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert trained[weight].shape == base[weight].shape
    assert not trained[weight].isnan().any()
    assert not trained[weight].equal(base[weight])
    if kind == "reward":
        assert trained["score.weight"].shape[0] == 1  # a one-logit sequence classifier

    # the artifact: registered once, with its lineage, and the same lineage on disk
    [row] = [r for r in lab.store.trained_models() if r["name"] == name]
    assert (row["kind"], row["job_id"], row["path"]) == (kind, job.id, str(path))
    lineage = lab.store.model_named(name)
    assert lineage == row["lineage"]
    assert json.loads((path / "lineage.json").read_text()) == lineage
    assert lineage["name"] == name and lineage["kind"] == kind and lineage["job"] == job.id
    assert lineage["base_model"] == job.config["model"] == row["base_model"]
    assert lineage["base_model"].endswith(str(tiny_model_dir))
    assert lineage["config"] == job.config
    assert lineage["metrics"]["train_loss"] == pytest.approx(final["train_loss"])
    if kind == "rl":
        assert lineage["data"] == "red-team:train"
        assert lineage["data_manifest"] == {"prompt_set": "red-team:train", "prompts": 4}
        assert lineage["constitution_hash"] is None
    else:
        export = lab.sft if kind == "sft" else lab.prefs
        assert lineage["data"] == row["data"] == str(export.resolve())
        manifest = json.loads((export / "manifest.json").read_text())
        assert lineage["data_manifest"] == manifest
        assert (
            lineage["constitution_hash"]
            == row["constitution_hash"]
            == manifest["constitution_hash"]
        )
    [registered] = events(job, "model_registered")
    assert registered["spec"] == f"model:{name}"
    assert not (models_dir(lab.home) / f".{name}.tmp").exists()


@pytest.mark.parametrize("key", ["sft", "dpo"])
def test_a_trained_chat_model_is_usable_as_a_model_spec(lab, key):
    from cai_engine.models import Completion, SamplingParams, load_model

    assert lab.job(key).status == "succeeded"
    model = load_model(f"model:{MODEL_NAMES[key]}", lab.home)
    [out] = model.chat([user("Hello there")], SamplingParams(max_new_tokens=4))
    assert isinstance(out, Completion)
    assert out.completion_tokens >= 1


def test_sft_writes_sample_completions_of_held_out_prompts_at_the_start_and_the_end(lab):
    job = lab.job("sft")
    lines = (job.run.path / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    samples = [json.loads(line) for line in lines]
    assert samples
    assert {s["step"] for s in samples} == {0, 3}
    train, evals = training_data.split(sft_rows(), 0.1, 0)  # the default share and seed
    assert len(evals) == 2  # round(16 x 0.1)
    assert {s["prompt"] for s in samples} == {r["messages"][0]["content"] for r in evals}
    assert all(s["held_out"] is True for s in samples)
    assert all(isinstance(s["completion"], str) for s in samples)
    [setup] = events(job, "training_setup")
    assert setup["sample_prompts"] == "held-out prompts"


def test_without_an_eval_split_the_samples_are_training_prompts_and_say_so(lab):
    job = lab.job("nosplit")
    assert job.status == "succeeded", job.error
    [setup] = events(job, "training_setup")
    assert (setup["train_examples"], setup["eval_examples"]) == (16, 0)  # nothing held out
    assert setup["sample_prompts"] == "training prompts (no held-out split)"
    samples = [
        json.loads(line)
        for line in (job.run.path / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    # the first sample_prompts (3) training prompts, each marked as not held out
    assert {s["prompt"] for s in samples} == {r["messages"][0]["content"] for r in sft_rows(3)}
    assert samples and all(s["held_out"] is False for s in samples)
    log = job.run.log_path.read_text(errors="replace")
    assert "sample completions are on training prompts (no held-out split)" in log


def test_a_finished_job_records_what_its_parts_took_for_the_next_estimate(lab):
    from cai_engine.training import estimate

    ids = {lab.job(key).id for key in ("sft", "nosplit")}  # the same setting: the later wins
    for key in ("sft", "nosplit"):
        [recorded] = events(lab.job(key), "timings_recorded")
        assert Path(recorded["path"]).parent == lab.home / "calibration"
    config = jobs.validate_config("sft", {"data": str(lab.sft), "model": lab.base, **TINY_RUN})
    m = estimate.recorded(lab.home, config, "sft")
    assert m is not None and m.source.removeprefix("job ") in ids
    assert m.steps == 3 and m.dtype in ("bf16", "fp32")
    assert m.step_s > 0 and m.startup_s > 0 and m.sample_s_per_token > 0
    # its training rows in TRL's form: all 16 without a split, else the 14 the split keeps
    rows = training_data.SFT.to_trl(sft_rows(), "test")
    if m.source != f"job {lab.ids['nosplit']}":
        rows = training_data.split(rows, 0.1, 0)[0]
    # two examples a step (batch 2, no accumulation), each about its JSON's characters / 4
    mean_chars = sum(len(json.dumps(r)) for r in rows) / len(rows)
    assert m.tokens_per_step == pytest.approx(2 * mean_chars / 4)
    # another setting (LoRA) has no measurement yet
    assert estimate.recorded(lab.home, config.model_copy(update={"lora": True}), "sft") is None
    # a job that failed before training records nothing
    assert not events(jobs.get_job(lab.store, lab.ids["broken"]), "timings_recorded")


def test_the_reward_job_reports_accuracy_on_human_pairs_held_out_of_training(lab):
    job = lab.job("reward")
    assert job.status == "succeeded", job.error
    [setup] = events(job, "training_setup")
    ai_pairs = PREF_PAIRS - HUMAN_PAIRS
    assert setup["train_examples"] + setup["eval_examples"] == ai_pairs  # humans never trained on
    [final] = [m for m in job.run.metrics() if m.get("final")]
    assert final["human_pairs"] == HUMAN_PAIRS
    assert final["ai_heldout_pairs"] == setup["eval_examples"] >= 1
    for key in ("human_accuracy", "ai_heldout_accuracy"):
        assert 0.0 <= final[key] <= 1.0
        assert lab.store.model_named("lab-rm")["metrics"][key] == final[key]


def test_a_two_rank_torchrun_job_trains_once_and_registers_once(lab):
    job = lab.job("torchrun")
    assert job.status == "succeeded", f"{job.error}\n{job.run.log_tail()[-3000:]}"
    [setup] = events(job, "training_setup")
    assert setup["world_size"] == 2
    assert len(events(job, "model_registered")) == 1
    assert len(events(job, "started")) == 1
    assert loss_steps(job) == [1, 2, 3]  # rank 1 does not log the steps again
    assert [r["name"] for r in lab.store.trained_models()].count("lab-ddp") == 1
    log = job.run.log_path.read_text(errors="replace")
    assert "Traceback" not in log


def test_a_torchrun_jobs_stored_pid_is_the_launchers(lab):
    job = lab.job("torchrun")
    assert job.status == "succeeded"
    assert job.pid == lab.launcher_pids["torchrun"]


def test_a_broken_base_model_fails_the_job_with_the_reason_and_the_store_stays_usable(lab, rl_jobs):
    # A real out-of-memory cannot be provoked safely on a shared test machine; a base model
    # folder whose weights are missing fails the same way: inside the job, after start.
    job = lab.job("broken")
    assert job.status == "failed"
    assert "model.safetensors" in job.error and "broken-model" in job.error
    assert job.live["state"] == "failed" and job.live["error"] == job.error
    assert not (models_dir(lab.home) / "never-made").exists()
    assert lab.store.model_named("never-made") is None
    assert not complete_checkpoint_dirs(job)
    # a job submitted after the failure, in the same store, runs to the end
    later = rl_jobs.job("grpo")
    [failed_at] = [e["time"] for e in events(job, "finished")]
    [submitted_at] = [e["time"] for e in events(later, "submitted")]
    assert submitted_at > failed_at
    assert later.status == "succeeded", later.error


def complete_checkpoint_dirs(job) -> list[Path]:
    from cai_engine.training.run import complete_checkpoints

    return complete_checkpoints(job.run.path / "checkpoints")


def test_a_taken_model_name_is_refused_before_start_and_the_model_is_untouched(lab):
    assert lab.job("sft").status == "succeeded"
    folder = models_dir(lab.home) / "lab-sft"
    before, jobs_before = folder_digest(folder), job_count(lab.store)
    runs_before = sorted(runs_dir(lab.home).iterdir())
    with pytest.raises(CaiError, match="a model named 'lab-sft' already exists"):
        training_jobs.submit(
            lab.store, "sft", {"data": str(lab.sft), "model": lab.base, "name": "lab-sft"}
        )
    assert job_count(lab.store) == jobs_before
    assert sorted(runs_dir(lab.home).iterdir()) == runs_before
    assert folder_digest(folder) == before
    assert lab.store.model_named("lab-sft")["job"] == lab.ids["sft"]


# -- 8. refusals before any process starts ---------------------------------------------------


def refuse_prefs_to_sft(tmp, base):
    return "sft", {"data": str(prefs_export(tmp / "prefs")), "model": base}


def refuse_sft_to_dpo(tmp, base):
    return "dpo", {"data": str(sft_export(tmp / "sft")), "model": base}


def refuse_empty(tmp, base):
    folder = write_export(tmp / "empty", [], SFT_HASH, "sft")
    return "sft", {"data": str(folder), "model": base}


def refuse_score(tmp, base):
    rows = pref_rows(6)
    rows[3]["score"] = 1.5
    return "reward", {
        "data": str(write_export(tmp / "bad", rows, PREFS_HASH, "prefs")),
        "model": base,
    }


def refuse_openai(tmp, base):
    return "sft", {
        "data": str(sft_export(tmp / "sft")),
        "model": "openai:x?base_url=http://127.0.0.1:9",
    }


def refuse_rl_without_reward(tmp, base):
    return "rl", {"model": base}


def refuse_rl_batch(tmp, base):
    return "rl", {
        "model": base,
        "reward_model": "model:rm",
        "batch_size": 3,
        "grad_accum": 1,
        "num_generations": 2,
    }


def refuse_missing_base(tmp, base):
    return "sft", {"data": str(sft_export(tmp / "sft")), "model": f"hf:{tmp / 'nowhere'}"}


def refuse_invalid_json(tmp, base):
    folder = sft_export(tmp / "sft")
    with open(folder / "data.jsonl", "a") as f:
        f.write("{not json\n")
    return "sft", {"data": str(folder), "model": base}


@pytest.mark.parametrize(
    "make, error, message",
    [
        (refuse_prefs_to_sft, CaiError, r"example 1 has no 'messages' .*preference export; train reward or dpo"),
        (refuse_sft_to_dpo, CaiError, r"example 1 has no 'prompt', 'chosen', 'rejected' .*SFT export; train sft"),
        (refuse_empty, CaiError, r"has no examples; there is nothing to train on"),
        (refuse_score, CaiError, r"example 4's score must be a number in \[0, 1\], not 1.5"),
        (refuse_openai, JobConfigError, r"only a local model can be trained"),
        (refuse_rl_without_reward, JobConfigError, r"give reward_model \(model:<name>\) and/or constitution_reward"),
        (refuse_rl_batch, JobConfigError, r"batch_size x grad_accum \(3\) must be a multiple of num_generations \(2\)"),
        (refuse_missing_base, CaiError, r"base model folder .*nowhere does not exist"),
        (refuse_invalid_json, CaiError, r"data.jsonl:17: not valid JSON"),
    ],
)  # fmt: skip
def test_bad_training_input_is_refused_before_any_process_starts(
    store, cai_home, tmp_path, tiny_model_dir, make, error, message
):
    kind, config = make(tmp_path / "data", f"hf:{tiny_model_dir}")
    exports = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()}
    with pytest.raises(error, match=message):
        training_jobs.submit(store, kind, config)
    assert job_count(store) == 0
    assert not runs_dir(cai_home).exists() or not any(runs_dir(cai_home).iterdir())
    assert not models_dir(cai_home).exists() or not any(models_dir(cai_home).iterdir())
    assert runner_pids(cai_home) == []
    # nothing lost: the data given is as it was
    assert {p: p.read_bytes() for p in exports} == exports


def test_a_data_job_of_the_wrong_kind_is_refused_naming_both_kinds(store, cai_home, tiny_model_dir):
    tick = jobs.submit(store, "tick", {"total": 1, "shard_size": 1, "delay_s": 0})
    assert finish(store, tick.id, timeout=120).status == "succeeded"
    for kind, message in (
        ("sft", rf"SFT trains on a critique job's revisions; {tick.id} is a tick job"),
        ("dpo", rf"reward and DPO train on preferences: a label job .*; {tick.id} is a tick job"),
    ):
        with pytest.raises(CaiError, match=message):
            training_jobs.submit(store, kind, {"data": tick.id, "model": f"hf:{tiny_model_dir}"})
    with pytest.raises(CaiError, match="neither an export folder nor a job"):
        training_jobs.submit(store, "sft", {"data": "no-such-job", "model": f"hf:{tiny_model_dir}"})
    assert job_count(store) == 1  # only the tick job


def test_rl_refuses_a_reward_model_that_is_not_a_reward_model(lab):
    assert lab.job("sft").status == "succeeded"
    before = job_count(lab.store)
    rl = {"model": lab.base, "data": "red-team:train", "num_generations": 2, "batch_size": 2}
    with pytest.raises(CaiError, match="model:lab-sft is a sft model; reward_model needs"):
        training_jobs.submit(lab.store, "rl", {**rl, "reward_model": "model:lab-sft"})
    with pytest.raises(CaiError, match="no trained model 'nope'"):
        training_jobs.submit(lab.store, "rl", {**rl, "reward_model": "model:nope"})
    with pytest.raises(CaiError, match="must be a trained reward model"):
        training_jobs.submit(lab.store, "rl", {**rl, "reward_model": lab.base})
    assert job_count(lab.store) == before


# -- 9. a full disk while checkpointing -----------------------------------------------------


def test_a_checkpoint_whose_state_file_was_cut_mid_write_is_not_complete(tmp_path):
    """transformers writes trainer_state.json in place: a kill during that write leaves it
    empty or cut short, and resuming from such a checkpoint would crash."""
    from cai_engine.training.run import checkpoint_step, complete_checkpoints

    for step, state in ((1, '{"global_step": 1}'), (2, ""), (3, '{"global_st'), (4, "{}")):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-5").mkdir()  # no state file at all
    assert complete_checkpoints(tmp_path) == [tmp_path / "checkpoint-1"]
    assert checkpoint_step(tmp_path / "checkpoint-1") == 1
    with pytest.raises(CaiError, match="checkpoint-2 has no complete trainer_state.json"):
        checkpoint_step(tmp_path / "checkpoint-2")


def test_a_checkpoint_cut_by_a_full_disk_is_skipped_and_the_last_complete_one_resumes(
    tiny_model_dir, tokenizer, tmp_path, monkeypatch
):
    from datasets import Dataset

    from cai_engine.training import trainers
    from cai_engine.training.config import SFTConfig
    from cai_engine.training.run import checkpoint_step, complete_checkpoints

    out = tmp_path / "checkpoints"
    rows = training_data.to_trl(sft_rows(8), "sft", "test")
    config = SFTConfig(data=str(tmp_path), model=f"hf:{tiny_model_dir}", max_steps=2, save_steps=1)
    common = {  # as run.train builds it
        "output_dir": str(out),
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,
        "num_train_epochs": 1.0,
        "max_steps": 2,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 1,
        "save_total_limit": 2,
        "eval_strategy": "no",
        "bf16": False,
        "use_cpu": True,
        "report_to": "none",
        "seed": 0,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "logging_first_step": True,
    }
    trainer = trainers.build(
        "sft",
        config,
        base_path=str(tiny_model_dir),
        tokenizer=tokenizer,
        train=Dataset.from_list(rows),
        evals=None,
        common=common,
        max_length=64,
        peft_config=None,
        home=tmp_path / "home",
    )
    trainer.train()
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-1", "checkpoint-2"]

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer, "_save_optimizer_and_scheduler", disk_full)
    trainer.state.global_step += 1
    with pytest.raises(OSError, match="No space left on device"):
        trainer._save_checkpoint(trainer.model, None)
    partial = out / "checkpoint-3"
    assert (partial / "model.safetensors").exists()  # the weights made it, the rest did not
    assert not (partial / "trainer_state.json").exists()
    done = complete_checkpoints(out)
    assert [p.name for p in done] == ["checkpoint-1", "checkpoint-2"]  # the cut one is skipped
    assert checkpoint_step(done[-1]) == 2

    monkeypatch.undo()
    trainer.state.global_step -= 1
    trainer.args.max_steps = 3
    trainer.train(resume_from_checkpoint=str(done[-1]))
    assert trainer.state.global_step == 3
    assert "checkpoint-3" in [p.name for p in complete_checkpoints(out)]
    assert checkpoint_step(out / "checkpoint-3") == 3


# -- 11. precision ---------------------------------------------------------------------------


def test_explicit_precision_is_kept():
    from cai_engine.training.run import decide_precision

    assert decide_precision("bf16") == (True, "bf16 as configured")
    assert decide_precision("fp32") == (False, "fp32 as configured")


@pytest.mark.parametrize(
    "choice, bf16", [(("bfloat16", "bf16 measured faster"), True), (("float32", "slower"), False)]
)
def test_auto_precision_on_a_cpu_follows_choose_cpu_dtype(monkeypatch, choice, bf16):
    import torch

    from cai_engine.training import run
    from cai_engine.training.run import decide_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(run, "choose_cpu_dtype", lambda: choice)
    assert decide_precision("auto") == (bf16, choice[1])


# -- 12. the data: split and conversion ------------------------------------------------------


def test_split_is_seeded_holds_out_at_least_one_and_never_everything():
    examples = [{"i": i} for i in range(20)]
    train, evals = training_data.split(examples, 0.1, seed=3)
    assert (train, evals) == training_data.split(examples, 0.1, seed=3)
    assert len(evals) == 2 and len(train) == 18
    assert sorted(e["i"] for e in train + evals) == list(range(20))
    others = {
        tuple(e["i"] for e in training_data.split(examples, 0.1, seed=s)[1]) for s in range(8)
    }
    assert len(others) > 1  # the seed picks which ones
    assert [e["i"] for e in train] == sorted(e["i"] for e in train)  # the data order is kept

    assert len(training_data.split(examples[:5], 0.05, seed=0)[1]) == 1  # at least one from 5
    assert training_data.split(examples[:4], 0.1, seed=0) == (examples[:4], [])  # none from 4
    assert training_data.split(examples[:5], 0.0, seed=0) == (examples[:5], [])  # none asked
    for n in (1, 2, 3, 10):
        train, evals = training_data.split(examples[:n], 0.95, seed=0)
        assert len(train) >= 1 and len(train) + len(evals) == n  # never all held out


def test_to_trl_converts_sft_to_prompt_completion_and_fills_preference_defaults():
    conversation = user("a") + assistant("b") + user("c") + assistant("d")
    [sft] = training_data.to_trl([{"messages": conversation}], "sft", "here")
    assert sft == {"prompt": conversation[:-1], "completion": conversation[-1:]}

    bare = {"prompt": user("q"), "chosen": assistant("yes"), "rejected": assistant("no")}
    [pref] = training_data.to_trl([bare], "prefs", "here")
    assert pref == {**bare, "score": 1.0, "label_source": "ai"}
    [pref] = training_data.to_trl([{**bare, "score": 0, "label_source": None}], "prefs", "here")
    assert (pref["score"], pref["label_source"]) == (0.0, "ai")
    assert isinstance(pref["score"], float)
    [pref] = training_data.to_trl([{**bare, "score": 0.25, "label_source": "human"}], "prefs", "x")
    assert (pref["score"], pref["label_source"]) == (0.25, "human")


@pytest.mark.parametrize(
    "example, fmt, message",
    [
        ({"messages": user("only a question")}, "sft", r"example 1's messages must be role/content turns ending with an assistant turn"),
        ({"messages": assistant("only an answer")}, "sft", r"ending with an assistant turn"),
        ({"prompt": "text", "chosen": assistant("a"), "rejected": assistant("b")}, "prefs", r"must be lists of role/content turns"),
        ({"prompt": user("q"), "chosen": assistant("a"), "rejected": assistant("b"), "score": None}, "prefs", r"score must be a number in \[0, 1\], not None"),
        ({"prompt": user("q"), "chosen": assistant("a"), "rejected": assistant("b"), "score": "0.5"}, "prefs", r"not '0.5'"),
        ({"prompt": user("q"), "chosen": assistant("a"), "rejected": assistant("b"), "score": -0.1}, "prefs", r"not -0.1"),
    ],
)  # fmt: skip
def test_to_trl_names_the_example_and_what_is_wrong(example, fmt, message):
    with pytest.raises(CaiError, match=message):
        training_data.to_trl([example], fmt, "folder")


def test_read_export_reads_a_parquet_export_too(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sft_rows(3)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet")
    (tmp_path / "manifest.json").write_text(json.dumps({"constitution_hash": SFT_HASH}))
    examples, manifest = training_data.read_export(tmp_path)
    assert examples == rows and manifest["constitution_hash"] == SFT_HASH
    with pytest.raises(CaiError, match="holds no data.jsonl, data.parquet or dataset/"):
        training_data.read_export(tmp_path / "nothing")


# -- 13. launchers ---------------------------------------------------------------------------


def test_the_launcher_argv_for_python_torchrun_and_accelerate():
    from cai_engine.training.jobs import launcher

    assert launcher({}) == [sys.executable, "-m"]
    assert launcher({"launcher": "python"}) == [sys.executable, "-m"]
    assert launcher({"launcher": "torchrun", "nproc": 2}) == [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", "--nproc_per_node", "2", "-m",
    ]  # fmt: skip
    assert launcher({"launcher": "accelerate", "accelerate_config": "/etc/acc.yaml"}) == [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", "/etc/acc.yaml", "-m",
    ]  # fmt: skip
    # every training kind uses it, with the long grace that lets a checkpoint be written
    for kind in ("sft", "reward", "dpo", "rl"):
        spec = jobs.get_kind(kind)
        assert spec.launcher is launcher
        assert spec.cancel_grace == training_jobs.CANCEL_GRACE > jobs.CANCEL_GRACE


@pytest.mark.parametrize(
    "change, message",
    [
        ({"launcher": "accelerate"}, r"launcher accelerate needs accelerate_config"),
        ({"nproc": 2}, r"nproc > 1 needs launcher torchrun"),
        ({"launcher": "accelerate", "accelerate_config": "/no/such/acc.yaml"}, r"accelerate config file /no/such/acc.yaml does not exist"),
    ],
)  # fmt: skip
def test_launcher_options_are_checked_before_start(
    store, tmp_path, tiny_model_dir, change, message
):
    config = {"data": str(sft_export(tmp_path / "sft")), "model": f"hf:{tiny_model_dir}", **change}
    with pytest.raises(CaiError, match=message):
        training_jobs.submit(store, "sft", config)
    assert job_count(store) == 0


def test_lora_trains_adapters_and_saves_a_plain_merged_model(
    seeded_store, tmp_path, tiny_model_dir
):
    import torch

    from cai_engine.models import SamplingParams, load_model

    job = training_jobs.submit(
        seeded_store,
        "sft",
        {
            "data": str(sft_export(tmp_path / "sft")),
            "model": f"hf:{tiny_model_dir}",
            "lora": True,
            "lora_r": 4,
            "learning_rate": 1e-2,
            "max_steps": 3,
            "batch_size": 2,
            "grad_accum": 1,
            "sample_prompts": 0,
            "name": "lora-sft",
        },
    )
    job = finish(seeded_store, job.id)
    assert job.status == "succeeded", job.error
    saved = seeded_store.home / "models" / "lora-sft"
    assert not (saved / "adapter_config.json").exists()  # merged: a plain model folder
    after, before = tensors(saved), tensors(tiny_model_dir)
    assert set(after) == set(before)  # no lora_A/lora_B left over
    assert any(not torch.equal(after[k], before[k]) for k in before)
    model = load_model("model:lora-sft", seeded_store.home)
    (done,) = model.chat([user("hi")], SamplingParams(max_new_tokens=2))
    assert done.completion_tokens >= 1


# -- 14. the registry of training kinds ------------------------------------------------------


def test_every_training_kind_is_a_job_kind_with_its_config_and_description():
    from cai_engine.training.kinds import TRAINING_KINDS

    assert list(TRAINING_KINDS) == ["sft", "reward", "dpo", "rl"]  # the page's tab order
    for name, spec in TRAINING_KINDS.items():
        job_kind = jobs.get_kind(name)
        assert (job_kind.name, job_kind.config, job_kind.description) == (
            name,
            spec.config,
            spec.description,
        )
    # which finished jobs each kind can export from, and which models score responses
    assert {k: s.sources for k, s in TRAINING_KINDS.items()} == {
        "sft": ("critique",),
        "reward": ("label", "critique"),
        "dpo": ("label", "critique"),
        "rl": (),
    }
    assert [k for k, s in TRAINING_KINDS.items() if s.scores] == ["reward"]
    assert {k: s.peft_task for k, s in TRAINING_KINDS.items()} == {
        "sft": "CAUSAL_LM",
        "reward": "SEQ_CLS",
        "dpo": "CAUSAL_LM",
        "rl": "CAUSAL_LM",
    }


def test_importing_the_registry_job_kinds_and_monitor_loads_no_torch():
    code = (
        "import sys\n"
        "import cai_engine.training.kinds, cai_engine.training.jobs, cai_engine.training.monitor\n"
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_config_fields_bounds_are_its_inclusive_limits():
    from cai_engine.training.config import RLConfig, SFTConfig, bounds

    fields = RLConfig.model_fields
    assert bounds(fields["num_generations"]) == (2, 64)  # ge=2, le=64
    assert bounds(fields["max_steps"]) == (-1, None)  # ge=-1, no upper bound
    assert bounds(fields["learning_rate"]) == (None, 1)  # gt=0 on a float: no inclusive min
    assert bounds(fields["data"]) == (None, None)
    assert bounds(SFTConfig.model_fields["batch_size"]) == (1, 1024)
