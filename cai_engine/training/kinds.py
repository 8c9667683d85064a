"""The training kinds: one spec per trainer (`sft`, `reward`, `dpo`, `rl`).

A kind names its options, the data it trains on (and which finished jobs that data can be
exported from), the model it trains and the function that builds its TRL trainer, what its
monitor charts and what the studio calls it. The job runner, the data checks, the monitor
and the Training page all read `TRAINING_KINDS`; none of them branches on a kind's name.

Light: no torch, transformers or TRL here. The trainer builders load in the job process.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from cai_engine.training.config import DPOConfig, RewardConfig, RLConfig, SFTConfig, TrainConfig
from cai_engine.training.data import PREFS, PROMPTS, SFT, ExportFormat, PromptFormat

CAUSAL_LM = "AutoModelForCausalLM"
SEQUENCE_CLASSIFIER = "AutoModelForSequenceClassification"


@dataclass(frozen=True)
class TrainingKind:
    """One trainer: everything the job, the monitor and the studio need to know about it."""

    name: str  # the job kind, `cai train <name>`, and the kind in a trained model's lineage
    label: str  # the studio's tab and Start button
    description: str  # the job kind's one line
    config: type[TrainConfig]  # its options, with their defaults, bounds and help
    data: ExportFormat | PromptFormat  # what it trains on; `data.sources`: jobs it exports
    model_class: str  # the transformers auto class the base model loads as
    build: str  # "module:function" that builds the TRL trainer (imported in the job only)
    charts: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (title, metric keys) after the loss
    cost: float = 1.0  # compute per token relative to SFT, for the estimate before a launch
    evaluates: bool = True  # an eval loss on the held-out examples at the end
    human_holdout: bool = False  # human-reviewed pairs are held out, and scored at the end

    @property
    def scores(self) -> bool:
        """A sequence classifier: it scores responses (online RL can use it as its reward)
        and cannot generate, so it writes no sample completions."""
        return self.model_class == SEQUENCE_CLASSIFIER

    @property
    def peft_task(self) -> str:
        """The LoRA task type for the model class."""
        return "SEQ_CLS" if self.scores else "CAUSAL_LM"

    @property
    def sources(self) -> tuple[str, ...]:
        """The job kinds whose finished output it can train on (exported on the way)."""
        return tuple(self.data.sources)

    def builder(self) -> Callable:
        """The trainer builder: build(spec, config, *, base_path, tokenizer, train, evals,
        common, max_length, peft_config, home) -> a TRL trainer."""
        module, _, attr = self.build.partition(":")
        return getattr(importlib.import_module(module), attr)


TRAINING_KINDS: dict[str, TrainingKind] = {
    spec.name: spec
    for spec in (
        TrainingKind(
            name="sft",
            label="SFT",
            description="Supervised fine-tuning on revisions (TRL SFTTrainer).",
            config=SFTConfig,
            data=SFT,
            model_class=CAUSAL_LM,
            build="cai_engine.training.trainers:build_sft",
            charts=(("Token accuracy", ("mean_token_accuracy",)),),
        ),
        TrainingKind(
            name="reward",
            label="Reward model",
            description="A soft-label reward model on preferences (TRL RewardTrainer).",
            config=RewardConfig,
            data=PREFS,
            model_class=SEQUENCE_CLASSIFIER,
            build="cai_engine.training.trainers:build_reward",
            charts=(("Reward accuracy", ("accuracy",)), ("Reward margin", ("margin",))),
            human_holdout=True,  # the human-reviewed pairs are the gold check of the model
        ),
        TrainingKind(
            name="dpo",
            label="DPO",
            description="Direct preference optimisation with soft labels (TRL DPOTrainer).",
            config=DPOConfig,
            data=PREFS,
            model_class=CAUSAL_LM,
            build="cai_engine.training.trainers:build_dpo",
            charts=(
                ("DPO reward margins", ("rewards/margins",)),
                ("DPO accuracies", ("rewards/accuracies",)),
                ("DPO rewards", ("rewards/chosen", "rewards/rejected")),
            ),
            cost=2.0,  # the reference model's pass, on both sides of each pair
        ),
        TrainingKind(
            name="rl",
            label="Online RL (GRPO / RLOO)",
            description="Online RL against the reward model (TRL GRPOTrainer or RLOOTrainer).",
            config=RLConfig,
            data=PROMPTS,
            model_class=CAUSAL_LM,
            build="cai_engine.training.rl:build_rl",
            charts=(("Mean reward", ("reward",)), ("KL to the reference", ("kl",))),
            cost=3.0,  # sampling the group, scoring it, and the reference model's pass
            evaluates=False,  # prompts only: there is no held-out target to score
        ),
    )
}
