"""Online RL against our reward model: TRL's GRPOTrainer or RLOOTrainer.

TRL 1.x has no PPOTrainer. GRPO optimises PPO's clipped surrogate objective with a group
baseline (the mean reward of the prompt's other samples) instead of a learned value model;
RLOO uses a leave-one-out baseline. Both take `reward_funcs`:
- our trained reward model (a sequence classifier saved by a reward job), and/or
- a direct constitution reward: the feedback model's soft preference of the sample over the
  reference model's greedy answer to the same prompt, under a principle drawn per comparison,
  averaged over both orders (so a position-biased judge gives about 0.5 and no signal).
"""

from __future__ import annotations

import json
from pathlib import Path

from cai_engine.errors import CaiError
from cai_engine.home import models_dir
from cai_engine.labels import LabelConfig, label_pairs
from cai_engine.models import SamplingParams, load_model, parse_spec
from cai_engine.pairs import pair_flags
from cai_engine.store import Store
from cai_engine.training.kinds import TRAINING_KINDS


def reward_model_path(spec: str, home: Path) -> str:

    parsed = parse_spec(spec)
    if parsed.kind != "trained":
        raise CaiError(f"reward_model must be a trained reward model, model:<name>; got '{spec}'")
    path = models_dir(home) / parsed.model
    lineage = path / "lineage.json"
    if not lineage.exists():
        raise CaiError(f"no trained model '{parsed.model}' under {models_dir(home)}")
    kind = json.loads(lineage.read_text()).get("kind")
    if kind not in TRAINING_KINDS or not TRAINING_KINDS[kind].scores:
        raise CaiError(
            f"model:{parsed.model} is a {kind} model; reward_model needs a reward job's model"
        )
    return str(path)


class ConstitutionReward:
    """Reward = P(sample better than the reference answer) from the feedback model."""

    __name__ = "constitution_reward"

    def __init__(self, store: Store, config, reference_answers: dict[str, str]):

        version = store.get_version(config.constitution_reward)
        self.constitution = version.constitution
        self.hash = version.hash
        self.judge = load_model(config.feedback_model, store.home)
        self.config = LabelConfig(
            pairs="rl", constitution=version.ref, model=config.feedback_model, few_shots=2
        )
        self.reference = reference_answers
        self.calls = 0

    def __call__(self, prompts, completions, prompt_id=None, **kwargs) -> list[float]:
        pairs = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            pid = prompt_id[i] if prompt_id else str(i)
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            pairs.append(
                {
                    "job_id": "rl",
                    "prompt_set": "",
                    "prompt_id": pid,
                    "pair": self.calls * 100_000 + i,  # a fresh principle draw per comparison
                    "response_a": text,
                    "response_b": self.reference.get(pid, ""),
                    "flags": pair_flags(text, self.reference.get(pid, "")),
                    "prompt_messages": prompt
                    if isinstance(prompt, list)
                    else [{"role": "user", "content": prompt}],
                }
            )
        self.calls += 1
        rows = label_pairs(pairs, self.constitution, self.hash, self.judge, self.config)
        return [r["soft_label"] if r["soft_label"] is not None else 0.5 for r in rows]


def reference_answers(
    store: Store, config, base_path: str, examples: list[dict], run_path: Path
) -> dict:
    """The reference model's greedy answers, cached in the run folder for resumes."""
    cache = run_path / "reference_answers.json"
    if cache.exists():
        return json.loads(cache.read_text())

    model = load_model(f"hf:{base_path}", store.home)
    answers = model.chat(
        [e["prompt"] for e in examples],
        SamplingParams(temperature=0.0, max_new_tokens=config.max_completion_length),
    )
    out = {e["prompt_id"]: a.text for e, a in zip(examples, answers, strict=True)}
    cache.write_text(json.dumps(out))
    return out


def build_rl(spec, config, *, base_path, tokenizer, train, common, peft_config, home, **_):
    """TRL's GRPOTrainer or RLOOTrainer (`config.algorithm`), rewarded by the reward model
    and/or the constitution reward."""
    import trl

    from cai_engine.training.trainers import load_model

    rewards = []
    if config.reward_model:
        rewards.append(reward_model_path(config.reward_model, home))
    if config.constitution_reward:
        store = Store(home)
        run_path = Path(common["output_dir"]).parent
        answers = reference_answers(store, config, base_path, train.to_list(), run_path)
        rewards.append(ConstitutionReward(store, config, answers))
    model = load_model(spec, base_path)
    shared = {
        **common,
        "num_generations": config.num_generations,
        "max_completion_length": config.max_completion_length,
        "temperature": config.temperature,
        "beta": config.beta,
    }
    if config.algorithm == "grpo":
        args = trl.GRPOConfig(**shared)
        cls = trl.GRPOTrainer
    else:
        args = trl.RLOOConfig(**shared)
        cls = trl.RLOOTrainer
    return cls(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
