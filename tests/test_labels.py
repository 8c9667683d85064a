"""RL-CAI labels: the CoT clamp, the multiple-choice question,
context fitting, exact choice scoring on a tiny real model, the pairs and label jobs (submit,
kill, resume) and labelling through an OpenAI-compatible server.

Where a test needs a feedback model with a known preference, `Judge` stands in for it: a
`ChatModel` whose P(option (A)) comes from a rule on the question it reads, and which
records every prompt it is given. Everything else is real: the tiny random Llama (SmolLM2's
tokenizer and chat template), job processes, the store, and the fake OpenAI server's HTTP.
"""

from __future__ import annotations

import math
import os
import signal
from collections import Counter

import pytest
from pydantic import ValidationError

from cai_engine import jobs
from cai_engine.constitution import load_constitution
from cai_engine.errors import CaiError
from cai_engine.home import BUNDLED_CONSTITUTIONS, runs_dir
from cai_engine.jobs import JobConfigError
from cai_engine.judge import (
    ANSWER_PREFIX,
    COT_PREFIX,
    OMITTED,
    comparison_turns,
    draw_principle,
    select_comparison_shots,
)
from cai_engine.labels import LabelConfig, label_pairs, submit_labels
from cai_engine.models import Completion, ModelInfo, load_model, parse_spec
from cai_engine.models.base import ChatModel
from cai_engine.models.decode import MIN_SHARED_PREFIX, common_prefix
from cai_engine.pairs import pair_flags
from cai_engine.review import agreement
from tests.fake_openai import FakeOpenAI, render_messages
from tests.runners import alive, finish, kill_runners, runner_pids, wait_until
from tests.test_pairs import insert_job

DEADLINE = 90.0  # seconds any one wait on a job may take before the test fails
HARMLESS = load_constitution(BUNDLED_CONSTITUTIONS / "harmless.yaml")


# -- helpers -------------------------------------------------------------------------------


def options_of(question: str) -> tuple[str, str]:
    """The texts shown as (A) and (B) at the end of a multiple-choice question."""
    tail = question.rsplit("\nOptions:\n(A) ", 1)[1]
    first, second = tail.split("\n(B) ", 1)
    return first, second


class Judge(ChatModel):
    """A feedback-model double. `prefer(first, second)` is P(option (A)); `think(first,
    second)` is its chain of thought. It records every prompt it scores and every chat."""

    spec = "judge"

    def __init__(self, prefer, *, think=None, context=None):
        self.prefer = prefer
        self.think = think or (lambda first, second: "I weigh both.")
        self.context = context
        self.scored: list[list[dict]] = []
        self.chats: list[tuple[list[list[dict]], object]] = []

    @staticmethod
    def question(conversation: list[dict]) -> str:
        """The multiple-choice question: the last user turn (an assistant prefill follows)."""
        assert conversation[-1]["role"] == "assistant"
        assert conversation[-2]["role"] == "user"
        return conversation[-2]["content"]

    def chat(self, conversations, sampling=None, *, should_stop=None, on_batch=None):
        self.chats.append((conversations, sampling))
        out = []
        for c in conversations:
            text = " " + self.think(*options_of(self.question(c))) + "  "
            out.append(Completion(text, 10, 7, "stop", 0.01))
        return out

    def score(self, prompts, continuations):
        raise AssertionError("labels are read through score_choices")

    def score_choices(self, prompts, choices):
        assert choices == [" (A)", " (B)"]
        out = []
        for p in prompts:
            self.scored.append(p)
            pa = self.prefer(*options_of(self.question(p)))
            out.append([math.log(pa), math.log1p(-pa)])
        return out

    def info(self) -> ModelInfo:
        return ModelInfo(spec="judge", backend="test")

    @property
    def context_length(self):
        return self.context

    def count_tokens(self, conversation) -> int:
        return len("".join(m["content"] for m in conversation)) // 4  # four characters a token


def prefers(text: str, p: float = 0.8):
    """A judge rule: the response `text` wins with probability `p`, in either position."""
    return lambda first, second: p if first == text else 1 - p


def make_pair(prompt_id, a, b, pair=0, messages=None) -> dict:
    return {
        "job_id": "pairs-test",
        "prompt_set": "red-team",
        "prompt_id": prompt_id,
        "pair": pair,
        "response_a": a,
        "response_b": b,
        "flags": pair_flags(a, b),
        "prompt_messages": messages or [{"role": "user", "content": f"Question {prompt_id}?"}],
    }


def config(**changes) -> LabelConfig:
    return LabelConfig(
        **{"pairs": "pairs-test", "constitution": "harmless", "few_shots": 0, **changes}
    )


def label(pairs, judge, **changes) -> list[dict]:
    return label_pairs(
        pairs, HARMLESS, HARMLESS.hash, judge, config(**changes), job_id="label-test"
    )


def turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def label_key(row) -> tuple:
    return (row["prompt_id"], row["pair"])


@pytest.fixture(autouse=True)
def reap_runners(cai_home):
    """No job process started by a test outlives it, whether the test passed or not."""
    yield
    kill_runners(cai_home)


