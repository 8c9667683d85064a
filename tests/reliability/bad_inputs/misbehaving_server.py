"""A local HTTP server that answers each request with whatever the test scripted for it.

Unlike `tests/fake_openai.py`, whose misbehaviours are a fixed list, each answer here is a
small function that writes raw bytes to the socket, so a test can send a half-finished chunked
body, a garbage status line, a body dripped one byte at a time, or a well-formed reply with
the wrong shape. The client side is the real `openai:` backend.

Well-formed answers ("ok") are simple to predict:
- /v1/chat/completions answers "echo: <last message>" with usage 3 + 5 tokens;
- /tokenize returns one id per character (`ord(c)`);
- /v1/completions echoes the prompt ids with logprob -0.01 per token after the first.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Responder = Callable[[BaseHTTPRequestHandler, dict], None]


# -- well-formed bodies ---------------------------------------------------------------------


def chat_body(request: dict, **overrides) -> dict:
    last = request["messages"][-1]["content"]
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": f"echo: {last}"},
        "finish_reason": "stop",
    }
    body = {
        "id": "chat-1",
        "object": "chat.completion",
        "choices": [choice],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5},
    }
    body.update(overrides)
    return body


def completion_body(request: dict, token_logprobs: list | None = None) -> dict:
    prompt = request["prompt"]
    ids = prompt if isinstance(prompt, list) else [ord(c) for c in prompt]
    if token_logprobs is None:
        token_logprobs = [None] + [-0.01] * (len(ids) - 1) + [-0.5]
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "choices": [
            {
                "index": 0,
                "text": "x",
                "logprobs": {
                    "tokens": [str(i) for i in ids] + ["x"],
                    "token_logprobs": token_logprobs,
                },
                "finish_reason": "length",
            }
        ],
    }


# -- responders: each writes one answer ---------------------------------------------------


def send_json(handler, status: int, payload) -> None:
    send_raw_body(handler, status, json.dumps(payload).encode())


def send_raw_body(handler, status: int, body: bytes, content_type="application/json") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def ok(handler, request: dict) -> None:
    if handler.path == "/tokenize":
        if "messages" in request:
            text = "".join(m["content"] for m in request["messages"])
        else:
            text = request["prompt"]
        send_json(handler, 200, {"tokens": [ord(c) for c in text]})
    elif handler.path == "/v1/completions":
        send_json(handler, 200, completion_body(request))
    else:
        send_json(handler, 200, chat_body(request))


def status(code: int, body: bytes = b"", content_type: str = "text/html") -> Responder:
    def respond(handler, request):
        send_raw_body(handler, code, body, content_type)

    return respond


def payload(make: Callable[[dict], object]) -> Responder:
    """200 with `make(request)` as its JSON body."""

    def respond(handler, request):
        send_json(handler, 200, make(request))

    return respond


def raw(data: bytes) -> Responder:
    """Write `data` as the whole response (status line included), then hang up."""

    def respond(handler, request):
        handler.wfile.write(data)
        handler.wfile.flush()
        handler.close_connection = True

    return respond


def hang_up(handler, request) -> None:
    """Read the request, answer nothing, close the connection."""
    handler.close_connection = True


def chunked_then_cut(handler, request) -> None:
    """A chunked 200 whose body stops after the first chunk (no terminating chunk)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    part = b'{"choices": [{"mess'
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
    handler.wfile.flush()
    handler.close_connection = True


def no_length_then_cut(handler, request) -> None:
    """A 200 with no Content-Length whose JSON body ends halfway when the server hangs up."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(b'{"choices": [{"message": {"content": "half')
    handler.wfile.flush()
    handler.close_connection = True


class MisbehavingServer:
    """`plan` lists responders for the next requests to the model routes (chat, completions),
    in order; after it runs out every such request gets `then`. /tokenize always gets `ok`
    unless `tokenize` is set."""

    def __init__(self):
        self.plan: list[Responder] = []
        self.then: Responder = ok
        self.tokenize: Responder = ok
        self.requests: list[tuple[str, dict]] = []
        self.release = threading.Event()  # set on close: dripping handlers stop at once
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, client_address: None
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def spec(self, **options) -> str:
        opts = {"base_url": self.base_url, "retries": 1, "timeout": 5, **options}
        return "openai:bad-model?" + "&".join(f"{k}={v}" for k, v in opts.items())

    def calls(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def _next(self, path: str) -> Responder:
        if path == "/tokenize":
            return self.tokenize
        with self._lock:
            return self.plan.pop(0) if self.plan else self.then

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append((self.path, request))
                server._next(self.path)(self, request)

        return Handler


def drip(server: MisbehavingServer, interval: float, slow_bytes: int) -> Responder:
    """A well-formed chat answer whose first `slow_bytes` bytes come one every `interval`
    seconds: every single read is quick, the whole answer is slow."""

    def respond(handler, request):
        body = json.dumps(chat_body(request)).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.flush()
        for i in range(slow_bytes):
            if server.release.wait(interval):
                return
            handler.wfile.write(body[i : i + 1])
            handler.wfile.flush()
        handler.wfile.write(body[slow_bytes:])

    return respond
