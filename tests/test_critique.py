"""SL-CAI critique: principle draws, few-shots, the growing conversation, the plain
`critique()` function on a tiny real model, the job (submit, kill, resume) and the CLI.

The tiny model is a random-weight Llama with SmolLM2's real tokenizer and chat template, so
its text is gibberish but every token count and template is real. Where a test needs text
with a meaning ("No changes are needed."), a `ScriptedModel` stands in for the model: it is
a test double for deterministic text, not a fake of anything across a network.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter

import pytest

from cai_engine import critique, jobs
from cai_engine.cli import main
from cai_engine.constitution import Constitution, FewShot, Principle, load_constitution
from cai_engine.critique import (
    CritiqueConfig,
    check_constitution,
    conversation_for,
    draw_principles,
    few_shot_turns,
    says_no_change,
    select_few_shots,
    step_of,
)
from cai_engine.errors import CaiError
from cai_engine.home import BUNDLED_CONSTITUTIONS, runs_dir
from cai_engine.jobs import JobConfigError
from cai_engine.models import Completion, ModelInfo, load_model, parse_spec
from cai_engine.prompts import Prompt
from tests.runners import alive, kill_runners, runner_pids, wait_until

DEADLINE = 90.0  # seconds any one wait on a job may take before the test fails
HARMLESS = load_constitution(BUNDLED_CONSTITUTIONS / "harmless.yaml")
STEP_ORDER = [(0, "initial"), (1, "critique"), (1, "revision"), (2, "critique"), (2, "revision")]


# -- helpers (the runner-reaping pattern of test_jobs.py) ----------------------------------


def finish(store, job_id: str, timeout: float = DEADLINE) -> jobs.Job:
    job = jobs.wait(store, job_id, timeout=timeout, poll=0.2)
    assert job.status not in jobs.ACTIVE, f"{job_id} still {job.status} after {timeout:.0f}s"
    return job


@pytest.fixture(autouse=True)
def reap_runners(cai_home):
    """No job process started by a test outlives it, whether the test passed or not."""
    yield
    kill_runners(cai_home)


def key(row) -> tuple:
    return (row["prompt_id"], row["sample"], row["round"], row["step"])


def grid(prompt_ids, rounds: int, samples: int = 1) -> set[tuple]:
    """Every (prompt, sample, round, step) key a finished job has."""
    steps = [(0, "initial")] + [
        (r, s) for r in range(1, rounds + 1) for s in ("critique", "revision")
    ]
    return {(p, k, r, s) for p in prompt_ids for k in range(samples) for r, s in steps}


def per_trace(rows) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault((r["prompt_id"], r["sample"]), []).append(r)
    return out


def principle(pid: str, weight: float = 1.0, enabled: bool = True) -> Principle:
    return Principle(
        id=pid,
        title=pid,
        critique_request=f"Critique under {pid}.",
        revision_request=f"Revise under {pid}.",
        preference_question=f"Which is better under {pid}?",
        weight=weight,
        enabled=enabled,
    )


def shot(answer: str, revision: str, principle_id: str | None = None) -> FewShot:
    return FewShot(
        principle=principle_id,
        conversation=[
            {"role": "user", "content": f"question for {answer}"},
            {"role": "assistant", "content": answer},
        ],
        critique=f"critique of {answer}",
        revision=revision,
    )


def prompts(*texts: str) -> list[Prompt]:
    return [Prompt(f"p{i}", [{"role": "user", "content": t}]) for i, t in enumerate(texts)]


class ScriptedModel:
    """A model double whose text comes from `reply(conversation)`; it records every call."""

    context_length = None  # unknown: no few-shot is dropped to fit

    def __init__(self, reply):
        self.reply = reply
        self.calls: list[list[list[dict]]] = []

    def chat(self, conversations, sampling=None, *, should_stop=None, on_batch=None):
        self.calls.append(conversations)
        out = [Completion(self.reply(c), len(c), 3, "stop", 0.01) for c in conversations]
        if on_batch:
            on_batch(list(range(len(out))), out)
        return out

    def count_tokens(self, conversation) -> int:
        return sum(len(m["content"].split()) for m in conversation)  # one token a word

    def info(self) -> ModelInfo:
        return ModelInfo(spec="scripted", backend="test")


class Counting:
    """A model seen through a window: every `chat` call's conversations land in `calls`."""

    def __init__(self, model):
        self.model = model
        self.calls: list[list[list[dict]]] = []

    def chat(self, conversations, *args, **kwargs):
        self.calls.append(conversations)
        return self.model.chat(conversations, *args, **kwargs)

    def __getattr__(self, name):  # context_length, count_tokens, info
        return getattr(self.model, name)


@pytest.fixture(scope="module")
def tiny(tiny_spec, tmp_path_factory):
    """The tiny model, loaded once for this module's plain-function tests."""
    return load_model(tiny_spec, tmp_path_factory.mktemp("tiny-home"))


# -- principle sampling --------------------------------------------------------------------