@pytest.fixture(scope="module")
def tiny(tiny_spec, tmp_path_factory):
    """The tiny model, loaded once for this module's plain-function tests."""
    return load_model(tiny_spec, tmp_path_factory.mktemp("tiny-home"))


# -- chain of thought and the clamp --------------------------------------------------------


def alpha_beta(n: int = 1) -> list[dict]:
    return [make_pair(f"p{i}", "alpha answer", "beta answer") for i in range(n)]


def test_cot_probabilities_are_clamped_and_each_order_keeps_its_reasoning():
    judge = Judge(prefers("alpha answer", 0.99), think=lambda first, _: f"{first} reads better.")

    [row] = label(alpha_beta(), judge, cot=True)

    # Order AB: P(first) = 0.99 -> 0.6. Order BA: P(first) = 0.01 -> 0.4, so P(A) = 0.6.
    assert row["p_a_ab"] == pytest.approx(0.6)
    assert row["p_a_ba"] == pytest.approx(0.6)
    assert row["soft_label"] == pytest.approx(0.6)
    assert row["confidence"] == pytest.approx(0.2)
    assert (row["winner"], row["consistent"], row["mode"]) == ("A", True, "cot")
    assert row["flags"] == "clamped"
    # Each order's reasoning, stripped, in its own column; the tokens of both are counted.
    assert row["cot_ab"] == "alpha answer reads better."
    assert row["cot_ba"] == "beta answer reads better."
    assert row["cot_tokens"] == 14
    # The reasoning starts from the CoT prefill and is sampled as configured...
    [(asked, sampling)] = judge.chats
    assert [c[-1] for c in asked] == [turn("assistant", COT_PREFIX)] * 2
    assert sampling == config().cot_sampling and sampling.stop == [ANSWER_PREFIX]
    # ...then the options are read after it, in the same assistant turn.
    assert [p[-1]["content"] for p in judge.scored] == [
        f"{COT_PREFIX} alpha answer reads better.\n{ANSWER_PREFIX}",
        f"{COT_PREFIX} beta answer reads better.\n{ANSWER_PREFIX}",
    ]
    assert [p[:-1] for p in judge.scored] == [c[:-1] for c in asked]


def test_a_custom_clamp_sets_the_cot_bounds():
    judge = Judge(prefers("alpha answer", 0.99))
    [row] = label(alpha_beta(), judge, cot=True, clamp=(0.3, 0.9))
    assert row["p_a_ab"] == pytest.approx(0.9)
    assert row["p_a_ba"] == pytest.approx(0.7)  # P(first) = 0.01 -> 0.3, so P(A) = 0.7
    assert row["soft_label"] == pytest.approx(0.8)


def test_cot_probabilities_inside_the_clamp_are_kept():
    [row] = label(alpha_beta(), Judge(prefers("alpha answer", 0.55)), cot=True)
    assert row["p_a_ab"] == pytest.approx(0.55)
    assert row["p_a_ba"] == pytest.approx(0.55)


def test_logprob_mode_is_not_clamped_and_asks_for_no_reasoning():
    judge = Judge(prefers("alpha answer", 0.99))
    [row] = label(alpha_beta(), judge)
    assert row["p_a_ab"] == pytest.approx(0.99)
    assert row["p_a_ba"] == pytest.approx(0.99)
    assert (row["mode"], row["flags"], row["cot_tokens"]) == ("logprob", "", 0)
    assert judge.chats == []
    assert [p[-1] for p in judge.scored] == [turn("assistant", ANSWER_PREFIX)] * 2


def test_label_config_refuses_an_inverted_clamp():
    with pytest.raises(ValidationError, match=r"clamp must satisfy 0 <= low <= 0\.5 <= high <= 1, got \(0\.6, 0\.4\)"):  # fmt: skip
        config(clamp=(0.6, 0.4))
    with pytest.raises(JobConfigError, match=r"invalid label job config: clamp: .*got \(0\.6, 0\.4\)"):  # fmt: skip
        jobs.validate_config("label", {"pairs": "x", "constitution": "harmless", "clamp": [0.6, 0.4]})  # fmt: skip
    with pytest.raises(ValidationError, match="clamp must satisfy"):
        config(clamp=(0.55, 0.9))  # 0.5 must lie inside the bounds


# -- the question and its two orders -------------------------------------------------------


def test_the_swapped_order_reads_response_a_from_option_b():
    # Order AB (alpha first): P(first) = 0.7. Order BA (beta first): P(first) = 0.4, and the
    # first option there is response B, so P(A better) = 1 - 0.4 = 0.6.
    judge = Judge(lambda first, second: 0.7 if first == "alpha answer" else 0.4)
    [row] = label(alpha_beta(), judge)
    assert row["p_a_ab"] == pytest.approx(0.7)
    assert row["p_a_ba"] == pytest.approx(0.6)
    assert row["soft_label"] == pytest.approx(0.65)
    assert row["confidence"] == pytest.approx(0.3)
    assert (row["winner"], row["consistent"]) == ("A", True)
    ab, ba = (Judge.question(p) for p in judge.scored)
    assert ab.endswith("Options:\n(A) alpha answer\n(B) beta answer")
    assert ba.endswith("Options:\n(A) beta answer\n(B) alpha answer")
    assert ab.startswith("Consider the following conversation between a human and an assistant:")
    assert "Human: Question p0?" in ab and "Human: Question p0?" in ba


