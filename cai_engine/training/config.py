"""Training options: one pydantic model per trainer, each field with its help text.

The CLI (`cai train ... --set key=value`, and the flags it names), the job system and the
studio's forms all read these classes, so a default or a help text lives in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo

from cai_engine.models import EMBEDDED, parse_spec

if TYPE_CHECKING:
    from cai_engine.store import Store


LAUNCHERS = ("python", "torchrun", "accelerate")


class TrainConfig(BaseModel):
    """Options every trainer shares."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(
        description="An export folder (with manifest.json), or a job to export from: a "
        "critique job for SFT, a label job for reward and DPO."
    )
    model: str = Field(EMBEDDED, description="Base model spec; a local model (not openai:).")
    name: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
        description="Name of the trained model (use it as model:<name>); default: the job id.",
    )
    lora: bool = Field(False, description="Train LoRA adapters (merged into the saved model).")
    lora_r: int = Field(16, ge=1, le=512, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, le=4096, description="LoRA alpha.")
    launcher: Literal["python", "torchrun", "accelerate"] = Field(
        "python", description="How the job process starts: python, torchrun or accelerate."
    )
    nproc: int = Field(1, ge=1, le=64, description="Processes for torchrun (--nproc_per_node).")
    accelerate_config: str | None = Field(
        None, description="Config file for accelerate launch (--config_file)."
    )
    epochs: float = Field(1.0, gt=0, le=100, description="Passes over the training data.")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many steps (-1: use epochs).")
    learning_rate: float = Field(2e-5, gt=0, le=1, description="Peak learning rate.")
    batch_size: int = Field(4, ge=1, le=1024, description="Examples per device per step.")
    grad_accum: int = Field(2, ge=1, le=1024, description="Gradient accumulation steps.")
    max_length: int | None = Field(
        None, ge=16, le=131_072, description="Token limit per example (default: sized to the data)."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto: bf16 on a GPU, and on a CPU where a bf16 matmul measures faster.",
    )
    seed: int = Field(0, ge=0, description="Seeds data order, the eval split and init.")
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of examples held out for evaluation (and samples)."
    )
    logging_steps: int = Field(1, ge=1, description="Log metrics every N steps.")
    save_steps: int = Field(50, ge=1, description="Save a checkpoint every N steps.")
    sample_every: int = Field(
        25, ge=0, description="Write sample completions every N steps (0: only at the end)."
    )
    sample_prompts: int = Field(3, ge=0, le=16, description="Held-out prompts to sample.")
    sample_tokens: int = Field(48, ge=1, le=1024, description="New tokens per sample completion.")

    @field_validator("model")
    @classmethod
    def _spec(cls, value: str) -> str:
        spec = parse_spec(value)
        if spec.backend != "local":
            raise ValueError(
                f"'{value}' is served over HTTP ({spec.backend}); only a local model can be "
                "trained: use the embedded model, hf:<id or path>, a folder, or model:<name>"
            )
        return str(spec)

    @model_validator(mode="after")
    def _launch(self):
        if self.launcher == "accelerate" and not self.accelerate_config:
            raise ValueError("launcher accelerate needs accelerate_config (a config file)")
        if self.launcher != "torchrun" and self.nproc != 1:
            raise ValueError(
                "nproc > 1 needs launcher torchrun (accelerate takes it from its file)"
            )
        return self

    def check_store(self, store: Store) -> None:
        """Checks against the data home, run before the job is submitted (none here)."""


class SFTConfig(TrainConfig):
    """Supervised fine-tuning on revisions: the loss covers the final assistant turn only."""

    learning_rate: float = Field(2e-5, gt=0, le=1, description="Peak learning rate.")


class RewardConfig(TrainConfig):
    """A reward model (sequence classifier) on preferences, with soft labels by default."""

    learning_rate: float = Field(5e-5, gt=0, le=1, description="Peak learning rate.")
    soft_labels: bool = Field(
        True,
        description="Train on each pair's score p with -(p·logσ(Δ) + (1-p)·logσ(-Δ)); "
        "off: every pair is a hard label (p = 1), TRL's loss.",
    )
    center_rewards: float | None = Field(
        None, ge=0, description="Coefficient pulling mean rewards to zero (TRL's centering)."
    )


class DPOConfig(TrainConfig):
    """Direct preference optimisation on preferences, with soft labels by default."""

    learning_rate: float = Field(5e-6, gt=0, le=1, description="Peak learning rate.")
    beta: float = Field(0.1, gt=0, le=10, description="DPO's KL strength (temperature).")
    soft_labels: bool = Field(
        True,
        description="Use each pair's score p in the sigmoid loss: "
        "-(p·logσ(βΔ) + (1-p)·logσ(-βΔ)); off: TRL's hard-label loss.",
    )


class RLConfig(TrainConfig):
    """Online RL (GRPO or RLOO) on prompts, rewarded by a trained reward model."""

    data: str = Field(
        "red-team:train",
        description="Prompt set (and split) to sample from, e.g. red-team:train.",
    )
    algorithm: Literal["grpo", "rloo"] = Field(
        "grpo", description="grpo: PPO's clipped objective with a group baseline; rloo."
    )
    reward_model: str | None = Field(
        None, description="A trained reward model, model:<name> (from a reward job)."
    )
    constitution_reward: str | None = Field(
        None,
        description="Also reward by the feedback model's soft preference of the sample over "
        "the reference model's answer under this constitution (e.g. harmless).",
    )
    feedback_model: str = Field(EMBEDDED, description="Feedback model for constitution_reward.")
    limit: int | None = Field(None, gt=0, description="Use only the first N prompts.")
    learning_rate: float = Field(1e-6, gt=0, le=1, description="Peak learning rate.")
    num_generations: int = Field(4, ge=2, le=64, description="Samples per prompt (the group).")
    max_completion_length: int = Field(64, ge=4, le=8192, description="New tokens per sample.")
    temperature: float = Field(1.0, gt=0, le=5, description="Sampling temperature.")
    beta: float = Field(0.04, ge=0, le=10, description="KL coefficient to the reference model.")
    batch_size: int = Field(4, ge=1, le=1024, description="Completions per device per step.")

    @model_validator(mode="after")
    def _reward(self):
        if not self.reward_model and not self.constitution_reward:
            raise ValueError("give reward_model (model:<name>) and/or constitution_reward")
        if (
            self.batch_size % self.num_generations
            and self.batch_size * self.grad_accum % self.num_generations
        ):
            raise ValueError(
                f"batch_size x grad_accum ({self.batch_size * self.grad_accum}) must be a "
                f"multiple of num_generations ({self.num_generations})"
            )
        return self

    def check_store(self, store: Store) -> None:
        """The reward model is a trained reward model, and the constitution exists."""
        if self.reward_model:
            from cai_engine.training.rl import reward_model_path

            reward_model_path(self.reward_model, store.home)
        if self.constitution_reward:
            store.get_version(self.constitution_reward)


def bounds(field: FieldInfo) -> tuple[float | None, float | None]:
    """A numeric field's inclusive (min, max), from its ge/le (and gt/lt for an integer), for
    the studio's number inputs; None where the field sets no bound."""
    low = high = None
    integer = field.annotation is int
    for limit in field.metadata:
        if isinstance(limit, annotated_types.Ge):
            low = limit.ge
        elif isinstance(limit, annotated_types.Gt) and integer:
            low = limit.gt + 1
        elif isinstance(limit, annotated_types.Le):
            high = limit.le
        elif isinstance(limit, annotated_types.Lt) and integer:
            high = limit.lt - 1
    return low, high