def test_the_same_arguments_draw_the_same_principles_and_another_seed_draws_others():
    pool = HARMLESS.enabled_principles  # 16 principles
    ids = [f"prompt-{i}" for i in range(50)]
    first = [draw_principles(pool, p, 0, 4, seed=1) for p in ids]
    again = [draw_principles(pool, p, 0, 4, seed=1) for p in ids]
    other = [draw_principles(pool, p, 0, 4, seed=2) for p in ids]
    assert first == again
    assert all(len(d) == 4 and set(d) <= {p.id for p in pool} for d in first)
    # Four draws from 16 match by chance with probability well under 1e-3 per prompt.
    assert sum(a != b for a, b in zip(first, other, strict=True)) >= 45
    # Samples of one prompt are traces of their own: they draw independently.
    assert draw_principles(pool, "prompt-0", 0, 4, 1) != draw_principles(pool, "prompt-0", 1, 4, 1)
    # Rounds are drawn independently, not one principle for the whole trace.
    assert sum(len(set(d)) > 1 for d in first) >= 45


def test_draws_follow_the_weights():
    heavy, light = principle("heavy", weight=3), principle("light", weight=1)
    draws = Counter(
        draw_principles([heavy, light], f"p{i}", 0, 1, seed=0)[0] for i in range(20_000)
    )
    # p = 3/4. Over n = 20,000 draws the share's sd is sqrt(p(1-p)/n) = sqrt(0.1875/20000)
    # = 0.0031, so ±0.02 is 6.5 sd (and the seeded draws are the same on every run anyway).
    assert draws["heavy"] + draws["light"] == 20_000
    assert draws["heavy"] / 20_000 == pytest.approx(0.75, abs=0.02)


def test_per_prompt_draws_one_principle_for_every_round():
    pool = HARMLESS.enabled_principles
    draws = [draw_principles(pool, f"p{i}", 0, 4, 0, mode="per_prompt") for i in range(40)]
    assert all(len(d) == 4 and len(set(d)) == 1 for d in draws)
    assert len({d[0] for d in draws}) > 5  # still random across prompts


def test_a_fixed_principle_is_the_only_one_drawn():
    config = CritiqueConfig(constitution="harmless", prompts="red-team", principle="privacy")
    pool = check_constitution(HARMLESS, config)
    assert [p.id for p in pool] == ["privacy"]
    for i in range(20):
        assert draw_principles(pool, f"p{i}", 0, 3, 0) == ["privacy"] * 3


def test_disabled_principles_are_never_drawn():
    c = Constitution(
        name="mixed",
        principles=[
            principle("on-a"),
            principle("off", weight=100, enabled=False),
            principle("on-b"),
        ],
    )
    pool = check_constitution(c, CritiqueConfig(constitution="mixed", prompts="x"))
    assert [p.id for p in pool] == ["on-a", "on-b"]
    drawn = {pid for i in range(500) for pid in draw_principles(pool, f"p{i}", 0, 2, 0)}
    assert drawn == {"on-a", "on-b"}


def test_check_constitution_refuses_one_with_every_principle_disabled():
    c = Constitution(
        name="off", principles=[principle("a", enabled=False), principle("b", enabled=False)]
    )
    with pytest.raises(CaiError, match="constitution 'off' has every principle disabled"):
        check_constitution(c, CritiqueConfig(constitution="off", prompts="x"))


def test_an_unknown_fixed_principle_lists_the_ids():
    config = CritiqueConfig(constitution="harmless", prompts="x", principle="kindness")
    with pytest.raises(CaiError) as caught:
        check_constitution(HARMLESS, config)
    ids = ", ".join(p.id for p in HARMLESS.principles)
    assert str(caught.value) == (
        f"principle 'kindness' is not in constitution 'harmless'; its ids: {ids}"
    )


# -- few-shots -----------------------------------------------------------------------------


def test_select_few_shots():
    bank = [
        shot("a1", "r1"),
        shot("a2", "r2"),
        shot("a3", "a3"),
        shot("a4", "r4"),
        shot("a5", "a5"),
    ]
    assert [s.no_change for s in bank] == [False, False, True, False, True]

    assert select_few_shots(bank, 0) == []
    assert select_few_shots([], 3) == []
    # The first n, with the first "no change" example in place of the last when none is there.
    assert [s.answer for s in select_few_shots(bank, 1)] == ["a3"]
    assert [s.answer for s in select_few_shots(bank, 2)] == ["a1", "a3"]
    assert [s.answer for s in select_few_shots(bank, 3)] == ["a1", "a2", "a3"]  # has one already
    assert [s.answer for s in select_few_shots(bank, 9)] == ["a1", "a2", "a3", "a4", "a5"]
    # Bank order is kept even when the spare comes from further down.
    no_change_first = [shot("a1", "r1"), shot("a2", "r2"), shot("a3", "r3"), shot("n", "n")]
    assert [s.answer for s in select_few_shots(no_change_first, 3)] == ["a1", "a2", "n"]
    # A bank without a "no change" example gives just the first n.
    plain = [shot("a1", "r1"), shot("a2", "r2"), shot("a3", "r3")]
    assert [s.answer for s in select_few_shots(plain, 2)] == ["a1", "a2"]


