"""Model specs: one string (or mapping) names a model in YAML configs, the CLI and the studio.

    smollm2-135m-instruct              the embedded model (alias: embedded)
    hf:HuggingFaceTB/SmolLM2-360M-Instruct   any Hugging Face id (cached or online)
    hf:/path/to/model  or  /path/to/model    a local transformers folder
    model:<name>                       a model trained here, under <home>/models/<name>
    openai:<served-name>?base_url=http://127.0.0.1:8000/v1&api_key_env=VLLM_API_KEY
                                       any OpenAI-compatible server (vLLM, SGLang, TGI, ...)

Options follow `?` as `key=value` pairs joined by `&`, e.g. `hf:/m?dtype=float32&batch_size=16`.
Local: dtype, batch_size, device, max_context, truncation, trust_remote_code.
OpenAI: base_url (required), api_key_env, concurrency, timeout, retries, tokenizer.
An API key is never part of a spec: `api_key_env` names the environment variable that holds it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cai_engine.models.base import ModelError

EMBEDDED = "smollm2-135m-instruct"
EMBEDDED_ALIASES = {EMBEDDED, "embedded", "smollm2"}
VALID_FORMS = (
    f"{EMBEDDED} (the embedded model), hf:<hub id or path>, a local model folder, "
    "model:<trained model name>, or openai:<model>?base_url=<url>"
)

_LOCAL_ONLY = ("dtype", "batch_size", "device", "trust_remote_code", "max_context", "truncation")
_PLAIN_NAME = re.compile(r"^(?!\.+$)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_OPENAI_ONLY = ("base_url", "api_key_env", "concurrency", "timeout", "retries", "tokenizer")


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["embedded", "hf", "trained", "openai"] = Field(
        description="Where the model comes from."
    )
    model: str = Field(description="Hub id, path, trained model name, or the served model name.")
    # local (transformers) options
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = Field(
        "auto", description="auto: bf16 where it measures faster on this CPU or GPU, else fp32."
    )
    batch_size: int | Literal["auto"] = Field("auto", description="Sequences per forward pass.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    trust_remote_code: bool = Field(
        False, description="Run code shipped with the model (opt in per model)."
    )
    max_context: int | None = Field(None, gt=0, description="Override the model's context length.")
    truncation: Literal["left", "error"] = Field(
        "left", description="A prompt longer than the context: drop its oldest tokens, or fail."
    )
    # openai options
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    concurrency: int = Field(8, gt=0, le=1024, description="Requests in flight at once.")
    timeout: float = Field(120.0, gt=0, description="Seconds per request.")
    retries: int = Field(3, ge=0, le=20, description="Retries per request, with backoff.")
    tokenizer: str | None = Field(
        None, description="HF id or path for chat templates when scoring."
    )

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "openai":
            bad = [k for k in _LOCAL_ONLY if getattr(self, k) != type(self).model_fields[k].default]
            if bad:
                raise ValueError(f"option(s) {', '.join(bad)} only apply to local models")
            if not self.base_url:
                raise ValueError(
                    "an openai model needs base_url, e.g. openai:my-model?base_url=http://127.0.0.1:8000/v1"
                )
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError(
                    f"base_url must start with http:// or https://, got '{self.base_url}'"
                )
            if "@" in self.base_url.split("://", 1)[1].split("/", 1)[0]:
                raise ValueError(
                    "base_url must not carry credentials (user:key@host), since specs are "
                    "stored and logged; put the key in an environment variable and name it "
                    "with api_key_env"
                )
        else:
            if self.kind == "trained" and not _PLAIN_NAME.match(self.model):
                raise ValueError(
                    f"a trained model is named, not a path: '{self.model}' is not a plain name "
                    "(letters, digits, '.', '_' or '-'); use hf:<path> for a model folder"
                )
            bad = [
                k for k in _OPENAI_ONLY if getattr(self, k) != type(self).model_fields[k].default
            ]
            if bad:
                raise ValueError(f"option(s) {', '.join(bad)} only apply to openai models")
        return self

    @property
    def backend(self) -> str:
        return "openai" if self.kind == "openai" else "local"

    @property
    def trainable(self) -> bool:
        return self.kind != "openai"

    def options(self) -> dict:
        """The options that differ from their defaults."""
        return self.model_dump(exclude_defaults=True, exclude={"kind", "model"})

    def __str__(self) -> str:
        prefix = {"embedded": "", "hf": "hf:", "trained": "model:", "openai": "openai:"}[self.kind]
        opts = self.options()
        query = (
            "?"
            + urlencode(
                {k: str(v).lower() if isinstance(v, bool) else v for k, v in opts.items()},
                quote_via=quote,
                safe=":/",
            )
            if opts
            else ""
        )
        return f"{prefix}{self.model}{query}"

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ModelError(
                f"the environment variable {self.api_key_env} (api_key_env) is not set"
            )
        return key


_SECRETS = re.compile(r"((?:api_?key|key|token|secret|password)=)[^&\s']*", re.IGNORECASE)
_USERINFO = re.compile(r"(://)[^/@\s']*@")


def redact(text: str) -> str:
    """`text` with anything that looks like a credential in a URL or a query replaced by ***,
    for error messages (which reach logs and the store)."""
    return _USERINFO.sub(r"\1***@", _SECRETS.sub(r"\1***", text))


def parse_spec(spec: str | dict | ModelSpec) -> ModelSpec:
    """Parse a spec string or mapping; errors list the valid forms."""
    if isinstance(spec, ModelSpec):
        return spec
    try:
        if isinstance(spec, dict):
            return ModelSpec.model_validate(spec)
        text = (spec or "").strip()
        if not text:
            raise ModelError(f"empty model spec; use {VALID_FORMS}")
        head, _, query = text.partition("?")
        options = (
            dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
        )
        if query and not options:
            raise ModelError(
                f"cannot read the options in '{redact(text)}'; write them as ?key=value&key=value"
            )
        if head in EMBEDDED_ALIASES:
            return ModelSpec(kind="embedded", model=EMBEDDED, **options)
        for prefix, kind in (("hf:", "hf"), ("model:", "trained"), ("openai:", "openai")):
            if head.startswith(prefix):
                name = head[len(prefix) :]
                if not name:
                    raise ModelError(f"'{redact(text)}' names no model after '{prefix}'")
                return ModelSpec(kind=kind, model=name, **options)
        if head.startswith(("/", "./", "../", "~")) or Path(head).expanduser().is_dir():
            return ModelSpec(kind="hf", model=str(Path(head).expanduser().resolve()), **options)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown option '{where}'")
            else:
                problems.append(
                    f"{where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}"
                )
        message = f"invalid model spec '{spec}': " + "; ".join(problems)
        raise ModelError(redact(message)) from None
    raise ModelError(f"unknown model spec '{redact(str(spec))}'; use {VALID_FORMS}")
