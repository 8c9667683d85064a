"""Model specs and the `local` backend, on a tiny random Llama with SmolLM2's real tokenizer.

Two tiny models serve here. `tiny` is the session's `make_tiny_model` output: its tied,
near-zero weights make greedy decoding repeat the prompt's last token ("\\n" forever), which
is fine for sampling, scoring and bookkeeping. `sharp` is the same architecture with untied
embeddings and larger random weights, so its greedy text depends on the whole prompt and on
the positions: that is what the padding and ordering tests need to be able to fail.
"""

from __future__ import annotations

import math
import os

import pytest

from cai_engine.models import (
    EMBEDDED,
    VALID_FORMS,
    ContextOverflowError,
    ModelError,
    SamplingParams,
    load_model,
    parse_spec,
)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# Prompts of clearly different lengths, so that a result put back in the wrong place shows.
CONVERSATIONS = [
    user("Hi"),
    user("Tell me a long story about " + "a dragon and a knight who argue, " * 5),
    user("Why is the sky blue?"),
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "Another one, please, and explain the choice."},
    ],
    user("What is 2 + 2? Answer in one word."),
]


# -- specs --------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", [EMBEDDED, "embedded", "smollm2", "  embedded  "])
def test_the_embedded_aliases_name_the_embedded_model(alias):
    spec = parse_spec(alias)
    assert (spec.kind, spec.model, spec.backend) == ("embedded", EMBEDDED, "local")
    assert str(spec) == EMBEDDED


def test_an_hf_spec_names_a_hub_id():
    spec = parse_spec("hf:HuggingFaceTB/SmolLM2-360M-Instruct")
    assert (spec.kind, spec.model, spec.backend) == (
        "hf",
        "HuggingFaceTB/SmolLM2-360M-Instruct",
        "local",
    )


def test_a_bare_existing_folder_is_a_local_model(tmp_path, monkeypatch):
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    for text in ("my-model", str(tmp_path / "my-model"), "./my-model"):
        spec = parse_spec(text)
        assert spec.kind == "hf"
        assert spec.model == str((tmp_path / "my-model").resolve())


def test_a_model_spec_names_a_trained_model():
    spec = parse_spec("model:red-team-sl")
    assert (spec.kind, spec.model, spec.trainable) == ("trained", "red-team-sl", True)


def test_an_openai_spec_reads_its_options():
    spec = parse_spec(
        "openai:meta/llama?base_url=http://127.0.0.1:8000/v1&api_key_env=VLLM_API_KEY&concurrency=4"
    )
    assert (spec.kind, spec.model, spec.backend, spec.trainable) == (
        "openai",
        "meta/llama",
        "openai",
        False,
    )
    assert spec.base_url == "http://127.0.0.1:8000/v1"
    assert spec.api_key_env == "VLLM_API_KEY"
    assert spec.concurrency == 4 and isinstance(spec.concurrency, int)


def test_options_are_typed():
    spec = parse_spec("hf:/m?batch_size=16&trust_remote_code=true&max_context=512&dtype=float32")
    assert spec.batch_size == 16 and isinstance(spec.batch_size, int)
    assert spec.trust_remote_code is True
    assert spec.max_context == 512
    assert parse_spec("hf:/m?batch_size=auto").batch_size == "auto"
    spec = parse_spec("openai:m?base_url=http://h/v1&timeout=30&retries=5")
    assert spec.timeout == 30.0 and spec.retries == 5


def test_trust_remote_code_is_off_unless_asked_for():
    assert parse_spec("hf:org/some-model").trust_remote_code is False
    assert parse_spec("embedded").trust_remote_code is False
    assert parse_spec("hf:org/some-model?trust_remote_code=false").trust_remote_code is False


@pytest.mark.parametrize(
    "text",
    [
        EMBEDDED,
        f"{EMBEDDED}?dtype=float32&batch_size=8",
        "hf:HuggingFaceTB/SmolLM2-360M-Instruct?dtype=bfloat16&batch_size=16"
        "&trust_remote_code=true&max_context=512&truncation=error",
        "hf:/some/folder?device=cpu",
        "model:red-team-sl?device=cpu",
        "openai:meta/llama?base_url=http://127.0.0.1:8000/v1&api_key_env=VLLM_API_KEY"
        "&concurrency=4&timeout=30&retries=5&tokenizer=HuggingFaceTB/SmolLM2-135M-Instruct",
    ],
)
def test_a_spec_round_trips_through_its_string(text):
    spec = parse_spec(text)
    assert parse_spec(str(spec)) == spec
    assert str(parse_spec(str(spec))) == str(spec)