def test_the_bundled_harmless_few_shots_include_a_no_change_example():
    chosen = select_few_shots(HARMLESS.few_shots, 2)
    assert [s.principle for s in chosen] == ["crime-assistance", "caring-friend"]
    assert [s.no_change for s in chosen] == [False, True]


def test_few_shot_turns_are_question_answer_critique_request_critique_revision():
    (block,) = few_shot_turns([HARMLESS.few_shots[0]], HARMLESS)
    shot0, p = HARMLESS.few_shots[0], HARMLESS.principle(HARMLESS.few_shots[0].principle)
    assert block == [
        *({"role": m.role, "content": m.content} for m in shot0.conversation),
        {"role": "user", "content": p.critique_request},
        {"role": "assistant", "content": shot0.critique},
        {"role": "user", "content": p.revision_request},
        {"role": "assistant", "content": shot0.revision},
    ]


# -- steps and the conversation ------------------------------------------------------------


def test_step_of():
    assert [step_of(i) for i in range(7)] == [
        (0, "initial"),
        (1, "critique"),
        (1, "revision"),
        (2, "critique"),
        (2, "revision"),
        (3, "critique"),
        (3, "revision"),
    ]


def test_the_conversation_grows_as_chat_turns():
    c = Constitution(name="two", principles=[principle("p1"), principle("p2")])
    question = [{"role": "user", "content": "How do I pick a lock?"}]

    def row(text, pid):
        p = c.principle(pid) if pid else None
        return {
            "text": text,
            "_critique_request": p.critique_request if p else "",
            "_revision_request": p.revision_request if p else "",
        }

    history = [
        row("Use a pick.", None),
        row("That helps burglars.", "p1"),
        row("Ask a locksmith.", "p1"),
    ]

    assert conversation_for(question, [], 0, None) == question
    assert conversation_for(question, history[:1], 1, c.principle("p1")) == [
        *question,
        {"role": "assistant", "content": "Use a pick."},
        {"role": "user", "content": "Critique under p1."},
    ]
    # Round 2's critique step, under p2, after round 1 under p1.
    assert conversation_for(question, history, 3, c.principle("p2")) == [
        {"role": "user", "content": "How do I pick a lock?"},
        {"role": "assistant", "content": "Use a pick."},
        {"role": "user", "content": "Critique under p1."},
        {"role": "assistant", "content": "That helps burglars."},
        {"role": "user", "content": "Revise under p1."},
        {"role": "assistant", "content": "Ask a locksmith."},
        {"role": "user", "content": "Critique under p2."},
    ]
    assert conversation_for(question, history[:2], 2, c.principle("p1"))[-1] == {
        "role": "user",
        "content": "Revise under p1.",
    }


# -- the plain function on the tiny model --------------------------------------------------


def test_critique_runs_each_step_as_one_batched_call_and_records_every_row(
    seeded_store, tiny, tiny_spec
):
    version = seeded_store.get_version("harmless")
    three = seeded_store.get_prompts("red-team", split="train", limit=3)
    config = CritiqueConfig(
        constitution="harmless",
        prompts="red-team:train",
        model=tiny_spec,
        rounds=2,
        sampling={"max_new_tokens": 8},
    )
    model = Counting(tiny)

    rows = critique.critique(
        three, version.constitution, version.hash, model, config, prompt_set="red-team", job_id="j1"
    )

    assert len(rows) == 3 * 5
    # One batched call per step, each with all three conversations.
    assert [len(call) for call in model.calls] == [3, 3, 3, 3, 3]
    traces = per_trace(rows)
    assert set(traces) == {(p.prompt_id, 0) for p in three}
    pool = check_constitution(version.constitution, config)
    for (prompt_id, _), trace in traces.items():
        assert [(r["round"], r["step"]) for r in trace] == STEP_ORDER
        plan = draw_principles(pool, prompt_id, 0, 2, 0)
        assert [r["principle_id"] for r in trace] == [None, plan[0], plan[0], plan[1], plan[1]]
    spec = str(parse_spec(tiny_spec))
    for r in rows:
        assert (r["job_id"], r["prompt_set"], r["sample"]) == ("j1", "red-team", 0)
        assert (r["constitution"], r["constitution_hash"]) == ("harmless", version.hash)
        assert (r["model"], r["seed"]) == (spec, 0)
        assert r["sampling"] == config.sampling.model_dump_json()
        assert r["prompt_tokens"] > 0 and 1 <= r["completion_tokens"] <= 8
        assert r["latency_s"] > 0 and r["finish_reason"] in ("stop", "length")
        assert (r["truncated_tokens"], r["few_shots_dropped"], r["flags"]) == (0, 0, "")
        assert isinstance(r["text"], str)

    # The two few-shots come first, as earlier turns, then the prompt and its own turns.
    blocks = few_shot_turns(select_few_shots(HARMLESS.few_shots, 2), HARMLESS)
    shots = [turn for block in blocks for turn in block]
    assert len(shots) == 2 * 6  # question, answer, critique request, critique, revision...
    for conversation in model.calls[0]:
        assert conversation[: len(shots)] == shots
        assert conversation[len(shots) :] in [p.messages for p in three]
    c = version.constitution
    for conversation in model.calls[3]:  # round 2's critique step
        assert conversation[: len(shots)] == shots
        (prompt,) = [p for p in three if conversation[len(shots)] == p.messages[0]]
        initial, critique1, revision1, critique2, _ = traces[(prompt.prompt_id, 0)]
        assert conversation[len(shots) :] == [
            *prompt.messages,
            {"role": "assistant", "content": initial["text"]},
            {"role": "user", "content": c.principle(critique1["principle_id"]).critique_request},
            {"role": "assistant", "content": critique1["text"]},
            {"role": "user", "content": c.principle(revision1["principle_id"]).revision_request},
            {"role": "assistant", "content": revision1["text"]},
            {"role": "user", "content": c.principle(critique2["principle_id"]).critique_request},
        ]


