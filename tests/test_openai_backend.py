"""The `openai` backend against a fake OpenAI-compatible server (tests/fake_openai.py).

Only the far side of the network is fake: the backend's real HTTP client, thread pool,
timeouts and retries run. Backoff sleeps are recorded instead of slept, except in the job
test, which runs a real subprocess.
"""

from __future__ import annotations

import socket
import time
import types

import pytest

from cai_engine import jobs
from cai_engine.models import ModelError, SamplingParams, load_model, openai_compat, parse_spec
from cai_engine.models.openai_compat import ServerError
from cai_engine.prompts import select_prompts
from tests.fake_openai import BAD_REQUEST_MESSAGE, FakeOpenAI

CANARY = "sk-canary-7f3a9c1e5b"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture
def backoff(monkeypatch) -> list[float]:
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


def chat_requests(fake) -> list[dict]:
    return fake.seen("/v1/chat/completions")


# -- chat ---------------------------------------------------------------------------------


def test_chat_returns_text_usage_and_finish_reason(fake):
    model = load_model(fake.spec())
    [c] = model.chat([user("Is the sky blue?")], SamplingParams(max_new_tokens=16, seed=5))
    assert c.text == "answer to: Is the sky blue?"
    assert (c.prompt_tokens, c.completion_tokens) == (4, 4)  # 4 words in; the fake says 4 out
    assert c.finish_reason == "stop"
    assert c.truncated_tokens == 0 and c.latency_s > 0


def test_chat_sends_the_sampling_parameters(fake):
    model = load_model(fake.spec())
    sampling = SamplingParams(temperature=0.3, top_p=0.9, max_new_tokens=16, seed=5, stop=["\n"])
    model.chat([user("Hi")], sampling)
    [request] = chat_requests(fake)
    assert request["body"] == {
        "model": "fake-model",
        "messages": user("Hi"),
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 16,
        "seed": 5,
        "stop": ["\n"],
    }
    assert request["auth"] is None  # no api_key_env: no Authorization header


def test_concurrency_is_respected_and_results_keep_their_order(fake):
    fake.delay_s = 0.25  # long enough for requests to overlap if the backend lets them
    model = load_model(fake.spec(concurrency=2))
    conversations = [user(f"question {i}") for i in range(8)]
    reported = []
    results = model.chat(conversations, on_batch=lambda idx, done: reported.append((idx, done)))
    assert [c.text for c in results] == [f"answer to: question {i}" for i in range(8)]
    assert len(chat_requests(fake)) == 8
    assert 1 < fake.max_in_flight <= 2
    # on_batch sees each conversation once, with its own completion
    assert sorted(i for idx, _ in reported for i in idx) == list(range(8))
    for idx, done in reported:
        assert [results[i] for i in idx] == done


def test_list_models_reads_the_served_names(fake):
    assert load_model(fake.spec()).list_models() == ["fake-model"]


# -- retries and errors --------------------------------------------------------------------


def test_two_server_errors_then_success_is_retried(fake, backoff):
    fake.plan = ["500", "500"]
    model = load_model(fake.spec(retries=3))
    [c] = model.chat([user("Hi")])
    assert c.text == "answer to: Hi"
    assert len(chat_requests(fake)) == 3
    # Exponential backoff with jitter: 0.5 * 2**attempt, times a factor in [0.5, 1.5).
    assert len(backoff) == 2
    assert 0.25 <= backoff[0] < 0.75 and 0.5 <= backoff[1] < 1.5


def test_a_server_that_always_fails_names_the_url_and_the_attempts(fake, backoff):
    fake.then = "500"
    model = load_model(fake.spec(retries=3))
    with pytest.raises(ServerError) as e:
        model.chat([user("Hi")])
    message = str(e.value)
    assert f"{fake.base_url}/chat/completions failed after 4 attempt(s)" in message
    assert "HTTP 500" in message
    assert len(chat_requests(fake)) == 4  # 1 try + 3 retries
    assert len(backoff) == 3 and 1.0 <= backoff[2] < 3.0  # 0.5 * 2**2 * [0.5, 1.5)


@pytest.mark.parametrize(
    "behaviour",
    [
        "malformed",
        "no_choices",
        "429",
        "truncated",
    ],
)
def test_a_bad_response_is_retried(fake, backoff, behaviour):
    fake.plan = [behaviour]
    model = load_model(fake.spec(retries=1))
    [c] = model.chat([user("Hi")])
    assert c.text == "answer to: Hi"
    assert len(chat_requests(fake)) == 2


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [
        ("malformed", "malformed JSON in the response"),
        ("no_choices", "unexpected response shape: 'choices'"),
        ("429", "HTTP 429"),
    ],
)
def test_a_bad_response_that_persists_fails_with_its_reason(fake, backoff, behaviour, says):
    fake.then = behaviour
    model = load_model(fake.spec(retries=1))
    with pytest.raises(ServerError) as e:
        model.chat([user("Hi")])
    assert f"{fake.base_url}/chat/completions failed after 2 attempt(s)" in str(e.value)
    assert says in str(e.value)
    assert len(chat_requests(fake)) == 2


