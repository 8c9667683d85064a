"""A fake OpenAI-compatible server for the `openai` backend's tests: the far side of the network.

It is a real `ThreadingHTTPServer` on 127.0.0.1 (port 0) in a thread, so the backend's real
HTTP client, timeouts and retries run against it. Each test configures how it misbehaves.

Its "model" is arithmetic, so expected values can be worked out by hand:
- /tokenize: one token per character, id = `ord(c)`; `add_special_tokens` prepends BOS = 1;
  `messages` are rendered as `<r>{content}</r>` per turn (r: the role's first letter),
  then `<a>` for the generation prompt.
- /v1/completions with `echo` and a list of ids: token_logprobs = [None, -id/1000 for the
  rest], plus one generated token (-0.5).
- /v1/completions with `echo` and a text prompt: one token per word with at most one leading
  space, or per other whitespace character (regex ` ?\\S+|\\s`), logprob =
  -len(piece)/10, `text_offset` = the piece's start; the first token's logprob is None, and
  one generated token follows at offset len(text).
- /v1/chat/completions: answers "answer to: <last user message>", usage prompt_tokens = words
  in all messages, completion_tokens = 4, finish_reason "stop".
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOS = 1
GENERATED_LOGPROB = -0.5

# What one request to /v1/chat/completions or /v1/completions does.
BEHAVIOURS = (
    "ok",
    "500",  # HTTP 500
    "429",  # HTTP 429 (rate limited)
    "400",  # HTTP 400 with an error message
    "malformed",  # 200 with a body that is not JSON
    "no_choices",  # 200 with a JSON object without `choices`
    "slow",  # sleeps `slow_s` before answering
    "truncated",  # promises more bytes than it sends, then closes
    "no_logprobs",  # completions with `logprobs: null`
)
BAD_REQUEST_MESSAGE = "max_tokens is too large for this model"


def render_messages(messages: list[dict]) -> str:
    """The fake server's chat template."""
    return "".join(f"<{m['role'][0]}>{m['content']}</{m['role'][0]}>" for m in messages) + "<a>"


def text_tokens(text: str) -> list[tuple[int, str]]:
    """(offset, piece) for each ` ?\\S+|\\s` piece: the fake server's text tokenizer."""
    return [(m.start(), m.group()) for m in re.finditer(r" ?\S+|\s", text)]


class FakeOpenAI:
    """Configure it per test, then read what it saw.

    `plan` lists behaviours for the next model requests (chat and completions), consumed in
    order; after it runs out every request gets `then`. `tokenize_route=False` serves no
    /tokenize (404). `delay_s` slows every chat answer (to see requests overlap).
    """

    def __init__(self):
        self.plan: list[str] = []
        self.then = "ok"
        self.tokenize_route = True
        self.delay_s = 0.0
        self.slow_s = 2.0
        self.requests: list[dict] = []  # {"path", "auth", "body"} of every request, in order
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._release = threading.Event()  # set on close, so slow handlers end at once
        self.gate = threading.Event()  # answers wait while it is clear (a test holds them)
        self.gate.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, client_address: None  # client went away
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def spec(self, **options) -> str:
        """An `openai:` spec for this server, e.g. `fake.spec(retries=0, concurrency=2)`."""
        query = "&".join(f"{k}={v}" for k, v in {"base_url": self.base_url, **options}.items())
        return f"openai:fake-model?{query}"

    def seen(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self._release.set()
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()

    # -- the server side ------------------------------------------------------------------

    def _next_behaviour(self) -> str:
        with self._lock:
            return self.plan.pop(0) if self.plan else self.then

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def done(self) -> None:
                """This request stops counting as in flight: before its answer is written, since
                the client may read it and send the next request before this thread runs again."""
                if getattr(self, "_counted", False):
                    self._counted = False
                    with fake._lock:
                        fake.in_flight -= 1

            def send(self, status: int, payload, raw: bytes | None = None):
                self.done()
                body = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/v1/models":
                    self.send(200, {"data": [{"id": "fake-model"}]})
                else:
                    self.send(404, {"error": "not found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append(
                        {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                    )
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                self._counted = True
                try:
                    self.route(body)
                finally:
                    self.done()

            def route(self, body: dict):
                if self.path == "/tokenize":
                    if not fake.tokenize_route:
                        self.send(404, {"detail": "Not Found"})
                    else:
                        self.send(200, {"tokens": tokenize(body)})
                    return
                if self.path not in ("/v1/chat/completions", "/v1/completions"):
                    self.send(404, {"detail": "Not Found"})
                    return
                behaviour = fake._next_behaviour()
                if behaviour == "500":
                    self.send(500, {"error": {"message": "internal error"}})
                elif behaviour == "429":
                    self.send(429, {"error": {"message": "rate limited"}})
                elif behaviour == "400":
                    self.send(400, {"error": {"message": BAD_REQUEST_MESSAGE}})
                elif behaviour == "malformed":
                    self.send(200, None, raw=b'{"choices": [{"message": ')
                elif behaviour == "no_choices":
                    self.send(200, {"id": "x", "object": "chat.completion"})
                elif behaviour == "truncated":
                    self.done()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "500")
                    self.end_headers()
                    self.wfile.write(b'{"choices": [')
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    fake.gate.wait(timeout=300)
                    if behaviour == "slow":
                        fake._release.wait(fake.slow_s)
                    if self.path == "/v1/chat/completions":
                        if fake.delay_s:
                            time.sleep(fake.delay_s)
                        self.send(200, chat_answer(body))
                    else:
                        self.send(200, completion_answer(body, behaviour == "no_logprobs"))

        return Handler


def tokenize(body: dict) -> list[int]:
    if "messages" in body:
        return [ord(c) for c in render_messages(body["messages"])]
    ids = [ord(c) for c in body["prompt"]]
    return [BOS, *ids] if body.get("add_special_tokens", True) else ids


def chat_answer(body: dict) -> dict:
    last = body["messages"][-1]["content"]
    words = sum(len(m["content"].split()) for m in body["messages"])
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"answer to: {last}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": words, "completion_tokens": 4, "total_tokens": words + 4},
    }


def completion_answer(body: dict, without_logprobs: bool = False) -> dict:
    prompt = body["prompt"]
    if isinstance(prompt, list):  # token ids
        logprobs = {
            "tokens": [str(i) for i in prompt] + ["x"],
            "token_logprobs": [None] + [-i / 1000 for i in prompt[1:]] + [GENERATED_LOGPROB],
        }
    else:
        pieces = text_tokens(prompt)
        logprobs = {
            "tokens": [p for _, p in pieces] + [" x"],
            "token_logprobs": [None] + [-len(p) / 10 for _, p in pieces[1:]] + [GENERATED_LOGPROB],
            "text_offset": [o for o, _ in pieces] + [len(prompt)],
        }
    return {
        "id": "cmpl-fake",
        "object": "text_completion",
        "choices": [
            {
                "index": 0,
                "text": " x",
                "logprobs": None if without_logprobs else logprobs,
                "finish_reason": "length",
            }
        ],
    }
