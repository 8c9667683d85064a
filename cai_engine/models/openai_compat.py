"""The `openai` backend: any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, Ollama).

- `chat` sends one /chat/completions request per conversation, `concurrency` at a time,
  each with a timeout and retries with exponential backoff (connection errors, timeouts,
  HTTP 429 and 5xx, malformed JSON). After the last retry the error names the URL.
- `score` needs log-probabilities of given tokens. With vLLM it tokenizes through the server's
  /tokenize endpoint (so the chat template is the server's), then asks /completions to echo
  the prompt+continuation token ids with logprobs; the continuation's share is summed. A
  server without /tokenize can still score plain-text prompts through `text_offset`, and
  conversations when the spec names a local `tokenizer` for the chat template.
- The API key comes from the environment variable named by `api_key_env`, never from a file,
  and is never logged.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from cai_engine.models.base import (
    ChatModel,
    Completion,
    Conversation,
    ModelError,
    ModelInfo,
    SamplingParams,
    is_prefill,
)
from cai_engine.models.spec import ModelSpec

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class ServerError(ModelError):
    """A request that failed after its retries, or that the server refused."""


class _Retryable(Exception):
    pass


def _check_logprobs(values: list) -> None:
    """The continuation's logprobs must be finite numbers <= 0 (a None, a string or a NaN would
    turn into a wrong score downstream)."""
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"a token logprob is {v!r:.40}, not a number")
        if not math.isfinite(v) or v > 1e-6:
            raise ValueError(f"a token logprob is {v!r}, not a finite number <= 0")


class OpenAIModel(ChatModel):
    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.base_url = spec.base_url.rstrip("/")
        # vLLM serves /tokenize beside /v1, at the server root.
        self.root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        self._key = spec.api_key()
        self._tokenizer = None
        self._has_tokenize: bool | None = None

    # -- HTTP -------------------------------------------------------------------------------

    def _post_once(self, url: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        deadline = time.monotonic() + self.spec.timeout
        try:
            with urllib.request.urlopen(req, timeout=self.spec.timeout) as resp:
                # The socket timeout bounds each read; the deadline bounds the whole answer,
                # so a server that drips a byte at a time cannot hold a request forever.
                chunks = []
                while chunk := resp.read1(65536):
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise _Retryable(
                            f"timed out: the response took longer than {self.spec.timeout} s"
                        )
                raw = b"".join(chunks)
        except urllib.error.HTTPError as e:
            detail = e.read()[:500].decode("utf-8", errors="replace")
            if e.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {e.code}: {detail}") from None
            raise ServerError(f"{url} refused the request: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _Retryable(f"{type(reason).__name__}: {reason}") from None
        except http.client.HTTPException as e:  # a truncated body, a bad status line, ...
            raise _Retryable(f"broken HTTP response: {type(e).__name__}: {e}") from None
        try:
            parsed = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable(f"malformed JSON in the response: {raw[:200]!r}") from None
        if not isinstance(parsed, dict):
            raise _Retryable(f"expected a JSON object, got {type(parsed).__name__}")
        return parsed

    def post(self, url: str, body: dict, check: Callable[[dict], None] | None = None) -> dict:
        """POST with retries. `check` validates the payload; a ValueError from it is retried."""
        attempts = self.spec.retries + 1
        last = ""
        for attempt in range(attempts):
            try:
                payload = self._post_once(url, body)
                if check:
                    try:
                        check(payload)
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
                        raise _Retryable(f"unexpected response shape: {e}") from None
                return payload
            except _Retryable as e:
                last = str(e)
                if attempt + 1 < attempts:
                    time.sleep(min(8.0, 0.5 * 2**attempt) * (0.5 + random.random()))
        raise ServerError(f"{url} failed after {attempts} attempt(s): {last}")

    def list_models(self) -> list[str]:
        """The served model names (GET /models): a reachability check."""
        req = urllib.request.Request(f"{self.base_url}/models")
        if self._key:
            req.add_header("Authorization", f"Bearer {self._key}")
        try:
            with urllib.request.urlopen(req, timeout=self.spec.timeout) as resp:
                payload = json.loads(resp.read())
            return [m["id"] for m in payload.get("data", [])]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ServerError(f"{self.base_url}/models is not reachable: {e}") from None

    # -- chat -------------------------------------------------------------------------------

    def _chat_one(self, conversation: Conversation, sampling: SamplingParams) -> Completion:
        body = {
            "model": self.spec.model,
            "messages": conversation,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "seed": sampling.seed,
        }
        if sampling.stop:
            body["stop"] = sampling.stop
        if is_prefill(conversation):  # continue the assistant turn (vLLM and SGLang accept this)
            body["add_generation_prompt"] = False
            body["continue_final_message"] = True

        def check(p):
            choice = p["choices"][0]
            if not isinstance(choice.get("message"), dict):
                raise ValueError("choices[0].message is not an object")
            if not isinstance(choice["message"].get("content") or "", str):
                raise ValueError("message.content is not text")
            usage = p.get("usage") or {}
            if not isinstance(usage, dict):
                raise ValueError("usage is not an object")
            for key in ("prompt_tokens", "completion_tokens"):
                value = usage.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise ValueError(f"usage.{key} is not an integer: {value!r:.40}")

        started = time.perf_counter()
        payload = self.post(f"{self.base_url}/chat/completions", body, check)
        choice = payload["choices"][0]
        usage = payload.get("usage") or {}
        finish = choice.get("finish_reason") or "stop"
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason="length" if finish == "length" else "stop",
            latency_s=time.perf_counter() - started,
        )

    def chat(
        self,
        conversations: list[Conversation],
        sampling: SamplingParams | None = None,
        *,
        should_stop: Callable[[], bool] | None = None,
        on_batch: Callable[[list[int], list[Completion]], None] | None = None,
    ) -> list[Completion]:
        sampling = sampling or SamplingParams()
        results: list[Completion | None] = [None] * len(conversations)

        def task(i: int):
            if should_stop and should_stop():
                return i, None
            return i, self._chat_one(conversations[i], sampling)

        with ThreadPoolExecutor(max_workers=self.spec.concurrency) as pool:
            futures = [pool.submit(task, i) for i in range(len(conversations))]
            try:
                for fut in as_completed(futures):
                    i, completion = fut.result()
                    if completion is not None:
                        results[i] = completion
                        if on_batch:
                            on_batch([i], [completion])
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return [r or Completion("", 0, 0, "cancelled") for r in results]

    # -- score ------------------------------------------------------------------------------

    def _tokenize(self, body: dict) -> list[int]:
        payload = self.post(
            f"{self.root}/tokenize",
            {"model": self.spec.model, **body},
            lambda p: [int(t) for t in p["tokens"]],
        )
        return [int(t) for t in payload["tokens"]]

    def _server_tokenizes(self) -> bool:
        if self._has_tokenize is None:
            try:
                self._post_once(f"{self.root}/tokenize", {"model": self.spec.model, "prompt": "a"})
                self._has_tokenize = True
            except (ServerError, _Retryable):
                self._has_tokenize = False
        return self._has_tokenize

    def _local_tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.spec.tokenizer)
        return self._tokenizer

    def _score_ids(self, prompt_ids: list[int], cont_ids: list[int]) -> float:
        ids = prompt_ids + cont_ids

        def check(p):
            lp = p["choices"][0].get("logprobs")
            if not lp or lp.get("token_logprobs") is None:
                raise ValueError("the response has no logprobs")
            lps = lp["token_logprobs"]
            if not isinstance(lps, list) or len(lps) < len(ids):
                n = len(lps) if isinstance(lps, list) else type(lps).__name__
                raise ValueError(f"{n} token logprobs for {len(ids)} prompt tokens")
            _check_logprobs(lps[len(prompt_ids) : len(ids)])

        payload = self.post(
            f"{self.base_url}/completions",
            {
                "model": self.spec.model,
                "prompt": ids,
                "max_tokens": 1,
                "echo": True,
                "logprobs": 0,
                "temperature": 0,
            },
            check,
        )
        lps = payload["choices"][0]["logprobs"]["token_logprobs"][: len(ids)]
        return float(sum(lps[len(prompt_ids) :]))

    def _score_text(self, prompt: str, cont: str) -> float:
        text = prompt + cont

        def check(p):
            lp = p["choices"][0]["logprobs"]
            if not lp or lp.get("text_offset") is None or lp.get("token_logprobs") is None:
                raise ValueError("the response has no logprobs")
            offsets, values = lp["text_offset"], lp["token_logprobs"]
            if not isinstance(offsets, list) or not isinstance(values, list):
                raise ValueError("text_offset and token_logprobs must be lists")
            if any(isinstance(o, bool) or not isinstance(o, int) for o in offsets):
                raise ValueError("text_offset holds a value that is not an integer")
            _check_logprobs(
                [
                    v
                    for o, v in zip(offsets, values, strict=False)
                    if len(prompt) <= o < len(text) and v is not None
                ]
            )

        payload = self.post(
            f"{self.base_url}/completions",
            {
                "model": self.spec.model,
                "prompt": text,
                "max_tokens": 1,
                "echo": True,
                "logprobs": 0,
                "temperature": 0,
            },
            check,
        )
        lp = payload["choices"][0]["logprobs"]
        total, seen = 0.0, False
        for offset, value in zip(lp["text_offset"], lp["token_logprobs"], strict=False):
            if offset >= len(text):
                break  # the generated token after the echo
            if offset >= len(prompt) and value is not None:
                total += value
                seen = True
        if not seen:
            raise ServerError(f"{self.base_url} returned no logprobs for the continuation {cont!r}")
        return total

    def score(self, prompts: list[str | Conversation], continuations: list[str]) -> list[float]:
        if len(prompts) != len(continuations):
            raise ValueError("score needs one continuation per prompt")
        use_ids = self._server_tokenizes()
        if not use_ids and any(not isinstance(p, str) for p in prompts) and not self.spec.tokenizer:
            raise ServerError(
                f"{self.root} has no /tokenize endpoint, so conversations cannot be scored through it; "
                "add tokenizer=<hf id or path> to the model spec so the chat template is applied here"
            )

        def one(pair):
            prompt, cont = pair
            if use_ids:
                if isinstance(prompt, str):
                    p_ids = self._tokenize({"prompt": prompt, "add_special_tokens": True})
                else:
                    prefill = is_prefill(prompt)
                    body = {"messages": prompt, "add_generation_prompt": not prefill}
                    if prefill:  # only then: servers without the field still score the rest
                        body["continue_final_message"] = True
                    p_ids = self._tokenize(body)
                c_ids = self._tokenize({"prompt": cont, "add_special_tokens": False})
                return self._score_ids(p_ids, c_ids)
            if not isinstance(prompt, str):
                prefill = is_prefill(prompt)
                prompt = self._local_tokenizer().apply_chat_template(
                    prompt,
                    add_generation_prompt=not prefill,
                    continue_final_message=prefill,
                    tokenize=False,
                )
            return self._score_text(prompt, cont)

        try:
            with ThreadPoolExecutor(max_workers=self.spec.concurrency) as pool:
                return list(pool.map(one, zip(prompts, continuations, strict=True)))
        except ServerError as e:
            if "logprobs" in str(e):
                raise ServerError(
                    f"{e}. Scoring needs a server that returns prompt logprobs (completions with "
                    "echo=true and logprobs); vLLM and SGLang do"
                ) from None
            raise

    def info(self) -> ModelInfo:
        return ModelInfo(
            spec=str(self.spec),
            backend="openai",
            details={
                "base_url": self.base_url,
                "concurrency": self.spec.concurrency,
                "timeout": self.spec.timeout,
                "retries": self.spec.retries,
            },
        )
