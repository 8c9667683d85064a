"""Gold comparisons (`cai_engine.gold`): the JSONL loader and its errors, assembling a gold set
from the bundled file, a user's files and a constitution's unused few-shots, the gold set's
content hash, the pair dicts label jobs score, and the bundled set itself (its size, balance
and independence from the prompt sets), which a judge check is only as good as."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from cai_engine import gold as gold_module
from cai_engine.constitution import Message, load_constitution
from cai_engine.errors import CaiError
from cai_engine.gold import (
    BUNDLED_GOLD,
    GoldError,
    GoldPair,
    GoldSet,
    as_pairs,
    bundled_pairs,
    few_shot_gold,
    gold_set,
    parse_gold,
    read_gold_file,
)
from cai_engine.home import BUNDLED_CONSTITUTIONS, BUNDLED_PROMPT_SETS
from tests.test_labels import Judge, label

HARMLESS = load_constitution(BUNDLED_CONSTITUTIONS / "harmless.yaml")
RED_TEAM_TOPICS = [
    "violence", "weapons", "cybercrime", "fraud-scams", "self-harm", "privacy-doxxing",
    "child-safety", "manipulation", "theft", "drugs", "hate-discrimination",
    "harassment-bullying", "misinformation", "extremism", "dangerous-advice",
]  # fmt: skip
OVER_REFUSAL_TOPICS = {
    "looks-risky", "health-info", "history", "fiction", "security-education", "chemistry",
}  # fmt: skip
QUALITY_TOPICS = {
    "coding", "writing", "cooking", "science", "travel", "personal-finance", "how-to",
    "education", "maths",
}  # fmt: skip


def row(id="my-pair-01", **changes) -> dict:
    base = {
        "id": id,
        "category": "quality",
        "topic": "maths",
        "conversation": [{"role": "user", "content": "What is 2 + 2?"}],
        "response_a": "4.",
        "response_b": "5.",
        "preferred": "A",
    }
    return {**base, **changes}


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def problem_of(text: str) -> str:
    with pytest.raises(GoldError) as e:
        parse_gold(text, "my.jsonl")
    return str(e.value)


def write(tmp_path: Path, name: str, *rows: dict) -> Path:
    path = tmp_path / name
    path.write_text(jsonl(*rows), encoding="utf-8")
    return path


# -- the loader --------------------------------------------------------------------------------


def test_parse_gold_reads_pairs_and_skips_blank_lines():
    text = "\n" + json.dumps(row("one")) + "\r\n\n   \n" + json.dumps(row("two", preferred="B"))
    pairs = parse_gold(text, "my.jsonl")
    assert [p.id for p in pairs] == ["one", "two"]
    assert pairs[0].conversation == [Message(role="user", content="What is 2 + 2?")]
    assert (pairs[0].better, pairs[0].worse) == ("4.", "5.")
    assert (pairs[1].better, pairs[1].worse) == ("5.", "4.")
    assert pairs[0].topic == "maths" and pairs[0].note == ""


def test_malformed_json_names_the_line():
    message = problem_of(jsonl(row("one")) + '{"id": "two", \n')
    assert message.startswith("my.jsonl: 1 problem(s)")
    assert "line 2: malformed JSON at column" in message


def test_a_line_that_is_not_an_object_names_the_line():
    assert "line 1: expected a JSON object, got list" in problem_of("[1, 2]\n")


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"response_b": None}, "line 1: field 'response_b': Field required"),
        ({"preferred": "C"}, "line 1: field 'preferred': Input should be 'A' or 'B'"),
        ({"preferred": "a"}, "line 1: field 'preferred'"),
        ({"id": "Not A Slug"}, "line 1: field 'id'"),
        ({"category": ""}, "line 1: field 'category'"),
        ({"conversation": []}, "line 1: field 'conversation'"),
        ({"conversation": [{"role": "judge", "content": "hi"}]}, "field 'conversation.0.role'"),
        ({"response_a": ""}, "line 1: field 'response_a'"),
        ({"response_a": "   "}, "line 1: 'response_a' must not be blank"),
        ({"reasoning": "extra"}, "line 1: field 'reasoning': Extra inputs are not permitted"),
        (
            {
                "conversation": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                ]
            },
            "line 1: the conversation must end with a user turn",
        ),  # fmt: skip
        ({"response_b": " 4.\n"}, "line 1: response_a and response_b are identical"),
    ],
)
def test_a_bad_field_is_named_with_its_line(change, expected):
    data = {k: v for k, v in row(**change).items() if v is not None}
    assert expected in problem_of(jsonl(data))


def test_every_bad_line_is_reported_and_no_pair_is_returned():
    text = jsonl(row("good"), row("bad-side", preferred="C"), row("fine")) + "oops\n"
    message = problem_of(text)
    assert "2 problem(s)" in message
    assert "line 2: field 'preferred'" in message
    assert "line 4: malformed JSON" in message
    assert "line 1" not in message and "line 3" not in message


def test_many_problems_are_cut_short_with_a_count():
    message = problem_of("x\n" * 25)
    assert "25 problem(s)" in message
    assert "line 20: malformed JSON" in message and "line 21:" not in message
    assert message.endswith("... and 5 more")


def test_a_duplicate_id_names_both_lines():
    message = problem_of(jsonl(row("same"), row("other"), row("same", response_a="four")))
    assert "line 3: id 'same' is already used on line 1" in message


def test_a_file_with_no_pairs_is_an_error():
    assert "my.jsonl: no gold pairs in the file" in problem_of("\n \n")


def test_too_many_pairs_is_an_error(monkeypatch):
    monkeypatch.setattr(gold_module, "MAX_GOLD_PAIRS", 2)
    assert "more than 2 gold pairs" in problem_of(jsonl(row("a"), row("b"), row("c")))
    assert len(parse_gold(jsonl(row("a"), row("b")), "ok.jsonl")) == 2


def test_read_gold_file_reads_a_users_file(tmp_path):
    path = write(tmp_path, "mine.jsonl", row("one"), row("two", preferred="B"))
    assert [p.id for p in read_gold_file(path)] == ["one", "two"]
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + jsonl(row("one")).encode())
    assert [p.id for p in read_gold_file(bom)] == ["one"]


def test_read_gold_file_refuses_a_file_that_is_too_big(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:  # sparse: nothing is written, the size is what is checked
        f.truncate(gold_module.MAX_GOLD_BYTES + 1)
    with pytest.raises(CaiError) as e:
        read_gold_file(path)
    assert str(path) in str(e.value) and "the limit is 10 MB" in str(e.value)


def test_read_gold_file_errors_name_the_file(tmp_path):
    with pytest.raises(CaiError, match="no such file"):
        read_gold_file(tmp_path / "missing.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(jsonl(row("one")).encode() + b'{"id": "caf\xe9"}\n')
    with pytest.raises(CaiError, match=r"latin\.jsonl:2: not valid UTF-8"):
        read_gold_file(latin)
    bad = write(tmp_path, "bad.jsonl", row("one", preferred="B", response_b="4."))
    with pytest.raises(GoldError, match=rf"{re.escape(str(bad))}: 1 problem\(s\)"):
        read_gold_file(bad)


# -- gold_set: the bundled set, the user's files, the constitution's few-shots ----------------


def test_gold_set_is_the_bundled_set_by_default():
    gold = gold_set()
    bundled = bundled_pairs()
    assert list(gold.pairs) == bundled
    assert gold.sources == (f"the bundled gold set ({len(bundled)} pairs)",)
    assert gold.describe() == gold.sources[0]
    assert len(gold) == len(bundled)


def test_gold_set_joins_bundled_files_and_unused_few_shots_in_order(tmp_path):
    first = write(tmp_path, "first.jsonl", row("mine-1"), row("mine-2", preferred="B"))
    second = write(tmp_path, "second.jsonl", row("mine-3", category="tone"))
    gold = gold_set(files=[first, second], constitution=HARMLESS, ref="harmless@3")
    n_bundled = len(bundled_pairs())
    n_shots = len(HARMLESS.comparison_few_shots)
    assert len(gold) == n_bundled + 3 + n_shots
    ids = [p.id for p in gold.pairs]
    assert ids[n_bundled : n_bundled + 3] == ["mine-1", "mine-2", "mine-3"]
    assert ids[n_bundled + 3 :] == [f"few-shot-harmless-{i + 1}" for i in range(n_shots)]
    assert gold.sources == (
        f"the bundled gold set ({n_bundled} pairs)",
        f"{first} (2 pairs)",
        f"{second} (1 pairs)",
        f"the unused comparison few-shots of harmless@3 ({n_shots} pairs)",
    )
    counts = gold.categories()
    assert counts["few-shot"] == n_shots and counts["tone"] == 1
    assert sum(counts.values()) == len(gold)


def test_few_shot_gold_carries_the_labelled_comparisons():
    shots = few_shot_gold(HARMLESS, "harmless@2")
    assert len(shots) == len(HARMLESS.comparison_few_shots) >= 2
    for i, (pair, shot) in enumerate(zip(shots, HARMLESS.comparison_few_shots, strict=True)):
        assert pair.id == f"few-shot-harmless-{i + 1}"
        assert pair.category == "few-shot"
        assert pair.topic == (shot.principle or "")
        assert pair.conversation == shot.conversation
        assert (pair.response_a, pair.response_b) == (shot.response_a, shot.response_b)
        assert pair.preferred == shot.preferred
        assert pair.note == f"comparison few-shot {i + 1} of harmless@2"


def test_few_shots_used_in_the_run_are_not_gold():
    used = [HARMLESS.comparison_few_shots[1]]
    gold = gold_set(bundled=False, constitution=HARMLESS, used_few_shots=used)
    ids = [p.id for p in gold.pairs]
    assert "few-shot-harmless-2" not in ids
    assert len(ids) == len(HARMLESS.comparison_few_shots) - 1
    assert all(
        (p.response_a, p.response_b) != (used[0].response_a, used[0].response_b) for p in gold.pairs
    )
    # every shot used: nothing is left to test with
    with pytest.raises(GoldError, match="no gold pairs"):
        gold_set(bundled=False, constitution=HARMLESS, used_few_shots=HARMLESS.comparison_few_shots)
    everything = gold_set(constitution=HARMLESS, used_few_shots=HARMLESS.comparison_few_shots)
    assert len(everything.sources) == 1 and "few-shot" not in everything.categories()


def test_a_few_shot_that_is_not_a_usable_comparison_is_skipped():
    shots = list(HARMLESS.comparison_few_shots)
    shots[0] = shots[0].model_copy(
        update={"conversation": [*shots[0].conversation, Message(role="assistant", content="Ok")]}
    )
    shots[1] = shots[1].model_copy(update={"response_b": shots[1].response_a + "  "})
    edited = HARMLESS.model_copy(update={"comparison_few_shots": shots})
    ids = [p.id for p in few_shot_gold(edited, "edited")]
    assert ids == [f"few-shot-harmless-{i + 1}" for i in range(2, len(shots))]


def test_a_long_constitution_name_keeps_few_shot_ids_apart():
    long = HARMLESS.model_copy(update={"name": "a-very-long-constitution-name-" + "x" * 34})
    assert len(long.name) == 64
    shots = few_shot_gold(long, long.name)
    ids = [p.id for p in shots]
    assert len(set(ids)) == len(ids) == len(HARMLESS.comparison_few_shots)
    assert all(len(i) <= 64 and i.endswith(f"-{n + 1}") for n, i in enumerate(ids))
    assert len(gold_set(bundled=False, constitution=long)) == len(ids)


def test_an_id_used_twice_across_sources_names_both(tmp_path):
    mine = write(tmp_path, "mine.jsonl", row("harmless-weapons-01"))
    with pytest.raises(GoldError) as e:
        gold_set(files=[mine])
    assert str(e.value) == (
        f"gold pair id 'harmless-weapons-01' is in both the bundled gold set and {mine}"
    )
    shot = write(tmp_path, "shot.jsonl", row("few-shot-harmless-1"))
    with pytest.raises(GoldError) as e:
        gold_set(bundled=False, files=[shot], constitution=HARMLESS)
    assert str(e.value) == (
        f"gold pair id 'few-shot-harmless-1' is in both {shot} "
        "and the unused comparison few-shots of harmless"
    )
    other = write(tmp_path, "other.jsonl", row("mine-1"))
    again = write(tmp_path, "again.jsonl", row("mine-1", preferred="B"))
    with pytest.raises(GoldError, match=f"in both {re.escape(str(other))} and "):
        gold_set(bundled=False, files=[other, again])


def test_no_bundled_set_and_nothing_else_is_an_error():
    with pytest.raises(GoldError, match="the bundled set is off and no file was given"):
        gold_set(bundled=False)


# -- the hash ----------------------------------------------------------------------------------


def gold_of(*rows: dict, notes: str = "") -> GoldSet:
    pairs = tuple(GoldPair.model_validate({**r, "note": notes}) for r in rows)
    return GoldSet(pairs, ("test",))


ROWS = (
    row("a"),
    row("b", preferred="B", response_a="Paris.", response_b="Rome."),
    row("c", conversation=[{"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": "Hello!"},
                           {"role": "user", "content": "Capital of Peru?"}],
        response_a="Lima.", response_b="Quito."),
)  # fmt: skip


def test_the_hash_ignores_pair_order_notes_and_sources():
    base = gold_of(*ROWS)
    assert re.fullmatch(r"[0-9a-f]{64}", base.hash)
    assert gold_of(*reversed(ROWS)).hash == base.hash
    assert gold_of(*ROWS, notes="why A wins").hash == base.hash
    assert GoldSet(base.pairs, ("another source",)).hash == base.hash


@pytest.mark.parametrize(
    "index, change",
    [
        (0, {"response_a": "4"}),
        (0, {"response_b": "5"}),
        (1, {"preferred": "A"}),
        (0, {"conversation": [{"role": "user", "content": "What is 2 + 2 ?"}]}),
        (2, {"conversation": [{"role": "user", "content": "Hi"},
                              {"role": "assistant", "content": "Hello."},
                              {"role": "user", "content": "Capital of Peru?"}]}),
        (2, {"conversation": [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Capital of Peru?"}]}),
        (0, {"id": "a2"}),
        (0, {"category": "maths"}),
        (0, {"topic": "sums"}),
    ],
)  # fmt: skip
def test_the_hash_changes_with_anything_scored(index, change):
    rows = list(ROWS)
    rows[index] = {**rows[index], **change}
    assert gold_of(*rows).hash != gold_of(*ROWS).hash


def test_the_hash_changes_when_a_pair_is_added_or_removed():
    assert gold_of(*ROWS[:2]).hash != gold_of(*ROWS).hash


def test_the_bundled_hash_is_stable_across_loads():
    assert gold_set().hash == gold_set().hash == GoldSet(tuple(bundled_pairs()), ()).hash


# -- as_pairs ----------------------------------------------------------------------------------


def test_as_pairs_gives_the_shape_label_jobs_score():
    gold = gold_of(*ROWS)
    out = as_pairs(gold)
    assert len(out) == 3
    assert out[2] == {
        "job_id": "gold",
        "prompt_set": "gold",
        "prompt_id": "c",
        "pair": 0,
        "response_a": "Lima.",
        "response_b": "Quito.",
        "flags": "",
        "prompt_messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Capital of Peru?"},
        ],
    }
    assert [p["prompt_id"] for p in out] == ["a", "b", "c"]


def test_a_judge_that_knows_the_answers_agrees_with_every_bundled_pair():
    gold = gold_set()
    better = {p.better for p in gold.pairs}
    judge = Judge(lambda first, second: 0.9 if first in better else 0.1)
    rows = label(as_pairs(gold), judge)
    expected = {p.id: p.preferred for p in gold.pairs}
    assert {r["prompt_id"]: r["winner"] for r in rows} == expected
    assert all(r["consistent"] for r in rows)
    # and one that always takes the longer answer does not
    longer = Judge(lambda first, second: 0.9 if len(first) > len(second) else 0.1)
    hits = sum(r["winner"] == expected[r["prompt_id"]] for r in label(as_pairs(gold), longer))
    assert 0.35 <= hits / len(gold) <= 0.65


# -- the bundled set ---------------------------------------------------------------------------


BUNDLED = bundled_pairs()


def by_category(category: str) -> list[GoldPair]:
    return [p for p in BUNDLED if p.category == category]


def test_the_bundled_file_has_one_gold_pair_object_per_line():
    lines = BUNDLED_GOLD.read_text(encoding="utf-8").splitlines()
    assert all(lines) and len(lines) == len(BUNDLED)
    fields = set(GoldPair.model_fields)
    for line in lines:
        data = json.loads(line)
        assert set(data) - fields == set() and set(data) >= fields - {"note"}


def test_the_bundled_set_has_its_categories_and_counts():
    counts = Counter(p.category for p in BUNDLED)
    assert set(counts) == {"harmless", "over-refusal", "quality"}
    assert len(BUNDLED) >= 96
    assert counts["harmless"] >= 45
    assert counts["over-refusal"] >= 25
    assert counts["quality"] >= 25
    assert {"harmless-weapons-01", "over-refusal-looks-risky-01", "quality-science-01"} <= {
        p.id for p in BUNDLED
    }


def test_the_harmless_pairs_cover_every_red_team_topic_three_times():
    topics = Counter(p.topic for p in by_category("harmless"))
    assert topics == {t: 3 for t in RED_TEAM_TOPICS}
    red_team = {
        json.loads(line)["category"]
        for line in (BUNDLED_PROMPT_SETS / "red-team.jsonl").read_text().splitlines()
        if line.strip()
    }
    assert set(RED_TEAM_TOPICS) == red_team  # the same topics as the red-team prompts


def test_the_other_categories_use_their_topics():
    over = Counter(p.topic for p in by_category("over-refusal"))
    assert set(over) == OVER_REFUSAL_TOPICS and min(over.values()) >= 3
    quality = Counter(p.topic for p in by_category("quality"))
    assert set(quality) == QUALITY_TOPICS and min(quality.values()) >= 2


def test_every_id_names_its_category_and_topic_and_counts_up():
    numbers: dict[tuple[str, str], list[int]] = {}
    for p in BUNDLED:
        m = re.fullmatch(rf"{re.escape(p.category)}-{re.escape(p.topic)}-(\d\d)", p.id)
        assert m, p.id
        numbers.setdefault((p.category, p.topic), []).append(int(m.group(1)))
    for key, found in numbers.items():
        assert found == list(range(1, len(found) + 1)), key


@pytest.mark.parametrize("category", ["harmless", "over-refusal", "quality"])
def test_the_better_side_is_balanced_between_a_and_b(category):
    pairs = by_category(category)
    share_a = sum(p.preferred == "A" for p in pairs) / len(pairs)
    assert 0.4 <= share_a <= 0.6, share_a
    sides = "".join(p.preferred for p in pairs)
    assert "AA" in sides and "BB" in sides  # shuffled, not a strict alternation


@pytest.mark.parametrize("category", ["harmless", "over-refusal", "quality"])
def test_a_length_biased_judge_cannot_pass(category):
    pairs = by_category(category)
    share = sum(len(p.better) > len(p.worse) for p in pairs) / len(pairs)
    assert 0.35 <= share <= 0.65, share


def test_some_conversations_have_earlier_turns():
    multi = [p for p in BUNDLED if len(p.conversation) >= 3]
    assert len(multi) >= 6
    for p in multi:
        roles = [m.role for m in p.conversation]
        assert roles[-1] == "user" and "assistant" in roles[:-1], p.id
    assert {p.category for p in multi} == {"harmless", "over-refusal", "quality"}


def test_answer_lengths_vary():
    lengths = [len(r) for p in BUNDLED for r in (p.response_a, p.response_b)]
    assert sum(n <= 80 for n in lengths) >= 10  # a sentence or less
    assert sum(n >= 350 for n in lengths) >= 10  # four sentences or more


def test_every_pair_says_why_its_better_side_wins():
    assert all(p.note.strip() and len(p.note) <= 300 for p in BUNDLED)


def test_self_harm_pairs_point_to_help():
    for p in [p for p in by_category("harmless") if p.topic == "self-harm"]:
        assert "988" in p.better and "116 123" in p.better, p.id
        assert "988" not in p.worse


def normal(text: str) -> str:
    return " ".join(text.casefold().split())


def prompt_set_texts() -> set[str]:
    """Every user turn, and every whole conversation, of the bundled prompt sets."""
    texts = set()
    for path in BUNDLED_PROMPT_SETS.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            prompt = json.loads(line)["prompt"]
            turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            texts |= {normal(t["content"]) for t in turns if t["role"] == "user"}
            texts.add(normal(json.dumps(turns)))
    return texts


def test_no_gold_prompt_is_a_prompt_set_prompt():
    texts = prompt_set_texts()
    assert len(texts) > 300
    for p in BUNDLED:
        turns = [m.model_dump() for m in p.conversation]
        assert normal(json.dumps(turns)) not in texts, p.id
        for m in p.conversation:
            if m.role == "user":
                assert normal(m.content) not in texts, (p.id, m.content)


def test_the_bundled_set_and_the_bundled_constitutions_share_no_comparison():
    for path in sorted(BUNDLED_CONSTITUTIONS.glob("*.yaml")):
        c = load_constitution(path)
        gold = gold_set(constitution=c)  # no id clash
        shot_prompts = {normal(s.conversation[-1].content) for s in c.comparison_few_shots}
        assert not shot_prompts & {normal(p.conversation[-1].content) for p in BUNDLED}, path
        assert len(gold) == len(BUNDLED) + len(few_shot_gold(c, c.name))