def test_a_base_url_with_its_own_query_round_trips():
    spec = parse_spec(
        {"kind": "openai", "model": "m", "base_url": "https://example.com/v1?api-version=2024&x=1"}
    )
    assert parse_spec(str(spec)).base_url == "https://example.com/v1?api-version=2024&x=1"


def test_an_unknown_spec_lists_the_valid_forms():
    with pytest.raises(ModelError) as e:
        parse_spec("gpt-4")
    assert "'gpt-4'" in str(e.value)
    assert VALID_FORMS in str(e.value)
    for form in ("hf:", "model:", "openai:", EMBEDDED):
        assert form in str(e.value)
    with pytest.raises(ModelError, match="empty model spec"):
        parse_spec("  ")
    with pytest.raises(ModelError, match="names no model after 'hf:'"):
        parse_spec("hf:")


def test_an_unknown_option_is_named():
    with pytest.raises(ModelError, match="unknown option 'colour'"):
        parse_spec("hf:/m?colour=red")


def test_a_bad_option_value_is_named():
    with pytest.raises(ModelError, match="dtype"):
        parse_spec("hf:/m?dtype=int3")


@pytest.mark.parametrize("option", ["dtype=float32", "batch_size=4", "device=cpu"])
def test_a_local_option_on_an_openai_spec_is_an_error(option):
    name = option.split("=")[0]
    with pytest.raises(ModelError, match=f"{name} only apply to local models"):
        parse_spec(f"openai:m?base_url=http://127.0.0.1:8000/v1&{option}")


@pytest.mark.parametrize("option", ["max_context=64", "truncation=error"])
def test_a_local_context_option_on_an_openai_spec_is_an_error(option):
    with pytest.raises(ModelError, match="only apply to local models"):
        parse_spec(f"openai:m?base_url=http://127.0.0.1:8000/v1&{option}")


@pytest.mark.parametrize(
    "option",
    ["base_url=http://h/v1", "api_key_env=KEY", "concurrency=4", "retries=1", "tokenizer=x/y"],
)
def test_an_openai_option_on_a_local_spec_is_an_error(option):
    name = option.split("=")[0]
    with pytest.raises(ModelError, match=f"{name} only apply to openai models"):
        parse_spec(f"hf:org/model?{option}")


def test_an_openai_spec_needs_a_base_url():
    with pytest.raises(ModelError, match="needs base_url, e.g. openai:my-model\\?base_url=http"):
        parse_spec("openai:m")


def test_a_base_url_must_be_http():
    with pytest.raises(ModelError, match="must start with http:// or https://, got '127.0.0.1:8"):
        parse_spec("openai:m?base_url=127.0.0.1:8000/v1")
    assert parse_spec("openai:m?base_url=https://api.example.com/v1").base_url.startswith("https")