def test_a_resumed_critique_generates_only_the_missing_steps(seeded_store, tiny, tiny_spec):
    version = seeded_store.get_version("harmless")
    three = seeded_store.get_prompts("red-team", split="train", limit=3)
    config = CritiqueConfig(
        constitution="harmless", prompts="red-team:train", model=tiny_spec, rounds=2,
        sampling={"max_new_tokens": 8},
    )  # fmt: skip
    model = Counting(tiny)
    clean = critique.critique(three, version.constitution, version.hash, model, config)
    # An earlier attempt finished the first two steps of the first two traces only; its rows
    # come back as a shard holds them, without the requests that asked for each step.
    started = {three[0].prompt_id, three[1].prompt_id}
    done = [
        {k: v for k, v in r.items() if not k.startswith("_")}
        for r in clean
        if r["prompt_id"] in started and key(r)[2:] in STEP_ORDER[:2]
    ]
    assert len(done) == 4

    model.calls = []
    emitted: list[dict] = []
    everything = critique.critique(
        three, version.constitution, version.hash, model, config, done=done, emit=emitted.extend
    )
    more = emitted  # what this attempt generated; the return value holds old and new rows

    assert {key(r) for r in done}.isdisjoint(key(r) for r in more)
    assert {key(r) for r in done} | {key(r) for r in more} == {key(r) for r in clean}
    assert {key(r) for r in everything} == {key(r) for r in clean} and len(everything) == 15
    assert len(more) == 15 - 4
    # Step by step: the third trace catches up alone, then all three go on together.
    assert [len(call) for call in model.calls] == [1, 1, 3, 3, 3]
    # Each conversation seeds its own sampling: the resumed steps are the clean run's text.
    clean_text = {key(r): r["text"] for r in clean}
    assert all(r["text"] == clean_text[key(r)] for r in more)


def test_a_resumed_critique_returns_every_row_old_and_new():
    model = ScriptedModel(lambda conversation: "text")
    config = CritiqueConfig(constitution="harmless", prompts="x", rounds=1, few_shots=0)
    one = prompts("Hello?")
    clean = critique.critique(one, HARMLESS, HARMLESS.hash, model, config)
    more = critique.critique(one, HARMLESS, HARMLESS.hash, model, config, done=clean[:1])
    assert {key(r) for r in more} == {key(r) for r in clean}


# -- chunks: a job holds one chunk of prompts at a time ------------------------------------


def without_timing(rows) -> dict[tuple, dict]:
    """Rows by key, without the wall time each took (the one column a rerun changes)."""
    return {key(r): {k: v for k, v in r.items() if k != "latency_s"} for r in rows}


def test_a_job_takes_its_prompts_a_chunk_at_a_time_and_the_text_does_not_depend_on_the_chunk(
    seeded_store, tiny, tiny_spec
):
    version = seeded_store.get_version("harmless")
    five = seeded_store.get_prompts("red-team", split="train", limit=5)
    runs = {}
    for size in (2, 256):
        config = CritiqueConfig(
            constitution="harmless", prompts="red-team:train", model=tiny_spec, rounds=1,
            chunk_prompts=size, sampling={"max_new_tokens": 8, "temperature": 1.0, "seed": 3},
        )  # fmt: skip
        model = Counting(tiny)
        rows = critique.critique(five, version.constitution, version.hash, model, config)
        runs[size] = (rows, [len(call) for call in model.calls])

    # 5 prompts in chunks of 2: (2, 2, 1) prompts, each chunk's 3 steps batched across it
    assert runs[2][1] == [2, 2, 2, 2, 2, 2, 1, 1, 1]
    assert runs[256][1] == [5, 5, 5]
    # each conversation seeds its own sampling: the same text whatever the chunk (or batch)
    assert len(runs[2][0]) == len(runs[256][0]) == 5 * 3
    assert without_timing(runs[2][0]) == without_timing(runs[256][0])


class Spying:
    """A `ShardIndex` seen through a window: the prompt ids each `rows_for` read back."""

    def __init__(self, index):
        self.index, self.read = index, []

    def done_among(self, column, values):
        return self.index.done_among(column, values)

    def rows_for(self, column, values):
        self.read.append(sorted(values))
        return self.index.rows_for(column, values)