def test_a_bad_request_is_not_retried_and_its_message_is_shown(fake, backoff):
    fake.then = "400"
    model = load_model(fake.spec(retries=3))
    with pytest.raises(ServerError) as e:
        model.chat([user("Hi")])
    message = str(e.value)
    assert f"{fake.base_url}/chat/completions refused the request: HTTP 400" in message
    assert BAD_REQUEST_MESSAGE in message
    assert len(chat_requests(fake)) == 1
    assert backoff == []


def test_an_unreachable_server_names_the_url(backoff):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = load_model(f"openai:m?base_url=http://127.0.0.1:{port}/v1&retries=1&timeout=2")
    with pytest.raises(ServerError) as e:
        model.chat([user("Hi")])
    message = str(e.value)
    assert f"http://127.0.0.1:{port}/v1/chat/completions failed after 2 attempt(s)" in message
    assert "refused" in message.lower()


def test_a_slow_server_times_out_is_retried_and_then_fails(fake, backoff):
    fake.then = "slow"
    fake.slow_s = 5.0  # released when the fake closes
    model = load_model(fake.spec(retries=1, timeout=0.3))
    started = time.monotonic()
    with pytest.raises(ServerError) as e:
        model.chat([user("Hi")])
    assert time.monotonic() - started < 3.0  # two 0.3 s timeouts, not two 5 s waits
    assert f"{fake.base_url}/chat/completions failed after 2 attempt(s)" in str(e.value)
    assert "timed out" in str(e.value)
    assert len(chat_requests(fake)) == 2


def test_a_slow_answer_within_the_timeout_is_fine(fake):
    fake.plan = ["slow"]
    fake.slow_s = 0.2
    model = load_model(fake.spec(retries=0, timeout=5))
    assert model.chat([user("Hi")])[0].text == "answer to: Hi"


# -- the API key -------------------------------------------------------------------------


def test_the_api_key_is_sent_and_never_shown(fake, backoff, monkeypatch):
    monkeypatch.setenv("CANARY_KEY", CANARY)
    spec = fake.spec(api_key_env="CANARY_KEY", retries=0)
    model = load_model(spec)
    model.chat([user("Hi")])
    model.score(["Q: "], [" yes"])
    assert fake.requests and all(r["auth"] == f"Bearer {CANARY}" for r in fake.requests)

    assert CANARY not in spec
    assert CANARY not in str(parse_spec(spec))
    assert CANARY not in str(model.info()) and CANARY not in str(model.spec)
    errors = []
    for behaviour in ("400", "500", "malformed"):
        fake.then = behaviour
        with pytest.raises(ServerError) as e:
            model.chat([user("Hi")])
        errors.append(str(e.value))
    assert all(errors) and not any(CANARY in m for m in errors)


def test_a_missing_key_variable_fails_before_any_request(fake, monkeypatch):
    monkeypatch.delenv("CANARY_KEY", raising=False)
    with pytest.raises(ModelError, match="CANARY_KEY \\(api_key_env\\) is not set"):
        load_model(fake.spec(api_key_env="CANARY_KEY"))
    assert fake.requests == []


# -- score -------------------------------------------------------------------------------


def test_score_through_tokenize_sums_the_continuation_logprobs(fake):
    model = load_model(fake.spec())
    [score] = model.score(["Q: "], [" yes"])
    # The fake tokenizes by character (id = ord) with BOS = 1 for prompts:
    #   prompt "Q: " -> [1, 81, 58, 32]; continuation " yes" -> [32, 121, 101, 115].
    # Each echoed token's logprob is -id/1000, so the continuation sums to
    #   -(32 + 121 + 101 + 115) / 1000 = -0.369.
    assert score == pytest.approx(-0.369)
    [completion] = fake.seen("/v1/completions")
    assert completion["body"]["prompt"] == [1, 81, 58, 32, 32, 121, 101, 115]
    assert completion["body"]["echo"] is True and completion["body"]["max_tokens"] == 1
    tokenized = [r["body"] for r in fake.seen("/tokenize")]
    assert {"model": "fake-model", "prompt": "Q: ", "add_special_tokens": True} in tokenized
    assert {"model": "fake-model", "prompt": " yes", "add_special_tokens": False} in tokenized


