"""The model interface every stage uses: batched chat generation and continuation scoring."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from cai_engine.errors import CaiError

Conversation = list[dict]  # [{"role": "user" | "assistant" | "system", "content": str}, ...]


def is_prefill(conversation: Conversation) -> bool:
    """A conversation ending with an assistant turn asks the model to continue that turn."""
    return bool(conversation) and conversation[-1].get("role") == "assistant"


class ModelError(CaiError):
    """A model that cannot be loaded or a request that failed for good."""


class ContextOverflowError(ModelError):
    """A prompt longer than the model's context, with `truncation="error"`."""


class SamplingParams(BaseModel):
    """How to sample. The same seed and inputs give the same text on the same backend."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0, le=5, description="Sampling temperature; 0 means greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: the top share of mass.")
    max_new_tokens: int = Field(256, gt=0, le=32_768, description="Most new tokens per answer.")
    seed: int = Field(
        0, ge=0, description="Sampling seed; the same seed and inputs give the same text."
    )
    stop: list[str] = Field(
        default_factory=list, description="Stop strings; not included in the text."
    )


CUT_OFF = "length"  # the finish reason of a text that stopped at the token limit, mid-text


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) | "length" | "cancelled"
    latency_s: float = 0.0  # wall time of the call that produced it, shared across its batch
    truncated_tokens: int = 0  # prompt tokens dropped from the left to fit the context


@dataclass
class ModelInfo:
    spec: str
    backend: str
    details: dict = field(default_factory=dict)  # dtype, device, context, batch size, ...


class ChatModel(ABC):
    """A loaded model. `chat` and `score` are batched: pass everything you have at once."""

    spec: object  # ModelSpec

    @abstractmethod
    def chat(
        self,
        conversations: list[Conversation],
        sampling: SamplingParams | None = None,
        *,
        should_stop: Callable[[], bool] | None = None,
        on_batch: Callable[[list[int], list[Completion]], None] | None = None,
    ) -> list[Completion]:
        """Answer each conversation (its last turn is the user's) with one assistant turn.

        `should_stop` is polled during generation; when it returns True the call returns early
        and unfinished completions have finish_reason "cancelled". `on_batch(indices, done)` is
        called as each internal batch finishes, so callers can save work as it completes.
        """

    @abstractmethod
    def score(self, prompts: list[str | Conversation], continuations: list[str]) -> list[float]:
        """Total log-probability of each continuation given its prompt.

        A prompt that is a conversation is rendered with the model's chat template and the
        assistant generation prompt, exactly as `chat` would see it; one that ends with an
        assistant turn is continued from that turn's text (a prefill).
        """

    def score_choices(
        self, prompts: list[str | Conversation], choices: list[str]
    ) -> list[list[float]]:
        """For each prompt, the total log-probability of each of the same few `choices`.

        The default scores every (prompt, choice) with `score`; backends that can share the
        prompt's computation across choices override it.
        """
        flat = self.score(
            [p for p in prompts for _ in choices], [c for _ in prompts for c in choices]
        )
        k = len(choices)
        return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]

    @abstractmethod
    def info(self) -> ModelInfo: ...

    @property
    def context_length(self) -> int | None:
        """Tokens the model can attend to, when known."""
        return None

    def count_tokens(self, conversation: Conversation) -> int | None:
        """Prompt tokens of `conversation` with the generation prompt, when the backend can tell."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, memory)."""