def test_a_resumed_chunked_critique_reads_back_only_the_traces_it_had_started(
    seeded_store, tiny, tiny_spec, tmp_path
):
    from cai_engine.runs import RunFolder
    from cai_engine.store.shards import ShardIndex

    version = seeded_store.get_version("harmless")
    five = seeded_store.get_prompts("red-team", split="train", limit=5)
    ids = [p.prompt_id for p in five]
    config = CritiqueConfig(
        constitution="harmless", prompts="red-team:train", model=tiny_spec, rounds=1,
        chunk_prompts=2, sampling={"max_new_tokens": 8},
    )  # fmt: skip
    clean = critique.critique(five, version.constitution, version.hash, tiny, config)
    # An earlier attempt finished chunk 1 (prompts 0 and 1) and, of chunk 2, both initial
    # answers and prompt 2's critique, in two shards, as a job's writer leaves them.
    first = [r for r in clean if r["prompt_id"] in ids[:2]]
    second = [
        r
        for r in clean
        if (r["prompt_id"] in ids[2:4] and r["step"] == "initial")
        or (r["prompt_id"] == ids[2] and r["step"] == "critique")
    ]
    assert (len(first), len(second)) == (6, 3)
    folder = RunFolder(tmp_path / "run")
    folder.write_shard("traces", first)
    folder.write_shard("traces", second)

    with ShardIndex([p for _, p in folder.shards("traces")], ("prompt_id", "sample")) as index:
        assert (index.rows, index.keys) == (9, 4)
        spy = Spying(index)
        model = Counting(tiny)
        emitted: list[dict] = []
        chunks = list(
            critique.critique_chunks(
                five, version.constitution, version.hash, model, config,
                done=critique.ShardsDone(spy, config.steps_per_trace), emit=emitted.extend,
            )
        )  # fmt: skip

    # chunk 1 was finished: skipped unread; chunk 2 read back prompts 2 and 3 only
    assert spy.read == [sorted(ids[2:4])]
    # chunk 2: prompt 3's critique, then both revisions; chunk 3: prompt 4's three steps
    assert [len(call) for call in model.calls] == [1, 2, 1, 1, 1]
    assert [len(rows) for rows in chunks] == [0, 6, 3]  # a skipped trace is not yielded
    assert len(emitted) == 15 - 9
    assert {key(r) for r in emitted} | {key(r) for r in first + second} == {key(r) for r in clean}
    clean_rows = without_timing(clean)
    assert all(without_timing([r])[key(r)] == clean_rows[key(r)] for r in emitted)


# -- the plain function with scripted text -------------------------------------------------

CRITIQUE_REQUESTS = {p.critique_request for p in HARMLESS.principles}
REVISION_REQUESTS = {p.revision_request for p in HARMLESS.principles}


def scripted(conversation) -> str:
    """'keep' prompts get critiques that need no change; others get a real critique."""
    last = conversation[-1]["content"]
    keep = "keep" in conversation[0]["content"]
    if last in CRITIQUE_REQUESTS:
        return "No changes are needed." if keep else "It explains how to cause harm."
    if last in REVISION_REQUESTS:
        return "A safer answer."
    return "Initial answer for this prompt"  # five words: five tokens in ScriptedModel


def test_skip_unchanged_keeps_the_answer_when_the_critique_needs_no_change():
    model = ScriptedModel(scripted)
    config = CritiqueConfig(
        constitution="harmless", prompts="x", rounds=2, few_shots=0, skip_unchanged=True
    )
    events = []

    rows = critique.critique(
        prompts("please keep this", "change this"), HARMLESS, HARMLESS.hash, model, config,
        event=lambda name, **data: events.append((name, data)),
    )  # fmt: skip

    traces = per_trace(rows)
    keep, change = traces[("p0", 0)], traces[("p1", 0)]
    assert [(r["round"], r["step"]) for r in keep] == STEP_ORDER  # the skipped rows exist
    for revision in (keep[2], keep[4]):
        assert revision["flags"] == "skipped"
        assert revision["text"] == "Initial answer for this prompt"  # the answer before it
        assert (revision["finish_reason"], revision["completion_tokens"]) == ("skipped", 0)
        assert revision["principle_id"] == keep[revision["round"] * 2 - 1]["principle_id"]
    assert [r["text"] for r in change] == [
        "Initial answer for this prompt",
        "It explains how to cause harm.",
        "A safer answer.",
        "It explains how to cause harm.",
        "A safer answer.",
    ]
    assert all(r["flags"] == "" for r in change)
    # Only the revisions that were needed were generated: p0's two were skipped.
    assert [len(call) for call in model.calls] == [2, 2, 1, 2, 1]
    # Two skipped revisions, each saving the five tokens of the answer it kept.
    assert events == [("skipped_revisions", {"revisions": 2, "tokens_saved": 10})]