def test_score_through_tokenize_renders_a_conversation_on_the_server(fake):
    model = load_model(fake.spec())
    scores = model.score([user("Hi"), "Q: "], [" yes", " no"])
    # Conversation: the fake renders "<u>Hi</u><a>"; the continuation is the same " yes"
    # (-0.369). " no" -> [32, 110, 111]: -(32 + 110 + 111) / 1000 = -0.253.
    assert scores == pytest.approx([-0.369, -0.253])
    prompts = [r["body"]["prompt"] for r in fake.seen("/v1/completions")]
    assert [ord(c) for c in "<u>Hi</u><a>"] + [32, 121, 101, 115] in prompts
    asked = [r["body"] for r in fake.seen("/tokenize") if "messages" in r["body"]]
    assert asked == [{"model": "fake-model", "messages": user("Hi"), "add_generation_prompt": True}]


def test_score_without_tokenize_uses_text_offsets(fake):
    fake.tokenize_route = False
    model = load_model(fake.spec())
    [score] = model.score(["Is the sky blue?"], [" Yes it is"])
    # The echo of "Is the sky blue? Yes it is" has the pieces (offset, text):
    #   (0 "Is") (2 " the") (6 " sky") (10 " blue?") (16 " Yes") (20 " it") (23 " is"),
    # plus the generated token at offset 26. The prompt is 16 characters, so the
    # continuation is " Yes" + " it" + " is", at -len/10 each: -(4 + 3 + 3) / 10 = -1.0.
    assert score == pytest.approx(-1.0)
    [completion] = fake.seen("/v1/completions")
    assert completion["body"]["prompt"] == "Is the sky blue? Yes it is"


def test_score_without_tokenize_refuses_a_conversation_without_a_tokenizer(fake):
    fake.tokenize_route = False
    model = load_model(fake.spec())
    with pytest.raises(ServerError) as e:
        model.score([user("Hi")], [" yes"])
    assert f"{fake.root} has no /tokenize endpoint" in str(e.value)
    assert "tokenizer=" in str(e.value)
    assert fake.seen("/v1/completions") == []


def test_score_without_tokenize_renders_a_conversation_with_the_named_tokenizer(
    fake, tiny_model_dir
):
    from transformers import AutoTokenizer

    fake.tokenize_route = False
    model = load_model(fake.spec(tokenizer=tiny_model_dir))
    [score] = model.score([user("Hi")], ["Yes it is"])
    rendered = AutoTokenizer.from_pretrained(tiny_model_dir).apply_chat_template(
        user("Hi"), add_generation_prompt=True, tokenize=False
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    [completion] = fake.seen("/v1/completions")
    assert completion["body"]["prompt"] == rendered + "Yes it is"
    # After the template's final "\n" piece: "Yes" + " it" + " is" = -(3 + 3 + 3) / 10.
    assert score == pytest.approx(-0.9)


def test_score_without_logprobs_says_scoring_needs_them(fake, backoff):
    fake.tokenize_route = False
    fake.then = "no_logprobs"
    model = load_model(fake.spec(retries=1))
    with pytest.raises(ServerError) as e:
        model.score(["Is the sky blue?"], [" Yes"])
    assert f"{fake.base_url}/completions" in str(e.value)
    assert "Scoring needs a server that returns prompt logprobs" in str(e.value)


def test_score_through_tokenize_without_logprobs_says_scoring_needs_them(fake, backoff):
    fake.then = "no_logprobs"
    model = load_model(fake.spec(retries=1))
    with pytest.raises(ServerError, match="Scoring needs a server that returns prompt logprobs"):
        model.score(["Q: "], [" yes"])


# -- a generate job against a server that fails midway ------------------------------------


def test_a_generate_job_keeps_the_rows_it_finished_before_the_server_failed(fake, seeded_store):
    answered = 3
    fake.plan = ["ok"] * answered
    fake.then = "500"  # every request after the first three
    spec = fake.spec(concurrency=1, retries=1, timeout=5)
    job = jobs.submit(
        seeded_store,
        "generate",
        {
            "prompts": "red-team:test",
            "model": spec,
            "limit": 6,
            "sampling": {"max_new_tokens": 8, "temperature": 0},
        },
    )
    job = jobs.wait(seeded_store, job.id, timeout=90, poll=0.2)
    assert job.status == "failed", job.run.log_path.read_text()
    assert f"{fake.base_url}/chat/completions failed after 2 attempt(s)" in job.error
    assert "HTTP 500" in job.error

    first = select_prompts(seeded_store, "red-team:test", 6)[:answered]
    rows = seeded_store.generations(job.id)
    by_id = {r["prompt_id"]: r for r in rows}
    assert sorted(by_id) == sorted(p.prompt_id for p in first)
    for p in first:
        row = by_id[p.prompt_id]
        assert row["text"] == f"answer to: {p.messages[-1]['content']}"
        assert (row["sample"], row["finish_reason"], row["model"]) == (
            0,
            "stop",
            str(parse_spec(spec)),
        )
    assert job.run.shards("generations")  # written to a shard before the job failed
    # 3 answered + 2 attempts at the fourth (a fifth may have started before the cancel)
    assert len(chat_requests(fake)) >= answered + 2