def test_an_api_key_is_never_part_of_a_spec(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret-canary-1234")
    spec = parse_spec("openai:m?base_url=http://h/v1&api_key_env=MY_KEY")
    assert "sk-secret-canary-1234" not in str(spec)
    assert "sk-secret-canary-1234" not in repr(spec)
    assert "sk-secret-canary-1234" not in str(spec.model_dump())
    assert "api_key_env=MY_KEY" in str(spec)
    assert spec.api_key() == "sk-secret-canary-1234"
    assert parse_spec("openai:m?base_url=http://h/v1").api_key() is None


def test_a_missing_api_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("MISSING_KEY_VAR", raising=False)
    spec = parse_spec("openai:m?base_url=http://h/v1&api_key_env=MISSING_KEY_VAR")
    with pytest.raises(ModelError, match="MISSING_KEY_VAR \\(api_key_env\\) is not set"):
        spec.api_key()
    with pytest.raises(ModelError, match="MISSING_KEY_VAR"):
        load_model(spec)


# -- the local backend: fixtures ----------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("models-home")


@pytest.fixture(scope="module")
def tiny(tiny_spec, home):
    """The tiny model, float32, one batch for everything (auto batch size)."""
    return load_model(tiny_spec, home)


@pytest.fixture(scope="module")
def sharp_dir(tiny_model_dir, tmp_path_factory):
    """The tiny architecture with untied embeddings and weights of std 0.3, so greedy text
    depends on the whole prompt (the tiny model's greedy text is "\\n" for every prompt)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("sharp") / "sharp"
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = False
    config.initializer_range = 0.3
    torch.manual_seed(1)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig.from_pretrained(tiny_model_dir)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sharp(sharp_dir, home):
    return load_model(f"hf:{sharp_dir}?dtype=float32&batch_size=8", home)


@pytest.fixture(scope="module")
def sharp_one(sharp_dir, home):
    return load_model(f"hf:{sharp_dir}?dtype=float32&batch_size=1", home)


SAMPLED = SamplingParams(temperature=1.0, max_new_tokens=12, seed=7)
GREEDY = SamplingParams(temperature=0, max_new_tokens=8, seed=0)


# -- chat ---------------------------------------------------------------------------------


def test_chat_returns_one_completion_per_conversation(tiny):
    results = tiny.chat(CONVERSATIONS, SAMPLED)
    assert len(results) == len(CONVERSATIONS)
    lengths = [len(tiny.render(c)) for c in CONVERSATIONS]
    assert len(set(lengths)) == len(lengths)  # distinct, so a misplaced result would show
    for conv, c in zip(CONVERSATIONS, results, strict=True):
        assert c.prompt_tokens == len(tiny.render(conv))
        assert 0 < c.completion_tokens <= SAMPLED.max_new_tokens
        assert c.finish_reason == "length"  # a random model over 49k tokens never picks EOS here
        assert c.truncated_tokens == 0
        assert c.text and c.latency_s > 0


def test_render_applies_the_chat_template_with_the_generation_prompt(tiny):
    text = tiny.tokenizer.decode(tiny.render(user("Why is the sky blue?")))
    assert "<|im_start|>user\nWhy is the sky blue?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_results_come_back_in_input_order_whatever_the_lengths(sharp):
    batched = sharp.chat(CONVERSATIONS, GREEDY)
    alone = [sharp.chat([c], GREEDY)[0] for c in CONVERSATIONS]
    assert [c.text for c in batched] == [c.text for c in alone]
    assert len({c.text for c in batched}) == len(CONVERSATIONS)  # all different: order shows
    assert [c.prompt_tokens for c in batched] == [len(sharp.render(c)) for c in CONVERSATIONS]


def test_batch_size_does_not_change_greedy_text(sharp, sharp_one):
    # A left-padded row must decode exactly as it does alone: the padding must be masked out
    # (with an all-ones mask, this test fails), and positions must not matter (rotary
    # embeddings see only relative positions, so the pad offset cancels). In float32 what
    # remains is summation order in differently shaped matmuls (~1e-6 in a logit), far too
    # small to flip an argmax of this model's logits.
    many = sharp.chat(CONVERSATIONS, GREEDY)
    one_by_one = sharp_one.chat(CONVERSATIONS, GREEDY)
    assert [c.text for c in many] == [c.text for c in one_by_one]
    assert [c.completion_tokens for c in many] == [c.completion_tokens for c in one_by_one]


def test_the_same_seed_gives_the_same_text(tiny):
    first = tiny.chat(CONVERSATIONS, SAMPLED)
    second = tiny.chat(CONVERSATIONS, SAMPLED)
    assert [c.text for c in first] == [c.text for c in second]


def test_a_different_seed_gives_different_text(tiny):
    # 12 tokens sampled at temperature 1 from a near-uniform 49k-token vocabulary: two seeds
    # agreeing on a whole answer by chance is out of the question.
    a = tiny.chat(CONVERSATIONS, SAMPLED)
    b = tiny.chat(CONVERSATIONS, SAMPLED.model_copy(update={"seed": 8}))
    for x, y in zip(a, b, strict=True):
        assert x.text != y.text


def test_greedy_decoding_ignores_the_seed(sharp):
    a = sharp.chat(CONVERSATIONS, GREEDY)
    b = sharp.chat(CONVERSATIONS, GREEDY.model_copy(update={"seed": 12345}))
    assert [c.text for c in a] == [c.text for c in b]


def test_a_stop_string_cuts_the_text_before_it(tiny):
    conv = [user("Tell me about dragons.")]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=16, seed=3)
    full = tiny.chat(conv, sampling)[0].text
    # A whole word from the middle of the unconstrained answer, with its leading space: the
    # same seeded call produces it again, and it ends on a token boundary.
    words = [w for w in full.split(" ")[3:] if w]
    stop = " " + words[0]
    expected = full[: full.find(stop)]
    assert expected  # the cut leaves some text

    c = tiny.chat(conv, sampling.model_copy(update={"stop": [stop]}))[0]
    assert c.text == expected
    assert stop not in c.text
    assert c.finish_reason == "stop"
    assert c.completion_tokens < sampling.max_new_tokens  # generation stopped early


def test_should_stop_from_the_start_cancels_everything(tiny):
    calls = []
    results = tiny.chat(
        CONVERSATIONS,
        SAMPLED,
        should_stop=lambda: True,
        on_batch=lambda idx, done: calls.append(idx),
    )
    assert [c.finish_reason for c in results] == ["cancelled"] * len(CONVERSATIONS)
    assert all(c.text == "" and c.completion_tokens == 0 for c in results)
    assert calls == []


def test_on_batch_reports_every_input_exactly_once(tiny_model_dir, home):
    model = load_model(f"hf:{tiny_model_dir}?dtype=float32&batch_size=2", home)
    calls = []
    results = model.chat(
        CONVERSATIONS, SAMPLED, on_batch=lambda idx, done: calls.append((list(idx), list(done)))
    )
    # 5 conversations in batches of 2: 3 calls.
    assert len(calls) == 3
    seen = [i for idx, _ in calls for i in idx]
    assert sorted(seen) == list(range(len(CONVERSATIONS)))
    for idx, done in calls:
        assert len(idx) == len(done)
        for i, c in zip(idx, done, strict=True):
            assert c is results[i]


def test_a_long_prompt_is_truncated_from_the_left(tiny_model_dir, home):
    model = load_model(f"hf:{tiny_model_dir}?dtype=float32&max_context=64", home)
    conv = user("word " * 100)
    full = len(model.render(conv))
    assert full > 64
    c = model.chat([conv], SamplingParams(max_new_tokens=8, seed=0))[0]
    assert c.prompt_tokens == 64 - 8  # the context less the room for the answer
    assert c.truncated_tokens == full - (64 - 8)
    assert model.info().details["context"] == 64
    # A short prompt in the same call is left alone.
    short, long = model.chat([user("Hi"), conv], SamplingParams(max_new_tokens=8))
    assert short.truncated_tokens == 0 and long.truncated_tokens == full - 56


def test_truncation_error_refuses_a_long_prompt(tiny_model_dir, home):
    model = load_model(f"hf:{tiny_model_dir}?dtype=float32&max_context=64&truncation=error", home)
    conv = user("word " * 100)
    full = len(model.render(conv))
    with pytest.raises(ContextOverflowError) as e:
        model.chat([conv], SamplingParams(max_new_tokens=8))
    message = str(e.value)
    assert f"a prompt of {full} tokens" in message
    assert "64-token context" in message and "room for 56" in message
    assert "truncation=left" in message
    assert model.chat([user("Hi")], SamplingParams(max_new_tokens=8))[0].truncated_tokens == 0


def test_max_new_tokens_that_fill_the_context_is_an_error(tiny_model_dir, home):
    model = load_model(f"hf:{tiny_model_dir}?dtype=float32&max_context=64", home)
    with pytest.raises(ContextOverflowError, match="max_new_tokens=64 leaves no room"):
        model.chat([user("Hi")], SamplingParams(max_new_tokens=64))


# -- score --------------------------------------------------------------------------------


def hand_score(model, prompt_ids: list[int], cont_ids: list[int]) -> float:
    """Sum of log p(token | everything before it) over the continuation, computed directly."""
    import torch

    ids = torch.tensor([prompt_ids + cont_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model.model(input_ids=ids).logits[0].float(), dim=-1)
    n = len(prompt_ids)
    # the logits at position t - 1 predict token t
    return sum(logprobs[t - 1, ids[0, t]].item() for t in range(n, n + len(cont_ids)))


def cont_ids(model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_score_of_a_text_prompt_matches_a_hand_computation(tiny):
    prompt, cont = "The capital of France is", " Paris, of course."
    expected = hand_score(tiny, tiny.tokenizer(prompt)["input_ids"], cont_ids(tiny, cont))
    assert len(cont_ids(tiny, cont)) > 1
    assert tiny.score([prompt], [cont])[0] == pytest.approx(expected, abs=1e-4)


def test_score_of_a_conversation_uses_its_rendered_ids(tiny):
    conv = CONVERSATIONS[3]
    cont = "Blue, because the sky is."
    expected = hand_score(tiny, tiny.render(conv), cont_ids(tiny, cont))
    assert tiny.score([conv], [cont])[0] == pytest.approx(expected, abs=1e-4)


def test_scoring_a_mixed_batch_equals_scoring_each_alone(sharp):
    prompts = [
        "Hi",
        CONVERSATIONS[1],
        "A much longer plain text prompt, " * 4,
        CONVERSATIONS[3],
    ]
    conts = [" there", " Once upon a time, a dragon.", " (A)", " Blue."]
    together = sharp.score(prompts, conts)
    alone = [sharp.score([p], [c])[0] for p, c in zip(prompts, conts, strict=True)]
    assert together == pytest.approx(alone, abs=1e-4)
    # and the batched path agrees with the hand computation on a padded row
    expected = hand_score(sharp, sharp.tokenizer("Hi")["input_ids"], cont_ids(sharp, " there"))
    assert together[0] == pytest.approx(expected, abs=1e-4)


def test_two_choices_give_a_probability(tiny):
    prompt = user("Which is safer? (A) refuse (B) comply. Answer:")
    a, b = tiny.score([prompt, prompt], [" (A)", " (B)"])
    assert a < 0 and b < 0 and a != b
    p_a = math.exp(a) / (math.exp(a) + math.exp(b))
    p_b = math.exp(b) / (math.exp(a) + math.exp(b))
    assert 0 < p_a < 1 and 0 < p_b < 1
    assert p_a + p_b == pytest.approx(1.0)


def test_an_empty_continuation_is_an_error(tiny):
    with pytest.raises(ModelError, match="the continuation '' has no tokens"):
        tiny.score(["prompt"], [""])


def test_score_needs_one_continuation_per_prompt(tiny):
    with pytest.raises(ValueError, match="one continuation per prompt"):
        tiny.score(["a", "b"], [" c"])


def test_an_empty_prompt_is_an_error_not_a_wrong_score(tiny):
    assert tiny.tokenizer("")["input_ids"] == []
    with pytest.raises(ModelError):
        tiny.score([""], [" hello"])


# -- loading ------------------------------------------------------------------------------


def test_dtype_auto_measures_and_says_why(tiny_model_dir, home):
    from cai_engine.models.local import bf16_speedup, cpu_has_bf16

    speedup = bf16_speedup()
    assert isinstance(speedup, float) and speedup > 0
    model = load_model(f"hf:{tiny_model_dir}", home)
    details = model.info().details
    native = cpu_has_bf16()
    # bf16 when the CPU has bf16 instructions and bf16 is not clearly slower (0.7x), or when
    # it is 1.5x faster.
    expected = "bfloat16" if (native and speedup >= 0.7) or speedup >= 1.5 else "float32"
    assert details["dtype"] == expected
    assert details["dtype_reason"].startswith(f"bf16 matmul measured {speedup:.1f}x fp32")
    assert details["device"] == "cpu" or details["device"].startswith("cuda")


def test_a_configured_dtype_says_so(tiny):
    details = tiny.info().details
    assert (details["dtype"], details["dtype_reason"]) == ("float32", "as configured")
    assert details["context"] == 2048 and details["parameters"] > 0
    assert tiny.info().backend == "local"


def test_an_unknown_local_path_is_a_clear_error(tmp_path, home):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError) as e:
        load_model(str(missing), home)
    assert str(missing) in str(e.value)
    assert "cannot load model" in str(e.value)


def test_an_unknown_trained_model_lists_the_known_ones(tmp_path):
    models = tmp_path / "models"
    for name in ("alpha", "beta"):
        (models / name).mkdir(parents=True)
        (models / name / "config.json").write_text("{}")
    (models / "half-written").mkdir()  # no config.json: not a model
    with pytest.raises(ModelError) as e:
        load_model("model:gamma", tmp_path)
    message = str(e.value)
    assert "no trained model named 'gamma'" in message
    assert "known: alpha, beta" in message
    assert "half-written" not in message


def test_an_unknown_trained_model_in_an_empty_home_says_none(tmp_path):
    with pytest.raises(ModelError, match="known: none"):
        load_model("model:gamma", tmp_path)


def test_make_tiny_model_is_idempotent(tiny_model_dir):
    from cai_engine.models.tiny import make_tiny_model

    before = {p.name: os.stat(p).st_mtime_ns for p in tiny_model_dir.iterdir()}
    assert make_tiny_model(tiny_model_dir) == tiny_model_dir
    after = {p.name: os.stat(p).st_mtime_ns for p in tiny_model_dir.iterdir()}
    assert after == before
    assert "config.json" in before and "tokenizer.json" in before