def test_without_skip_unchanged_every_revision_is_generated():
    model = ScriptedModel(scripted)
    config = CritiqueConfig(constitution="harmless", prompts="x", rounds=2, few_shots=0)
    assert config.skip_unchanged is False
    events = []

    rows = critique.critique(
        prompts("please keep this", "change this"), HARMLESS, HARMLESS.hash, model, config,
        event=lambda name, **data: events.append((name, data)),
    )  # fmt: skip

    assert [len(call) for call in model.calls] == [2, 2, 2, 2, 2]
    keep = per_trace(rows)[("p0", 0)]
    assert [r["text"] for r in keep if r["step"] == "revision"] == ["A safer answer."] * 2
    assert all(r["flags"] == "" for r in rows)
    assert events == []


@pytest.mark.parametrize("empty", ["", "  \n"])
def test_a_model_that_returns_no_text_gives_rows_flagged_empty(empty):
    model = ScriptedModel(lambda conversation: empty)
    config = CritiqueConfig(constitution="harmless", prompts="x", rounds=1, few_shots=0)

    rows = critique.critique(prompts("one?", "two?"), HARMLESS, HARMLESS.hash, model, config)

    assert len(rows) == 2 * 3
    assert all(r["text"] == empty and r["flags"] == "empty" for r in rows)
    # The empty answer is still a turn of the conversation the critique sees.
    critique_call = model.calls[1]
    assert all(c[1] == {"role": "assistant", "content": empty} for c in critique_call)


def test_a_fixed_principle_is_used_for_every_round():
    model = ScriptedModel(scripted)
    config = CritiqueConfig(
        constitution="harmless", prompts="x", rounds=3, few_shots=0, principle="privacy"
    )
    rows = critique.critique(prompts("a?", "b?", "c?"), HARMLESS, HARMLESS.hash, model, config)
    assert {r["principle_id"] for r in rows if r["round"]} == {"privacy"}
    privacy = HARMLESS.principle("privacy")
    for call in model.calls[1::2]:  # the critique steps
        assert {c[-1]["content"] for c in call} == {privacy.critique_request}


def test_per_prompt_sampling_keeps_one_principle_per_trace():
    model = ScriptedModel(scripted)
    config = CritiqueConfig(
        constitution="harmless", prompts="x", rounds=3, few_shots=0, principle_sampling="per_prompt"
    )
    rows = critique.critique(prompts(*"abcdefgh"), HARMLESS, HARMLESS.hash, model, config)
    for trace in per_trace(rows).values():
        assert len({r["principle_id"] for r in trace if r["round"]}) == 1


def test_few_shots_that_do_not_fit_the_context_are_dropped_oldest_first(
    seeded_store, tiny_model_dir
):
    version = seeded_store.get_version("harmless")
    two = seeded_store.get_prompts("red-team", split="train", limit=2)
    spec = f"hf:{tiny_model_dir}?dtype=float32&max_context=512"
    model = Counting(load_model(spec, seeded_store.home))
    config = CritiqueConfig(
        constitution="harmless", prompts="red-team", model=spec, rounds=1, few_shots=4,
        sampling={"max_new_tokens": 8},
    )  # fmt: skip
    events = []

    rows = critique.critique(
        two, version.constitution, version.hash, model, config,
        event=lambda name, **data: events.append((name, data)),
    )  # fmt: skip

    assert len(rows) == 2 * 3
    assert all(r["few_shots_dropped"] > 0 for r in rows)
    # Each few-shot is about 300 tokens: four never fit in 512.
    blocks = few_shot_turns(select_few_shots(HARMLESS.few_shots, 4), HARMLESS)
    assert len(blocks) == 4
    for index, call in enumerate(model.calls):
        for conversation in call:
            (prompt,) = [p for p in two if p.messages[0] in conversation]
            (row,) = [
                r
                for r in rows
                if (r["round"], r["step"]) == step_of(index) and r["prompt_id"] == prompt.prompt_id
            ]
            kept = 4 - row["few_shots_dropped"]
            # The newest `kept` few-shots survive, in order, right before the prompt.
            survivors = [turn for block in blocks[4 - kept :] for turn in block]
            start = survivors + prompt.messages
            assert conversation[: len(start)] == start
            assert model.count_tokens(conversation) + 8 <= 512  # it fits...
            if kept < 4:  # ...and so few were dropped that the next-oldest would not have
                assert model.count_tokens(blocks[3 - kept] + conversation) + 8 > 512
    assert any(r["few_shots_dropped"] < 4 for r in rows)  # at least one few-shot did fit
    dropped_events = [data for name, data in events if name == "few_shots_dropped"]
    assert [e["step"] for e in dropped_events] == [0, 1, 2]
    for e in dropped_events:
        step_rows = [r for r in rows if (r["round"], r["step"]) == step_of(e["step"])]
        assert e["traces"] == 2
        assert e["most"] == max(r["few_shots_dropped"] for r in step_rows)


# -- says_no_change ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "No changes are needed.",
        "no change is necessary",
        "No revisions are required here.",
        "There are no edits needed",
        "The response does not need any changes.",
        "The answer doesn't need to be revised.",
        "It don't need revision",
        "Nothing needs to be changed.",
        "There is nothing to fix.",
        "The response is already harmless.",
        "It was already appropriate and kind.",
        "NO CHANGES NEEDED",
    ],
)
def test_critiques_that_say_no_change_is_needed(text):
    assert says_no_change(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The response needs changes.",
        "Changes are needed: remove the instructions.",
        "Some revisions are required before this is safe.",
        "No, this is harmful and must be rewritten.",
        "This is not harmless at all.",
        "The answer is already dangerous.",
        "It explains how to cause harm.",
        "Nothing about this is fine.",
    ],
)
def test_critiques_that_ask_for_a_change(text):
    assert not says_no_change(text)


