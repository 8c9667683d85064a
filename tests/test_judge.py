"""The feedback question's maths (`judge`): soft labels, combining the two orders, the clamp,
few-shot selection, and fitting a long conversation into the context."""

from __future__ import annotations

import math

import pytest

from cai_engine.constitution import ComparisonFewShot
from cai_engine.judge import (
    OMITTED,
    clamp,
    combine,
    fit_conversation,
    select_comparison_shots,
    soft_label,
)
from tests.test_labels import long_conversation, turn


def test_soft_label_is_the_softmax_of_the_two_logprobs():
    assert soft_label(math.log(0.8), math.log(0.2)) == pytest.approx(0.8, abs=1e-12)
    assert soft_label(math.log(0.2), math.log(0.8)) == pytest.approx(0.2, abs=1e-12)
    # Unnormalised: only the two options' share counts (0.03 vs 0.01 -> 3/4).
    assert soft_label(math.log(0.03), math.log(0.01)) == pytest.approx(0.75, abs=1e-12)
    assert soft_label(-3.7, -3.7) == 0.5
    assert soft_label(0.0, 0.0) == 0.5


def test_soft_label_is_finite_at_huge_logprob_differences():
    assert soft_label(1000.0, -1000.0) == 1.0
    assert soft_label(-1000.0, 1000.0) == 0.0
    assert soft_label(0.0, -1000.0) == 1.0
    assert soft_label(-1000.0, 0.0) == 0.0
    # Far from zero, with a moderate difference: sigmoid(1), not 0/0.
    assert soft_label(-1000.0, -1001.0) == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-12)
    assert soft_label(1001.0, 1000.0) == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-12)


@pytest.mark.parametrize("shift", [-800.0, -35.5, 0.0, 12.25, 900.0])
def test_soft_label_ignores_a_constant_added_to_both_logprobs(shift):
    for a, b in [(-1.2, -0.4), (-7.0, -9.5), (-2.0, -2.0)]:
        assert soft_label(a + shift, b + shift) == pytest.approx(soft_label(a, b), abs=1e-9)


@pytest.mark.parametrize(
    "p_ab, p_ba, soft, winner, consistent",
    [
        (0.8, 0.6, 0.7, "A", True),  # both orders prefer A
        (0.2, 0.3, 0.25, "B", True),  # both prefer B
        (0.8, 0.3, 0.55, "A", False),  # the orders disagree; the average still picks A
        (0.4, 0.9, 0.65, "A", False),
        (0.75, 0.25, 0.5, "tie", False),  # disagreement that cancels out
        (0.5, 0.9, 0.7, "A", False),  # an order at exactly 0.5 prefers neither
        (0.9, 0.5, 0.7, "A", False),
        (0.5, 0.5, 0.5, "tie", False),
        (0.7, None, 0.7, "A", None),  # one order: no consistency to check
        (0.3, None, 0.3, "B", None),
        (0.5, None, 0.5, "tie", None),
    ],
)
def test_combine_averages_the_orders_and_checks_they_agree(p_ab, p_ba, soft, winner, consistent):
    c = combine(p_ab, p_ba)
    assert c.soft_label == pytest.approx(soft, abs=1e-12)
    assert c.winner == winner
    assert c.consistent is consistent
    assert c.confidence == pytest.approx(abs(soft - 0.5) * 2, abs=1e-12)


def test_clamp_bounds_a_probability():
    assert [clamp(p, (0.4, 0.6)) for p in (0.0, 0.39, 0.4, 0.5, 0.6, 0.61, 1.0)] == [
        0.4, 0.4, 0.4, 0.5, 0.6, 0.6, 0.6
    ]  # fmt: skip


def comparison(name: str, preferred: str) -> ComparisonFewShot:
    return ComparisonFewShot(
        conversation=[{"role": "user", "content": f"question {name}"}],
        response_a=f"{name} a",
        response_b=f"{name} b",
        preferred=preferred,
    )


def test_select_comparison_shots_balances_the_letters():
    bank = [
        comparison("s1", "A"),
        comparison("s2", "A"),
        comparison("s3", "A"),
        comparison("s4", "B"),
    ]
    names = lambda shots: [s.response_a.split()[0] for s in shots]  # noqa: E731

    assert select_comparison_shots(bank, 0) == []
    assert select_comparison_shots([], 2) == []
    assert names(select_comparison_shots(bank, 1)) == ["s1"]  # one shot cannot show both
    assert names(select_comparison_shots(bank, 2)) == ["s1", "s4"]
    assert names(select_comparison_shots(bank, 3)) == ["s1", "s2", "s4"]
    assert names(select_comparison_shots(bank, 9)) == ["s1", "s2", "s3", "s4"]
    mixed = [comparison("m1", "B"), comparison("m2", "A"), comparison("m3", "B")]
    assert names(select_comparison_shots(mixed, 2)) == ["m1", "m2"]  # already balanced
    same = [comparison("o1", "B"), comparison("o2", "B"), comparison("o3", "B")]
    assert names(select_comparison_shots(same, 2)) == ["o1", "o2"]  # nothing to swap in


def chars(limit: int):
    """A budget of `limit` characters over all the turns' contents."""
    return lambda msgs: limit - sum(len(m["content"]) for m in msgs)


def test_fit_conversation_leaves_a_fitting_conversation_alone():
    conversation = long_conversation(5, 100)
    assert fit_conversation(conversation, chars(10_000)) == (conversation, 0)


def test_fit_conversation_drops_middle_turns_keeping_the_first_and_last():
    conversation = [turn("user" if i % 2 == 0 else "assistant", f"{i}" * 100) for i in range(5)]
    fitted, dropped = fit_conversation(conversation, chars(250))
    # After dropping 3 turns: 100 + the marker (47) + 100 = 247 <= 250; 2 would be 347.
    assert dropped == 3
    assert fitted == [conversation[0], turn("system", OMITTED.format(n=3)), conversation[-1]]
    assert conversation[1]["content"] == "1" * 100  # the input is not modified


def test_fit_conversation_cuts_the_middle_of_a_long_turn():
    text = "".join(f"{i:04d}" for i in range(500))  # 2000 characters
    conversation = [turn("user", text)]
    fitted, dropped = fit_conversation(conversation, chars(600))
    assert dropped == 0
    [cut] = fitted
    assert len(cut["content"]) <= 600
    assert cut["content"].startswith(text[:200]) and cut["content"].endswith(text[-200:])
    assert "characters left out to fit the context" in cut["content"]


def test_fit_conversation_cuts_both_kept_turns_when_one_is_not_enough():
    conversation = [turn("user", "a" * 1000), turn("assistant", "b" * 1000), turn("user", "c" * 1000)]  # fmt: skip
    fitted, dropped = fit_conversation(conversation, chars(600))
    assert dropped == 1
    assert sum(len(m["content"]) for m in fitted) <= 600
    assert fitted[0]["content"].startswith("a" * 50) and fitted[-1]["content"].endswith("c" * 50)


def test_fit_conversation_cuts_a_long_turn_that_starts_with_a_bracket():
    text = "[1, 2, 3] " + "".join(f"{i:04d}" for i in range(500))
    fitted, _ = fit_conversation([turn("user", text)], chars(600))
    assert len(fitted[0]["content"]) <= 600
    assert fitted[0]["content"].startswith("[1, 2, 3] ")


def test_fit_conversation_raises_when_nothing_can_be_cut_enough():
    with pytest.raises(OverflowError, match="the options alone do not fit"):
        fit_conversation(long_conversation(3, 100), lambda msgs: -1)
