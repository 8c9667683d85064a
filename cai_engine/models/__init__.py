"""Models: one small interface (`chat`, `score`), two backends (`local`, `openai`).

`load_model(spec)` takes a spec string (see `spec.py`) and returns a `ChatModel`. Heavy
imports (torch, transformers) happen inside the backends, not here.
"""

from __future__ import annotations

from pathlib import Path

from cai_engine.home import resolve_home
from cai_engine.models.base import (
    ChatModel,
    Completion,
    ContextOverflowError,
    Conversation,
    ModelError,
    ModelInfo,
    SamplingParams,
)
from cai_engine.models.local import LocalModel
from cai_engine.models.openai_compat import OpenAIModel
from cai_engine.models.spec import EMBEDDED, VALID_FORMS, ModelSpec, parse_spec


def load_model(spec: str | dict | ModelSpec, home: Path | None = None) -> ChatModel:
    """Load the model a spec names. `home` is the data home (for the embedded and trained models)."""

    parsed = parse_spec(spec)
    if parsed.backend == "openai":
        return OpenAIModel(parsed)

    return LocalModel(parsed, resolve_home(home))


__all__ = [
    "EMBEDDED",
    "VALID_FORMS",
    "ChatModel",
    "Completion",
    "ContextOverflowError",
    "Conversation",
    "ModelError",
    "ModelInfo",
    "ModelSpec",
    "SamplingParams",
    "load_model",
    "parse_spec",
]