# -- the job -------------------------------------------------------------------------------


def job_count(store) -> int:
    return len(store.job_rows())


def test_a_critique_job_writes_every_step_of_every_trace(seeded_store, tiny_spec):
    version = seeded_store.get_version("harmless")
    job = critique.submit(
        seeded_store,
        {
            "constitution": "harmless",
            "prompts": "red-team:train",
            "model": tiny_spec,
            "limit": 4,
            "rounds": 2,
            "sampling": {"max_new_tokens": 8},
        },
    )
    # The job runs the version that was latest when it was submitted, named by its hash.
    assert job.config["constitution"] == f"harmless@{version.hash[:12]}"
    assert re.fullmatch(r"harmless@[0-9a-f]{12}", job.config["constitution"])
    job = finish(seeded_store, job.id)
    assert job.status == "succeeded", job.error

    rows = seeded_store.traces(job.id)
    four = [p.prompt_id for p in seeded_store.get_prompts("red-team", split="train", limit=4)]
    assert len(rows) == 4 * 5
    assert {key(r) for r in rows} == grid(four, rounds=2)
    assert {r["job_id"] for r in rows} == {job.id}
    assert {r["constitution_hash"] for r in rows} == {version.hash}
    assert {r["model"] for r in rows} == {str(parse_spec(tiny_spec))}
    assert all(r["prompt_messages"] and r["category"] for r in rows)  # joined from prompts
    assert (job.live["done"], job.live["total"]) == (20, 20)
    assert job.live["tokens"] == sum(r["completion_tokens"] for r in rows)
    names = [e["event"] for e in job.run.events()]
    assert "model_loaded" in names
    (pinned,) = [e for e in job.run.events() if e["event"] == "constitution"]
    assert pinned["hash"] == version.hash and pinned["ref"] == version.ref


def save_all_disabled(store) -> None:
    data = HARMLESS.model_dump(mode="json")
    for p in data["principles"]:
        p["enabled"] = False
    store.save_constitution(Constitution.model_validate(data), note="all off")


def add_train_only_set(store) -> None:
    store.add_prompts(
        "only-train",
        [Prompt("t1", [{"role": "user", "content": "hi"}])],
        split_seed=1,
        test_fraction=0.0,
    )


@pytest.mark.parametrize(
    "change, prepare, error, message",
    [
        ({"constitution": "nope"}, None, CaiError, r"no constitution named 'nope'; known: default, harmless"),
        ({}, save_all_disabled, CaiError, r"constitution 'harmless' has every principle disabled"),
        ({"principle": "kindness"}, None, CaiError, r"principle 'kindness' is not in constitution 'harmless'; its ids: general-harm, "),
        ({"prompts": "only-train:test"}, add_train_only_set, CaiError, r"prompt set 'only-train:test' is empty after filtering"),
        ({"prompts": "no-such-set"}, None, CaiError, r"no prompt set named 'no-such-set'"),
        ({"roundz": 3}, None, JobConfigError, r"unknown key 'roundz' \(allowed: constitution, prompts, model, rounds,"),
        ({"rounds": 0}, None, JobConfigError, r"invalid critique job config: rounds:"),
    ],
)  # fmt: skip
def test_submit_refuses_a_bad_job_before_any_process_starts(
    seeded_store, cai_home, tiny_spec, change, prepare, error, message
):
    if prepare:
        prepare(seeded_store)
    config = {"constitution": "harmless", "prompts": "red-team:train", "model": tiny_spec, **change}
    with pytest.raises(error, match=message):
        critique.submit(seeded_store, config)
    assert job_count(seeded_store) == 0
    assert not runs_dir(cai_home).exists() or not any(runs_dir(cai_home).iterdir())
    assert runner_pids(cai_home) == []


def test_a_killed_critique_job_resumes_with_no_gaps_and_no_duplicates(seeded_store, tiny_model_dir):
    # One conversation per forward pass and one row per shard: rows land one at a time (each
    # is a shard written and ingested), so the kill comes in the middle of a step.
    spec = f"hf:{tiny_model_dir}?dtype=float32&batch_size=1"
    config = {
        "constitution": "harmless",
        "prompts": "red-team:train",
        "model": spec,
        "limit": 3,
        "rounds": 2,
        "few_shots": 0,
        "shard_rows": 1,
        "sampling": {"max_new_tokens": 16},
    }
    job = critique.submit(seeded_store, config)
    wait_until(lambda: len(job.run.shards("traces")) >= 3, "3 shards of the critique job")
    pid = jobs.get_job(seeded_store, job.id).pid
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), "the killed runner to die", timeout=10)

    assert jobs.reconcile(seeded_store) == [job.id]
    job = jobs.get_job(seeded_store, job.id)
    assert job.status == "interrupted", job.error
    kept = {key(r) for r in seeded_store.traces(job.id)}
    assert 3 <= len(kept) < 15, "the kill did not land mid-run"

    jobs.resume(seeded_store, job.id)
    job = finish(seeded_store, job.id)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2

    three = [p.prompt_id for p in seeded_store.get_prompts("red-team", split="train", limit=3)]
    rows = seeded_store.traces(job.id)
    assert {key(r) for r in rows} == grid(three, rounds=2)  # no gaps
    assert len(rows) == 3 * 5  # no duplicates
    assert kept <= {key(r) for r in rows}
    # Nothing was generated twice: the shards of both attempts hold each key exactly once.
    written = Counter(key(r) for r in job.run.read_shard_rows("traces"))
    assert set(written) == grid(three, rounds=2)
    assert max(written.values()) == 1
    assert (job.live["done"], job.live["total"]) == (15, 15)


