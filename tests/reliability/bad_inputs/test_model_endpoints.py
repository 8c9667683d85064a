"""Misbehaving model servers, against the real `openai:` backend and a real `generate` job.

tests/test_openai_backend.py already covers plain 500s, 429, 400, a body that is not JSON, a
missing `choices`, a Content-Length that promises more than arrives, no listener at all and a
server that is slow to answer. The cases here are the other ways a server goes wrong: it
hangs up, cuts a chunked body, sends a garbage status line, stalls halfway through a body,
drips it, or answers with a well-formed body of the wrong shape. Each must be retried and
then fail with one clear `ServerError` naming the URL and what was wrong; a job that meets
one must fail with that error and keep every answer it finished.
"""

from __future__ import annotations

import json
import time
import types

import pytest

from cai_engine import jobs
from cai_engine.models import SamplingParams, load_model, openai_compat, parse_spec
from cai_engine.models.openai_compat import ServerError
from cai_engine.prompts import import_prompt_set, select_prompts
from tests.reliability.bad_inputs import misbehaving_server as srv
from tests.runners import kill_runners

USER = [{"role": "user", "content": "Is it raining?"}]


@pytest.fixture
def server():
    s = srv.MisbehavingServer()
    yield s
    s.close()


@pytest.fixture
def no_backoff(monkeypatch) -> list[float]:
    """Record the backend's backoff sleeps instead of sleeping them."""
    slept: list[float] = []
    monkeypatch.setattr(
        openai_compat,
        "time",
        types.SimpleNamespace(
            sleep=slept.append, perf_counter=time.perf_counter, monotonic=time.monotonic
        ),
    )
    return slept


def stall_mid_body(server: srv.MisbehavingServer):
    """Headers and the first bytes of the body, then nothing until the server closes."""

    def respond(handler, request):
        body = json.dumps(srv.chat_body(request)).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:10])
        handler.wfile.flush()
        server.release.wait(10)

    return respond


def chat_with(**overrides):
    return srv.payload(lambda request: srv.chat_body(request, **overrides))


# -- chat: retried, then one clear error ---------------------------------------------------

# (responder, what the error must say after "failed after 2 attempt(s): ")
CHAT_FAILURES = [
    pytest.param(srv.hang_up, "RemoteDisconnected", id="hangs-up-without-answering"),
    pytest.param(
        srv.chunked_then_cut, "broken HTTP response: IncompleteRead", id="chunked-body-cut"
    ),
    pytest.param(
        srv.no_length_then_cut, "malformed JSON in the response", id="unsized-body-cut-short"
    ),
    pytest.param(srv.raw(b"SPDY/9 ???\r\n\r\n"), "BadStatusLine", id="garbage-status-line"),
    pytest.param(srv.raw(b'{"choices": []}'), "BadStatusLine", id="body-without-status-line"),
    pytest.param(
        srv.status(503, b"<html><h1>Bad Gateway</h1></html>"),
        "HTTP 503: <html>",
        id="503-html-page",
    ),
    pytest.param(srv.status(500, b"\xff\xfe not utf-8 \x00"), "HTTP 500", id="500-binary-body"),
    pytest.param(
        srv.payload(lambda r: {"choices": []}),
        "unexpected response shape: list index out of range",
        id="choices-empty",
    ),
    pytest.param(
        srv.payload(lambda r: {"choices": ["just text"]}),
        "unexpected response shape",
        id="choice-is-a-string",
    ),
    pytest.param(
        chat_with(choices=[{"message": {"content": {"text": "nested"}}}]),
        "unexpected response shape: message.content is not text",
        id="content-is-an-object",
    ),
    pytest.param(
        srv.payload(lambda r: [srv.chat_body(r)]),
        "expected a JSON object, got list",
        id="top-level-array",
    ),
    pytest.param(
        chat_with(choices=[{"message": None, "finish_reason": "stop"}]),
        "unexpected response shape",
        id="message-is-null",
    ),
    pytest.param(
        chat_with(usage={"prompt_tokens": "lots", "completion_tokens": 1}),
        "usage",
        id="usage-is-not-a-number",
    ),
]


@pytest.mark.parametrize(("responder", "says"), CHAT_FAILURES)
def test_a_bad_answer_is_retried_then_fails_naming_the_url_and_the_problem(
    server, no_backoff, responder, says
):
    server.then = responder
    model = load_model(server.spec(retries=1))
    with pytest.raises(ServerError) as caught:
        model.chat([USER])
    message = str(caught.value)
    assert message.startswith(f"{server.base_url}/chat/completions failed after 2 attempt(s): ")
    assert says in message, message
    assert server.calls("/v1/chat/completions") == 2
    assert len(no_backoff) == 1


@pytest.mark.parametrize(
    "responder",
    [srv.hang_up, srv.chunked_then_cut, srv.raw(b"HTTP/1.1 ??\r\n\r\n"), srv.status(502)],
    ids=["hang-up", "chunked-cut", "garbage-status", "502"],
)
def test_one_bad_answer_then_a_good_one_succeeds(server, no_backoff, responder):
    server.plan = [responder]
    model = load_model(server.spec(retries=2))
    [answer] = model.chat([USER], SamplingParams(max_new_tokens=8))
    assert answer.text == "echo: Is it raining?"
    assert server.calls("/v1/chat/completions") == 2


