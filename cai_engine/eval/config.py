"""The eval job's config: which models answer which prompt sets, and how the judge judges."""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator, model_validator

from cai_engine.judge import JudgeSettings
from cai_engine.models import EMBEDDED, SamplingParams, parse_spec
from cai_engine.prompts import parse_prompt_ref


class EvalConfig(JudgeSettings):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(
        min_length=1, description="Model specs to evaluate, e.g. the base and its checkpoints."
    )
    reference: str | None = Field(
        None, description="Win rates are against this model (default: the first model)."
    )
    harmful: str | None = Field(
        "red-team:test", description="Red-team prompts: harmlessness and refusal rates."
    )
    helpful: str | None = Field(
        "helpful:test", description="Helpful prompts: helpfulness and over-refusal rates."
    )
    limit: int | None = Field(32, gt=0, description="Use only the first N prompts of each set.")
    judge: str = Field(EMBEDDED, description="The judge (feedback) model spec.")
    constitution: str = Field(
        "harmless", description="Constitution whose preference questions judge harmlessness."
    )
    few_shots: int = Field(
        2, ge=0, le=16, description="Labelled comparisons from the constitution to prepend."
    )
    both_orders: bool = Field(True, description="Judge each comparison as given and swapped.")
    judge_refusals: bool = Field(
        True, description="Also ask the judge whether each answer refuses."
    )
    critique_job: str | None = Field(
        None, description="A critique job to measure revision progress on (per round)."
    )
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.7, max_new_tokens=128, seed=0),
        description="How every model answers (seeded, so answers can be reused).",
    )
    reuse_answers: bool = Field(
        True, description="Reuse answers earlier eval jobs stored for the same weights."
    )
    seed: int = Field(0, ge=0, description="Seeds the principle drawn per prompt.")
    bootstrap_rounds: int = Field(2000, ge=100, le=100_000, description="Bootstrap resamples.")
    # 256 = 4 batches of 64: a job holds one chunk of answers and verdicts, whatever the sets' size
    chunk_prompts: int = Field(
        256,
        gt=0,
        le=100_000,
        description="Prompts the job takes at a time, per set: answered, then judged a chunk at"
        " a time (memory holds one chunk; the numbers do not depend on it).",
    )
    batch: int = Field(64, gt=0, le=4096, description="Answers judged and saved together.")

    @field_validator("models")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        specs = [str(parse_spec(v)) for v in value]
        if len(set(specs)) != len(specs):
            raise ValueError("a model is listed twice")
        return specs

    @field_validator("reference", "judge")
    @classmethod
    def _spec(cls, value: str | None) -> str | None:
        return None if value is None else str(parse_spec(value))

    @model_validator(mode="after")
    def _sets(self):
        if not self.harmful and not self.helpful:
            raise ValueError("give at least one eval set: harmful and/or helpful")
        names = list(self.set_names().values())
        if len(set(names)) != len(names):
            raise ValueError(f"harmful and helpful must be different prompt sets, got {names[0]}")
        return self

    @property
    def ref_model(self) -> str:
        return self.reference or self.models[0]

    @property
    def answering(self) -> list[str]:
        """Every model that answers: the evaluated ones and the reference."""
        return self.models + ([self.ref_model] if self.ref_model not in self.models else [])

    def sets(self) -> list[tuple[str, str]]:
        """(role, prompt reference) for each eval set given: harmful and/or helpful."""
        given = (("harmful", self.harmful), ("helpful", self.helpful))
        return [(role, ref) for role, ref in given if ref]

    def set_names(self) -> dict[str, str]:
        """role -> prompt set name (without the split)."""

        return {role: parse_prompt_ref(ref)[0] for role, ref in self.sets()}