def test_a_label_row_records_its_pair_and_configuration():
    [row] = label(alpha_beta(), Judge(prefers("alpha answer")))
    assert row["job_id"] == "label-test"
    assert (row["pairs_job"], row["prompt_set"], row["prompt_id"], row["pair"]) == (
        "pairs-test", "red-team", "p0", 0
    )  # fmt: skip
    assert (row["constitution"], row["constitution_hash"]) == ("harmless", HARMLESS.hash)
    assert row["model"] == str(parse_spec(config().model))
    assert row["prompt_tokens"] > 0 and row["truncated_turns"] == 0
    assert row["principle_id"] in {p.id for p in HARMLESS.enabled_principles}


def test_identical_responses_are_a_tie_and_never_reach_the_model():
    judge = Judge(prefers("alpha answer"))
    pairs = [make_pair("same", "the same text", "  the same text\n"), *alpha_beta()]

    same, scored = label(pairs, judge)

    assert (same["p_a_ab"], same["p_a_ba"], same["soft_label"]) == (0.5, 0.5, 0.5)
    assert (same["winner"], same["confidence"], same["flags"]) == ("tie", 0.0, "identical")
    assert same["principle_id"]  # still drawn, for review strata
    # Only the other pair's two orders were scored.
    assert len(judge.scored) == 2
    assert all("the same text" not in Judge.question(p) for p in judge.scored)
    assert scored["winner"] == "A"

    only_identical = Judge(prefers("x"))
    [row] = label([make_pair("same", "x", "x")], only_identical, cot=True)
    assert only_identical.scored == [] and only_identical.chats == []
    assert row["flags"] == "identical"  # not "clamped": nothing was read from the model


def test_an_empty_response_is_flagged_and_still_scored():
    judge = Judge(prefers("a real answer", 0.9))
    [row] = label([make_pair("e", "a real answer", "   ")], judge)
    assert row["flags"] == "empty"
    assert row["soft_label"] == pytest.approx(0.9)
    assert len(judge.scored) == 2


def test_one_order_mode_scores_each_pair_once_and_has_no_consistency():
    judge = Judge(prefers("alpha answer", 0.7))
    rows = label(alpha_beta(3), judge, both_orders=False)
    assert len(judge.scored) == 3
    assert all(
        Judge.question(p).endswith("(A) alpha answer\n(B) beta answer") for p in judge.scored
    )
    for row in rows:
        assert row["p_a_ab"] == pytest.approx(0.7)
        assert row["p_a_ba"] is None and row["consistent"] is None
        assert row["soft_label"] == row["p_a_ab"]
        assert row["confidence"] == pytest.approx(0.4)


def test_the_principle_is_drawn_per_comparison_seeded_and_the_same_in_both_orders():
    pairs = [
        make_pair(f"p{i}", f"answer {i} one", f"answer {i} two", pair=i % 3) for i in range(24)
    ]
    judge = Judge(lambda first, second: 0.6)

    rows = label(pairs, judge, seed=7)

    pool = HARMLESS.enabled_principles
    questions = [Judge.question(p) for p in judge.scored]
    for i, (pair, row) in enumerate(zip(pairs, rows, strict=True)):
        drawn = draw_principle(pool, pair["prompt_id"], pair["pair"], 7)
        assert row["principle_id"] == drawn.id
        ab, ba = questions[2 * i], questions[2 * i + 1]
        assert drawn.preference_question in ab and drawn.preference_question in ba
        # The question differs between the orders only in the options.
        assert ab.split("\nOptions:\n")[0] == ba.split("\nOptions:\n")[0]
    assert len({r["principle_id"] for r in rows}) >= 4  # different pairs, different principles
    # The same seed draws the same principles; another seed draws others.
    again = [r["principle_id"] for r in label(pairs, Judge(lambda f, s: 0.6), seed=7)]
    other = [r["principle_id"] for r in label(pairs, Judge(lambda f, s: 0.6), seed=8)]
    assert again == [r["principle_id"] for r in rows]
    assert sum(a != b for a, b in zip(again, other, strict=True)) >= 6


def test_a_fixed_principle_is_asked_for_every_comparison():
    judge = Judge(lambda first, second: 0.6)
    rows = label(alpha_beta(5), judge, principle="privacy")
    assert {r["principle_id"] for r in rows} == {"privacy"}
    question = HARMLESS.principle("privacy").preference_question
    assert all(question in Judge.question(p) for p in judge.scored)