def test_a_body_that_stalls_halfway_times_out_and_names_the_url(server, no_backoff):
    server.then = stall_mid_body(server)
    model = load_model(server.spec(retries=1, timeout=0.3))
    with pytest.raises(ServerError) as caught:
        model.chat([USER])
    message = str(caught.value)
    assert message.startswith(f"{server.base_url}/chat/completions failed after 2 attempt(s)")
    assert "timed out" in message
    assert server.calls("/v1/chat/completions") == 2


def test_a_dripping_body_is_held_to_the_request_timeout(server, no_backoff):
    # Each byte comes well within the timeout; the whole answer takes 2.5 s.
    server.then = srv.drip(server, interval=0.1, slow_bytes=25)
    model = load_model(server.spec(retries=0, timeout=1.5))
    with pytest.raises(ServerError) as caught:
        model.chat([USER])
    assert "timed out" in str(caught.value)


# -- score: wrong logprob shapes -------------------------------------------------------------


def completions_with(token_logprobs):
    """/v1/completions answers with `token_logprobs(n)` for a prompt of n token ids."""

    def make(request):
        return srv.completion_body(request, token_logprobs(len(request["prompt"])))

    return srv.payload(make)


SCORE_FAILURES = [
    pytest.param(
        completions_with(lambda n: [None, -0.1]),
        "2 token logprobs for",
        id="too-few-logprobs",
    ),
    pytest.param(
        srv.payload(lambda r: {"choices": [{"text": "x", "logprobs": None}]}),
        "the response has no logprobs",
        id="logprobs-null",
    ),
    pytest.param(
        srv.payload(lambda r: {"choices": [{"logprobs": {"tokens": ["a"]}}]}),
        "the response has no logprobs",
        id="token-logprobs-missing",
    ),
    pytest.param(
        completions_with(lambda n: [None] * (n + 1)),
        "logprob",
        id="null-logprobs-for-the-continuation",
    ),
    pytest.param(
        completions_with(lambda n: [None] + ["-0.25"] * n),
        "logprob",
        id="logprobs-as-strings",
    ),
    pytest.param(
        completions_with(lambda n: [None] + [float("nan")] * n),
        "logprob",
        id="logprobs-nan",
    ),
]


@pytest.mark.parametrize(("responder", "says"), SCORE_FAILURES)
def test_score_refuses_logprobs_of_the_wrong_shape(server, no_backoff, responder, says):
    server.then = responder
    model = load_model(server.spec(retries=1))
    with pytest.raises(ServerError) as caught:
        model.score(["Q: "], [" yes"])
    message = str(caught.value)
    assert f"{server.base_url}/completions failed after 2 attempt(s)" in message
    assert says in message, message


def test_score_refuses_token_ids_that_are_not_numbers(server, no_backoff):
    server.tokenize = srv.payload(lambda r: {"tokens": ["Q", ":"]})
    model = load_model(server.spec(retries=1))
    with pytest.raises(ServerError) as caught:
        model.score(["Q: "], [" yes"])
    root = server.base_url.removesuffix("/v1")
    assert str(caught.value).startswith(f"{root}/tokenize failed after 2 attempt(s)")
    assert "invalid literal for int()" in str(caught.value)
    assert server.calls("/v1/completions") == 0


# -- a generate job keeps what it finished -------------------------------------------------

QUESTIONS = [f"Question number {i}?" for i in range(5)]


@pytest.fixture
def job_store(user_store, cai_home):
    body = "".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS).encode()
    import_prompt_set(user_store, ("questions.jsonl", body), "questions")
    yield user_store
    kill_runners(cai_home)


@pytest.mark.parametrize(
    ("responder", "says"),
    [
        pytest.param(srv.hang_up, "RemoteDisconnected", id="server-hangs-up"),
        pytest.param(srv.chunked_then_cut, "IncompleteRead", id="chunked-body-cut"),
        pytest.param(
            chat_with(choices=[{"message": None}]),
            "unexpected response shape",
            id="message-is-null",
        ),
    ],
)
def test_a_generate_job_fails_cleanly_and_keeps_the_answers_it_finished(
    server, job_store, responder, says
):
    answered = 2
    server.plan = [srv.ok] * answered
    server.then = responder
    spec = server.spec(concurrency=1, retries=1, timeout=5)
    job = jobs.submit(
        job_store,
        "generate",
        {"prompts": "questions", "model": spec, "sampling": {"max_new_tokens": 8}},
    )
    job = jobs.wait(job_store, job.id, timeout=60, poll=0.2)

    assert job.status == "failed", job.run.log_tail()
    assert f"{server.base_url}/chat/completions failed after 2 attempt(s)" in job.error
    assert says in job.error
    assert "Traceback" not in job.error

    first = select_prompts(job_store, "questions")[:answered]
    rows = job_store.generations(job.id)
    assert sorted(r["prompt_id"] for r in rows) == sorted(p.prompt_id for p in first)
    for row in rows:
        asked = next(p for p in first if p.prompt_id == row["prompt_id"])
        assert row["text"] == f"echo: {asked.text}"
        assert row["model"] == str(parse_spec(spec))
    assert job.run.shards("generations")  # the finished answers were written before the end
    # The job can be resumed once the server is fixed: the kept rows are not asked again.
    assert job.status in jobs.RESUMABLE