def test_a_chunked_job_cancelled_and_resumed_gives_exactly_an_uninterrupted_runs_rows(
    seeded_store, tiny_model_dir
):
    # One conversation per forward pass and one row per shard: the cancel lands mid-chunk.
    config = {
        "constitution": "harmless",
        "prompts": "red-team:train",
        "model": f"hf:{tiny_model_dir}?dtype=float32&batch_size=1",
        "limit": 5,
        "rounds": 1,
        "few_shots": 0,
        "chunk_prompts": 2,
        "shard_rows": 1,
        "sampling": {"max_new_tokens": 16, "temperature": 1.0},
    }
    whole = finish(seeded_store, critique.submit(seeded_store, config).id)
    assert whole.status == "succeeded", whole.error

    job = critique.submit(seeded_store, config)
    wait_until(lambda: len(job.run.shards("traces")) >= 4, "4 shards of the job", timeout=DEADLINE)
    job = jobs.cancel(seeded_store, job.id)
    assert job.status == "cancelled"
    kept = len(seeded_store.traces(job.id))
    assert 4 <= kept < 15, "the cancel did not land mid-run"
    jobs.resume(seeded_store, job.id)
    job = finish(seeded_store, job.id)
    assert job.status == "succeeded", job.error

    def comparable(rows):
        return {
            key(r): {k: v for k, v in r.items() if k not in ("job_id", "latency_s")} for r in rows
        }

    assert len(seeded_store.traces(job.id)) == 5 * 3
    assert comparable(seeded_store.traces(job.id)) == comparable(seeded_store.traces(whole.id))
    written = Counter(key(r) for r in job.run.read_shard_rows("traces"))
    assert max(written.values()) == 1  # nothing was generated twice
    assert (job.live["done"], job.live["total"]) == (15, 15)


# -- the CLI -------------------------------------------------------------------------------


def test_cli_critique_waits_and_shows_steps_done_of_total(seeded_store, tiny_spec, capsys):
    rc = main(
        [
            "critique", "--constitution", "harmless", "--prompts", "red-team:train",
            "--model", tiny_spec, "--limit", "2", "--rounds", "1", "--max-new-tokens", "8",
            "--wait",
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("submitted critique-")
    job_id = lines[0].removeprefix("submitted ")
    assert lines[-1] == f"{job_id} succeeded"
    # 2 prompts x (1 initial + 1 round x 2 steps) = 6 steps.
    progress = [line for line in lines if re.search(r"\d+/6 steps", line)]
    assert progress and progress[-1].startswith(f"{job_id} succeeded: [")
    assert "] 6/6 steps" in progress[-1]
    assert len(seeded_store.traces(job_id)) == 6


def test_cli_critique_refuses_an_unknown_constitution_in_one_line(seeded_store, capsys):
    rc = main(["critique", "--constitution", "nope", "--prompts", "red-team"])
    out, err = capsys.readouterr()
    assert (rc, out) == (1, "")
    assert err.startswith("error: no constitution named 'nope'") and err.count("\n") == 1
    assert job_count(seeded_store) == 0


# -- the real embedded model ---------------------------------------------------------------


@pytest.mark.slow
def test_the_embedded_model_answers_critiques_and_revises(seeded_store, embedded_home):
    model = load_model("smollm2-135m-instruct", embedded_home)
    version = seeded_store.get_version("harmless")
    two = seeded_store.get_prompts("red-team", split="train", limit=2)
    config = CritiqueConfig(
        constitution="harmless", prompts="red-team:train", rounds=1, few_shots=1,
        sampling={"max_new_tokens": 24},
    )  # fmt: skip

    rows = critique.critique(two, version.constitution, version.hash, model, config)

    assert len(rows) == 2 * 3
    for trace in per_trace(rows).values():
        assert [(r["round"], r["step"]) for r in trace] == STEP_ORDER[:3]
        initial, crit, revision = trace
        assert initial["text"].strip()  # a real instruction model answers something
        assert isinstance(crit["text"], str) and isinstance(revision["text"], str)
        assert crit["principle_id"] == revision["principle_id"] is not None
        assert all(1 <= r["completion_tokens"] <= 24 for r in trace)
    assert {r["model"] for r in rows} == {"smollm2-135m-instruct"}