def test_few_shot_comparisons_come_first_as_user_and_assistant_turns():
    judge = Judge(prefers("alpha answer"))
    [row] = label(alpha_beta(), judge, few_shots=2)

    shots = select_comparison_shots(HARMLESS.comparison_few_shots, 2)
    prefix = [t for block in comparison_turns(shots, HARMLESS, cot=False) for t in block]
    assert [t["role"] for t in prefix] == ["user", "assistant", "user", "assistant"]
    assert [prefix[1]["content"], prefix[3]["content"]] == [
        f"{ANSWER_PREFIX} ({shots[0].preferred})",
        f"{ANSWER_PREFIX} ({shots[1].preferred})",
    ]
    assert {s.preferred for s in shots} == {"A", "B"}
    first = shots[0]
    assert options_of(prefix[0]["content"]) == (first.response_a, first.response_b)
    assert first.conversation[0].content in prefix[0]["content"]
    assert HARMLESS.principle(first.principle).preference_question in prefix[0]["content"]
    for prompt in judge.scored:  # both orders
        assert prompt[:4] == prefix
        assert len(prompt) == 6 and prompt[4]["role"] == "user"
        assert prompt[5] == turn("assistant", ANSWER_PREFIX)
    assert row["few_shots"] == 2


def test_a_label_records_the_few_shots_it_was_actually_shown():
    judge = Judge(prefers("alpha answer"))
    [row] = label(alpha_beta(), judge, few_shots=8)
    assert len(HARMLESS.comparison_few_shots) == 5
    assert len(judge.scored[0]) == 2 * 5 + 2  # five comparisons were prepended...
    assert row["few_shots"] == 5  # ...and the row should say so


def test_cot_few_shots_reason_before_they_answer():
    shot = HARMLESS.comparison_few_shots[0]
    assert shot.reasoning
    [[_, plain]] = comparison_turns([shot], HARMLESS, cot=False)
    [[_, cot]] = comparison_turns([shot], HARMLESS, cot=True)
    assert plain["content"] == f"{ANSWER_PREFIX} ({shot.preferred})"
    assert cot["content"] == f"{COT_PREFIX} {shot.reasoning}\n{ANSWER_PREFIX} ({shot.preferred})"


# -- position bias -------------------------------------------------------------------------


def test_a_judge_that_always_picks_the_first_option_is_caught_as_position_biased():
    judge = Judge(lambda first, second: 0.9)  # reads nothing but the position
    pairs = [make_pair(f"p{i}", f"answer {i} one", f"answer {i} two") for i in range(10)]

    rows = label(pairs, judge)

    for row in rows:
        assert row["p_a_ab"] == pytest.approx(0.9) and row["p_a_ba"] == pytest.approx(0.1)
        assert row["consistent"] is False
        assert row["soft_label"] == pytest.approx(0.5)
    result = agreement(rows, [])
    assert result.consistency_rate == 0.0
    assert result.first_position_rate == 1.0
    assert result.position_bias is True


def test_a_judge_that_prefers_one_response_is_consistent_and_not_position_biased():
    # The better response is A in even pairs and B in odd ones.
    pairs = [
        make_pair(f"p{i}", *(("good", f"bad {i}") if i % 2 == 0 else (f"bad {i}", "good")))
        for i in range(10)
    ]
    rows = label(pairs, Judge(prefers("good", 0.8)))

    assert all(r["consistent"] is True for r in rows)
    assert [r["winner"] for r in rows] == ["A", "B"] * 5
    assert all(
        r["soft_label"] == pytest.approx(0.8 if i % 2 == 0 else 0.2) for i, r in enumerate(rows)
    )
    result = agreement(rows, [])
    assert result.consistency_rate == 1.0
    assert result.first_position_rate == 0.5
    assert result.position_bias is False


# -- fitting the context -------------------------------------------------------------------


def long_conversation(turns: int = 7, size: int = 400) -> list[dict]:
    roles = ["user", "assistant"]
    return [turn(roles[i % 2], f"<turn {i}>" + "word " * (size // 5)) for i in range(turns)]


def test_a_long_conversation_loses_middle_turns_and_keeps_the_options():
    conversation = long_conversation()  # 7 turns of about 400 characters: about 700 tokens
    judge = Judge(prefers("alpha answer"), context=400)
    long_pair = make_pair("long", "alpha answer", "beta answer", messages=conversation)
    short_pair = make_pair("short", "alpha answer", "beta answer")

    long_row, short_row = label([long_pair, short_pair], judge)

    assert long_row["truncated_turns"] > 0
    assert long_row["flags"] == "truncated"
    assert long_row["soft_label"] == pytest.approx(0.8)
    assert (short_row["truncated_turns"], short_row["flags"]) == (0, "")
    n = long_row["truncated_turns"]
    for prompt in judge.scored[:2]:
        question = Judge.question(prompt)
        assert judge.count_tokens(prompt[:-1]) + 16 <= 400  # fits with the reserve
        assert question.endswith(("(A) alpha answer\n(B) beta answer", "(A) beta answer\n(B) alpha answer"))  # fmt: skip
        assert f"Human: {conversation[0]['content']}" in question  # the first turn...
        assert f"Human: {conversation[-1]['content']}" in question  # ...and the last are kept
        assert OMITTED.format(n=n) in question
        kept = [t for t in conversation if t["content"] in question]
        assert len(kept) == len(conversation) - n


def test_options_that_cannot_fit_overflow_and_are_not_scored():
    judge = Judge(prefers("alpha answer"), context=300)
    huge = make_pair("huge", "alpha " * 400, "beta answer")
    rows = label([huge, *alpha_beta()], judge)

    overflow, fine = rows
    assert overflow["flags"] == "overflow"
    assert overflow["soft_label"] is None and overflow["winner"] is None
    assert overflow["p_a_ab"] is None and overflow["p_a_ba"] is None
    assert overflow["consistent"] is None and overflow["principle_id"] == ""
    assert fine["soft_label"] == pytest.approx(0.8)
    assert len(judge.scored) == 2  # only the pair that fits
    assert all("alpha alpha" not in Judge.question(p) for p in judge.scored)


def test_a_single_long_turn_is_cut_in_the_middle_to_fit():
    text = " ".join(f"w{i}" for i in range(1500))  # about 7400 characters
    judge = Judge(prefers("alpha answer"), context=600)
    [row] = label([make_pair("one", "alpha answer", "beta answer", messages=[turn("user", text)])], judge)  # fmt: skip
    assert (row["flags"], row["truncated_turns"]) == ("truncated", 0)
    assert row["soft_label"] == pytest.approx(0.8)
    for prompt in judge.scored:
        question = Judge.question(prompt)
        assert judge.count_tokens(prompt[:-1]) + 16 <= 600
        assert f"Human: {text[:300]}" in question and text[-300:] in question
        assert "characters left out to fit the context" in question


def test_a_long_turn_behind_many_few_shots_is_cut_to_fit_rather_than_overflowing():
    def pair(text):
        return make_pair("long", "alpha answer", "beta answer", messages=[turn("user", text)])

    # With the turn cut to nothing, the five few-shots and the question take about 800 of
    # the 1024 tokens (16 reserved): about 200 tokens (800 characters) are left for the turn.
    probe = Judge(prefers("alpha answer"))
    label([pair("x")], probe, few_shots=5)
    assert probe.count_tokens(probe.scored[0][:-1]) + 16 + 150 <= 1024

    judge = Judge(prefers("alpha answer"), context=1024)
    [row] = label([pair("word " * 800)], judge, few_shots=5)  # 4000 characters

    assert row["flags"] == "truncated"
    assert row["soft_label"] == pytest.approx(0.8)
    assert all(judge.count_tokens(p[:-1]) + 16 <= 1024 for p in judge.scored)


# -- exact choice scoring on the tiny model ------------------------------------------------


def flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


def scoring_prompts() -> list:
    return [
        [turn("user", "Which is better?"), turn("assistant", ANSWER_PREFIX)],
        [
            turn("user", "Tell me about locks. " * 12),
            turn("assistant", "Locks are mechanical."),
            turn("user", "Which response is more honest?\nOptions:\n(A) yes\n(B) no"),
            turn("assistant", f"{COT_PREFIX} both are short.\n{ANSWER_PREFIX}"),
        ],
        [turn("user", "Pick one.")],  # ends with the user: scored after the generation prompt
        "A plain text prompt, The answer is:",
        [turn("user", "Which is better?"), turn("assistant", ANSWER_PREFIX)],  # a duplicate row
    ]


@pytest.mark.parametrize(
    "choices",
    [[" (A)", " (B)"], [" (Alpha)", " (Bravo team)", " no"], [" maybe"]],
    ids=["letters", "unequal-lengths", "one-choice"],
)
def test_score_choices_equals_scoring_each_choice_alone(tiny, choices):
    prompts = scoring_prompts()
    # Mixed lengths, prefills, a plain text prompt and a conversation ending with the user.
    assert len({len(tiny._prompt_ids(p)) for p in prompts}) >= 4
    lengths = {len(tiny.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in choices}
    assert len(choices) == 1 or len(lengths) > 1 or choices == [" (A)", " (B)"]

    fast = tiny.score_choices(prompts, choices)

    alone = [[tiny.score([p], [c])[0] for c in choices] for p in prompts]
    assert len(fast) == len(prompts) and all(len(row) == len(choices) for row in fast)
    for got, want in zip(fast, alone, strict=True):
        assert got == pytest.approx(want, abs=1e-3)


def test_score_choices_shares_a_common_prompt_prefix_exactly(tiny):
    # Conversations share the chat template's system prompt: the prefix is prefilled once.
    prompts = [p for p in scoring_prompts() if not isinstance(p, str)]
    assert common_prefix([tiny.render(p) for p in prompts]) >= MIN_SHARED_PREFIX
    choices = [" (A)", " (Bravo team)"]
    fast = tiny.score_choices(prompts, choices)
    alone = [[tiny.score([p], [c])[0] for c in choices] for p in prompts]
    assert flat(fast) == pytest.approx(flat(alone), abs=1e-3)


def both_orders(pairs: int = 3) -> list:
    """Label-style prompts: the same labelled comparison first, then per pair a question
    (a conversation of its own length) asked with the two responses in both orders."""
    shot = [
        turn("user", "Which is kinder?\nOptions:\n(A) Sure.\n(B) No. " * 6),
        turn("assistant", f"{ANSWER_PREFIX} (A)"),
    ]
    out = []
    for i in range(pairs):
        a, b = f"Answer one, {'short ' * i}.", f"A second answer {'much longer ' * (2 * i + 1)}."
        for first, second in ((a, b), (b, a)):
            topic = ("locks", "bridges", "tea")[i]
            question = (
                f"{f'Tell me about {topic}. ' * (3 + 4 * i)}\nOptions:\n(A) {first}\n(B) {second}"
            )
            out.append([*shot, turn("user", question), turn("assistant", ANSWER_PREFIX)])
    return out


@pytest.mark.parametrize(
    "choices", [[" (A)", " (B)"], [" (Alpha)", " (Bravo team)"]], ids=["letters", "unequal"]
)
def test_a_pairs_two_orders_share_their_question_once_and_score_exactly(tiny, choices, monkeypatch):
    """A pair's two orders share the conversation and the question; only the options differ.
    That part is computed once per pair (one row per pair in the first prefill), and every
    order scores as it does alone. The odd prompt out (no partner) is scored in the batch."""
    from cai_engine.models import decode as decoding

    prompts = both_orders() + [[turn("user", "Pick one."), turn("assistant", ANSWER_PREFIX)]]
    rows = [tiny._prompt_ids(p) for p in prompts]
    every = common_prefix(rows)
    assert all(common_prefix(rows[i : i + 2]) >= every + 3 * MIN_SHARED_PREFIX for i in (0, 2, 4))
    widths = []
    real_prefill = decoding.prefill

    def spy(model, batch, *args, **kwargs):
        widths.append(len(batch))
        return real_prefill(model, batch, *args, **kwargs)

    monkeypatch.setattr(decoding, "prefill", spy)
    fast = tiny.score_choices(prompts, choices)
    assert widths == [4]  # 3 pairs' shared parts + the lone prompt, then only the tails

    monkeypatch.setattr(decoding, "prefill", real_prefill)
    alone = [[tiny.score([p], [c])[0] for c in choices] for p in prompts]
    assert flat(fast) == pytest.approx(flat(alone), abs=1e-3)


def test_score_choices_in_small_batches_equals_one_big_batch(tiny_model_dir, tiny, tmp_path):
    small = load_model(f"hf:{tiny_model_dir}?dtype=float32&batch_size=2", tmp_path)
    choices = [" (Alpha)", " (Bravo team)"]
    assert flat(small.score_choices(scoring_prompts(), choices)) == pytest.approx(
        flat(tiny.score_choices(scoring_prompts(), choices)), abs=1e-3
    )


def test_the_default_score_choices_scores_every_prompt_choice_with_score(tiny):
    class ByLength(ChatModel):
        """score(p, c) = len(str(p)) + len(c) / 100; records each call."""

        def __init__(self):
            self.calls = []

        def chat(self, conversations, sampling=None, **kw):
            raise AssertionError("not used")

        def score(self, prompts, continuations):
            self.calls.append((list(prompts), list(continuations)))
            return [len(str(p)) + len(c) / 100 for p, c in zip(prompts, continuations, strict=True)]

        def info(self):
            return ModelInfo(spec="by-length", backend="test")

    model = ByLength()
    prompts = ["ab", [turn("user", "x")], "abcd"]
    choices = [" (A)", " (Bee)", " c"]
    got = model.score_choices(prompts, choices)
    assert got == [[len(str(p)) + len(c) / 100 for c in choices] for p in prompts]
    assert len(model.calls) == 1  # one batched call
    # On the real tiny model the base-class default agrees with the fast override.
    base = ChatModel.score_choices(tiny, scoring_prompts(), choices)
    assert [len(row) for row in base] == [3] * len(scoring_prompts())
    assert flat(base) == pytest.approx(
        flat(tiny.score_choices(scoring_prompts(), choices)), abs=1e-3
    )


def test_render_continues_a_final_assistant_turn(tiny):
    prefill = [turn("user", "Which is better?"), turn("assistant", ANSWER_PREFIX)]
    text = tiny.tokenizer.decode(tiny.render(prefill))
    assert text.endswith(f"<|im_start|>assistant\n{ANSWER_PREFIX}")
    assert text.count("<|im_start|>assistant") == 1  # no new generation prompt after it
    asked = tiny.tokenizer.decode(tiny.render(prefill[:1]))
    assert asked.endswith("<|im_start|>assistant\n")
    assert text == asked + ANSWER_PREFIX


# -- the jobs ------------------------------------------------------------------------------


def test_a_label_job_labels_every_pair_with_the_pinned_constitution(pairs_job, tiny_spec):
    store, pairs = pairs_job
    version = store.get_version("harmless")
    job = submit_labels(
        store,
        {"pairs": pairs.id, "constitution": "harmless", "model": tiny_spec, "few_shots": 0}
        | {"judge_check": False},  # the check before the labels is test_judge_check's
    )
    assert job.config["constitution"] == f"harmless@{version.hash[:12]}"
    job = finish(store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error

    rows = store.labels(job.id)
    assert sorted(map(label_key, rows)) == sorted(map(label_key, store.pairs(pairs.id)))
    for r in rows:
        assert (r["job_id"], r["pairs_job"]) == (job.id, pairs.id)
        assert (r["constitution"], r["constitution_hash"]) == ("harmless", version.hash)
        assert r["model"] == str(parse_spec(tiny_spec)) and r["mode"] == "logprob"
        assert r["principle_id"] in {p.id for p in version.constitution.enabled_principles}
        if "identical" in r["flags"]:
            assert r["soft_label"] == 0.5
            continue
        assert 0.0 <= r["p_a_ab"] <= 1.0 and 0.0 <= r["p_a_ba"] <= 1.0
        assert r["soft_label"] == pytest.approx((r["p_a_ab"] + r["p_a_ba"]) / 2, abs=1e-12)
        assert r["confidence"] == pytest.approx(abs(r["soft_label"] - 0.5) * 2, abs=1e-12)
        assert r["prompt_tokens"] > 0
        # A random model's two options are never exactly as likely.
        assert r["p_a_ab"] != 0.5 and r["winner"] in ("A", "B")
    assert (job.live["done"], job.live["total"], job.unit) == (36, 36, "pairs")
    # its tokens are those it scored: every question, in both orders (no reasoning here)
    assert job.tokens == sum(r["prompt_tokens"] + r["cot_tokens"] for r in rows) > 0


@pytest.mark.parametrize(
    "source_kind, change, error, message",
    [
        ("critique", {}, CaiError, r"job critique-00000000-000000-test is a critique job; --pairs needs a pairs job"),
        ("pairs", {"constitution": "nope"}, CaiError, r"no constitution named 'nope'; known: default, harmless"),
        ("pairs", {"principle": "kindness"}, CaiError, r"principle 'kindness' is not in constitution 'harmless'"),
        ("pairs", {"pairs": "pairs-missing"}, CaiError, r"no job 'pairs-missing'"),
        ("pairs", {"clamp": [0.7, 0.9]}, JobConfigError, r"invalid label job config: clamp:"),
    ],
)  # fmt: skip
def test_submit_labels_refuses_a_bad_job_before_any_process_starts(
    seeded_store, cai_home, source_kind, change, error, message
):
    source = insert_job(seeded_store, source_kind)
    before = len(seeded_store.job_rows())
    with pytest.raises(error, match=message):
        submit_labels(seeded_store, {"pairs": source, "constitution": "harmless", **change})
    assert len(seeded_store.job_rows()) == before
    assert not runs_dir(cai_home).exists() or not any(runs_dir(cai_home).iterdir())
    assert runner_pids(cai_home) == []


def test_a_killed_label_job_resumes_with_one_label_per_pair(pairs_job, tiny_spec, tiny):
    store, pairs_source = pairs_job
    settings = {"pairs": pairs_source.id, "constitution": "harmless", "model": tiny_spec}
    settings |= {"few_shots": 0, "batch_pairs": 4, "judge_check": False}
    job = submit_labels(store, settings)
    shards = job.run.path / "shards" / "labels"
    wait_until(lambda: shards.exists() and job.run.shards("labels"), "a labels shard", timeout=60)
    pid = jobs.get_job(store, job.id).pid
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), "the killed runner to die", timeout=10)

    assert job.id in jobs.reconcile(store)
    job = jobs.get_job(store, job.id)
    assert job.status == "interrupted", job.error
    kept = {label_key(r) for r in store.labels(job.id)}
    assert 4 <= len(kept) < 36, "the kill did not land mid-run"

    jobs.resume(store, job.id)
    job = finish(store, job.id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2

    rows = store.labels(job.id)
    pairs = store.pairs(pairs_source.id)
    assert len(rows) == len(pairs) == 36  # no duplicates...
    assert {label_key(r) for r in rows} == {label_key(p) for p in pairs}  # ...and no gaps
    assert kept <= {label_key(r) for r in rows}
    # Nothing was scored twice: the shards of both attempts hold each pair exactly once.
    written = Counter(label_key(r) for r in job.run.read_shard_rows("labels"))
    assert max(written.values()) == 1 and len(written) == 36
    assert (job.live["done"], job.live["total"]) == (36, 36)

    # The same labels as one uninterrupted run of the same configuration.
    version = store.get_version(job.config["constitution"])
    clean = label_pairs(pairs, version.constitution, version.hash, tiny, LabelConfig(**job.config))
    by_key = {label_key(r): r for r in rows}
    assert set(by_key) == {label_key(r) for r in clean}
    for want in clean:
        got = by_key[label_key(want)]
        assert got["principle_id"] == want["principle_id"]
        assert got["soft_label"] == pytest.approx(want["soft_label"], abs=1e-6)
        assert got["p_a_ab"] == pytest.approx(want["p_a_ab"], abs=1e-6)
        assert got["winner"] == want["winner"] or abs(want["soft_label"] - 0.5) < 1e-6


def test_a_label_job_reads_its_pairs_a_page_at_a_time_and_labels_the_first_limit(
    pairs_job, tiny_spec, tiny
):
    store, pairs_source = pairs_job
    # 10 of the 36 pairs in batches (and pages) of 4: 4 + 4 + 2
    settings = {"pairs": pairs_source.id, "constitution": "harmless", "model": tiny_spec}
    settings |= {"few_shots": 0, "batch_pairs": 4, "limit": 10, "judge_check": False}
    job = finish(store, submit_labels(store, settings).id, timeout=DEADLINE)
    assert job.status == "succeeded", job.error

    first = store.pairs(pairs_source.id)[:10]
    rows = store.labels(job.id)
    assert [label_key(r) for r in rows] == [label_key(p) for p in first]
    version = store.get_version(job.config["constitution"])
    clean = label_pairs(first, version.constitution, version.hash, tiny, LabelConfig(**job.config))
    for got, want in zip(rows, clean, strict=True):
        assert got["soft_label"] == pytest.approx(want["soft_label"], abs=1e-6)
    assert len(job.run.shards("labels")) == 3  # a scored batch is a shard
    assert (job.live["done"], job.live["total"]) == (10, 10)
    # the job's summary, counted over its shards: as the rows say
    (metric,) = [m for m in job.run.metrics() if "labels" in m]
    scored = [r for r in rows if r["soft_label"] is not None]
    both = [r for r in scored if r["consistent"] is not None and "identical" not in r["flags"]]
    assert metric["labels"] == 10 and scored and both
    assert metric["mean_confidence"] == pytest.approx(
        sum(r["confidence"] for r in scored) / len(scored)
    )
    assert metric["consistency"] == pytest.approx(sum(r["consistent"] for r in both) / len(both))


# -- an OpenAI-compatible server -----------------------------------------------------------


@pytest.fixture
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


def test_labels_through_an_openai_server_score_the_options_after_a_prefill(fake):
    """The fake server renders messages as `<r>content</r>` and ignores
    `continue_final_message` (it always appends the generation prompt `<a>`), so it cannot
    show a prefill being continued; what it shows is that the backend asks for one and
    scores the options' token ids, echoed, after the rendered question."""
    model = load_model(fake.spec(retries=0))
    pairs = [make_pair("p0", "alpha answer", "beta answer")]

    [row] = label_pairs(pairs, HARMLESS, HARMLESS.hash, model, config(model=fake.spec(retries=0)))

    # Echoed token i has logprob -i/1000 and the fake tokenizes by character, so
    # " (A)" = -(32 + 40 + 65 + 41) / 1000 = -0.178 and " (B)" = -0.179: P(first) = sigmoid(0.001).
    p_first = 1 / (1 + math.exp(-0.001))
    assert row["p_a_ab"] == pytest.approx(p_first, abs=1e-9)
    assert row["p_a_ba"] == pytest.approx(1 - p_first, abs=1e-9)
    assert row["consistent"] is False  # the fake always leans to the first option
    assert row["soft_label"] == pytest.approx(0.5, abs=1e-9)

    asked = [r["body"] for r in fake.seen("/tokenize") if "messages" in r["body"]]
    assert len(asked) == 4  # two orders x two options, each conversation tokenized
    for body in asked:
        assert body["messages"][-1] == turn("assistant", ANSWER_PREFIX)
        assert (body["add_generation_prompt"], body["continue_final_message"]) == (False, True)
    orders = {options_of(b["messages"][-2]["content"]) for b in asked}
    assert orders == {("alpha answer", "beta answer"), ("beta answer", "alpha answer")}
    echoed = [r["body"] for r in fake.seen("/v1/completions")]
    assert len(echoed) == 4 and all(b["echo"] is True for b in echoed)
    rendered = {tuple(ord(c) for c in render_messages(b["messages"])) for b in asked}
    tails = Counter()
    for body in echoed:
        prompt = body["prompt"]
        head, tail = tuple(prompt[:-4]), prompt[-4:]
        assert head in rendered
        tails["".join(map(chr, tail))] += 1
    assert tails == {" (A)": 2, " (B)": 2}


def test_labels_come_back_in_the_order_of_the_pairs_even_with_ties_among_them():
    pairs = [
        make_pair("p1", "alpha answer", "beta answer"),
        make_pair("p2", "same", "same"),  # identical: a tie, never sent to the model
        make_pair("p3", "beta answer", "alpha answer"),
    ]
    rows = label(pairs, Judge(prefers("alpha answer")), batch_pairs=8)
    assert [r["prompt_id"] for r in rows] == ["p1", "p2", "p3"]
    assert [r["winner"] for r in rows] == ["A", "tie", "B"]
