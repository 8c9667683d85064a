"""Import and export constitutions in the formats of two peer projects.

1. Anthropic's Constitutional AI paper repository (`prompts/`):
   - `CritiqueRevisionInstructions.json`: `{key: {"prompt": ["\\n\\nCritiqueRequest: ...\\n\\nCritique:"],
     "edit_request": "\\n\\nRevisionRequest: ...\\n\\nRevision:"}}`;
   - `RLMadisonInstructions.json`: a list of comparison instructions, each ending in "Options:";
   - `CritiqueRevisionFewShotPrompts.json`: a list of "\\n\\nHuman: ... \\n\\nAssistant: ..."
     transcripts with CritiqueRequest/Critique/RevisionRequest/Revision blocks (one round or
     several);
   - `RLMadisonFewShotPrompts.json`: a list of `{"prompt": "\\n\\nHuman: ...\\n\\nAssistant:",
     "corrects": [answer], "incorrects": [answer]}` → comparison few-shots;
   - `RLMadisonPrecogFewShotPrompts.json` (chain of thought): a list of `{"prompt": ...}` whose
     text holds the conversation as "H: …"/"A: …" turns, one `{}` placeholder (where the
     comparison instruction goes), the options " (A) [[[…]]]" and " (B) [[[…]]]", the
     reasoning after "Let's think step by step:" and "So the answer is: (B)" → comparison
     few-shots with `reasoning`.
   The critique file may come with any of the others, in any order.
2. Hugging Face llm-swarm: `{"constitutions": [{"critic": ..., "revision": ...}],
   "system_chat": [[{"role": ..., "content": ...}, ...]]}`, where each chat runs question,
   answer, then one or more rounds of critique request → critique → revision request →
   revision. A chat with several rounds becomes one multi-round few-shot.

Neither format has every field we keep. Where a field is missing on import, we derive it and
tag the principle `derived`, and `ImportResult.notes` says what was derived. Text is kept as
written (the markers around it are the format's); exporting what was imported and importing
it again gives the same constitution hash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from cai_engine.constitution import (
    SLUG,
    Constitution,
    ConstitutionError,
    Problem,
    constitution_from_data,
    parse_constitution,
)
from cai_engine.errors import CaiError
from cai_engine.files import decode_user_bytes, read_user_bytes

FORMATS = ("auto", "yaml", "anthropic", "llm-swarm")
_MARKERS = ("Human", "Assistant", "CritiqueRequest", "Critique", "RevisionRequest", "Revision")
_BLOCK = re.compile(r"\n\n(" + "|".join(_MARKERS) + r"):[ ]?")


@dataclass
class ImportResult:
    constitution: Constitution
    format: str
    notes: list[str] = field(default_factory=list)


class PeerFormatError(CaiError):
    pass


def _slug(text: str, fallback: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64].strip("-")
    return s if s and s[0].isalnum() else fallback


def _title_from(text: str) -> str:
    words = re.sub(r"\s+", " ", text).strip().split(" ")
    title = " ".join(words[:8])
    return (title + " …") if len(words) > 8 else title


def _derived_question(critique_request: str) -> str:
    return (
        "Which of these assistant responses does better on the following? "
        + critique_request.strip()
    )


def _strip_block(text: str, opener: str, closer: str, where: str) -> str:
    t = text.strip()
    if not t.startswith(opener + ":"):
        raise PeerFormatError(f"{where}: expected text starting with '{opener}:', got {t[:40]!r}")
    t = t[len(opener) + 1 :]
    if t.rstrip().endswith(closer + ":"):
        t = t.rstrip()[: -(len(closer) + 1)]
    return t.strip()


# -- Anthropic --------------------------------------------------------------------------

# The paper repository's file names, which the export writes.
CRITIQUES_FILE = "CritiqueRevisionInstructions.json"
RL_FILE = "RLMadisonInstructions.json"
FEW_SHOTS_FILE = "CritiqueRevisionFewShotPrompts.json"
RL_FEW_SHOTS_FILE = "RLMadisonFewShotPrompts.json"
RL_COT_FILE = "RLMadisonPrecogFewShotPrompts.json"

_ROUND = ("CritiqueRequest", "Critique", "RevisionRequest", "Revision")
_COT_STEP = "Let's think step by step:"
_COT_HEADER = "Consider the following conversation between a human (H) and an assistant (A):"
_COT_TAIL = re.compile(
    r"\n \(A\) \[\[\[(?P<a>.*?)\]\]\]\n \(B\) \[\[\[(?P<b>.*?)\]\]\]\s*\n\s*Assistant:[ ]?"
    r"Let's think step[ -]by[ -]step:(?P<reasoning>.*?)\s*\n\s*Human:\s*"
    r"So the answer is:[ ]?\((?P<answer>[AB])\)\s*",
    re.DOTALL,
)


def _natural_key(text: str) -> list:
    """`harmful9` before `harmful10`: digit runs compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t]


def _one_space(text: str) -> str:
    """The text after a marker such as 'H:' without the one space that separates them."""
    return text[1:] if text.startswith(" ") else text


def _with_space(text: str) -> str:
    return text if text[:1].isspace() else " " + text


def _parse_transcript(text: str, where: str) -> dict:
    """One critique few-shot transcript: Human/Assistant turns, then one or more rounds of
    CritiqueRequest, Critique, RevisionRequest and Revision (a trailing empty 'Human:', as
    in the paper's file, is allowed)."""
    parts = _BLOCK.split("\n\n" + text.lstrip("\n"))
    blocks = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    if blocks and blocks[-1] == ("Human", ""):
        blocks.pop()
    kinds = [k for k, _ in blocks]
    if "CritiqueRequest" not in kinds or "Revision" not in kinds:
        raise PeerFormatError(
            f"{where}: a few-shot transcript needs CritiqueRequest/Critique/RevisionRequest/Revision blocks"
        )
    first = kinds.index("CritiqueRequest")
    conversation = [
        {"role": "user" if k == "Human" else "assistant", "content": v}
        for k, v in blocks[:first]
        if k in ("Human", "Assistant")
    ]
    rest = blocks[first:]
    rounds = [dict(rest[i : i + 4]) for i in range(0, len(rest), 4)]
    bad = next(
        (i for i in range(0, len(rest), 4) if tuple(k for k, _ in rest[i : i + 4]) != _ROUND),
        None,
    )
    if bad is not None or not conversation or conversation[-1]["role"] != "assistant":
        got = " → ".join(k for k, _ in rest[bad : bad + 4]) if bad is not None else "answer"
        raise PeerFormatError(
            f"{where}: expected Human/Assistant turns ending with an Assistant answer, then "
            "one or more rounds of CritiqueRequest, Critique, RevisionRequest and Revision "
            f"(round {bad // 4 + 1 if bad is not None else 1} has: {got})"
        )
    empty = next(
        (f"{k} of round {i + 1}" for i, r in enumerate(rounds) for k in _ROUND if not r[k]), None
    )
    if empty:
        raise PeerFormatError(f"{where}: the {empty} is empty")
    return {"conversation": conversation, "rounds": rounds}


def _shot_from_rounds(
    conversation: list[dict],
    rounds: list[dict],
    principles: list[dict],
    where: str,
    unmatched: list[str],
) -> dict:
    """A few-shot from rounds of `{"CritiqueRequest", "Critique", "RevisionRequest",
    "Revision"}`: the last round names the principle whose requests it uses; requests that
    are no principle's are kept as the few-shot's own text and listed in `unmatched`."""
    by_critique = {p["critique_request"].strip(): p for p in principles}
    by_revision = {p["revision_request"].strip(): p for p in principles}
    for k, r in enumerate(rounds):
        for field_, table in (("CritiqueRequest", by_critique), ("RevisionRequest", by_revision)):
            if r[field_].strip() not in table:
                unmatched.append(f"{where} round {k + 1} {field_}")
    last = rounds[-1]
    p = by_critique.get(last["CritiqueRequest"].strip()) or by_revision.get(
        last["RevisionRequest"].strip()
    )
    shot = {
        "principle": p["id"] if p else None,
        "conversation": conversation,
        "critique": last["Critique"],
        "revision": last["Revision"],
    }
    if rounds[:-1]:
        shot["earlier_rounds"] = [
            {
                "critique_request": r["CritiqueRequest"],
                "critique": r["Critique"],
                "revision_request": r["RevisionRequest"],
                "revision": r["Revision"],
            }
            for r in rounds[:-1]
        ]
    for field_, key in (
        ("CritiqueRequest", "critique_request"),
        ("RevisionRequest", "revision_request"),
    ):
        if p is None or p[key].strip() != last[field_].strip():
            shot[key] = last[field_]
    return shot


def _unmatched_note(unmatched: list[str]) -> list[str]:
    if not unmatched:
        return []
    shown = "; ".join(unmatched[:6]) + (
        f"; … ({len(unmatched)} in all)" if len(unmatched) > 6 else ""
    )
    return [
        f"{len(unmatched)} critique/revision request(s) in the few-shots are not among the "
        f"principles' requests; they are kept as the few-shots' own text ({shown})"
    ]


def _rl_transcript(text: str, where: str) -> list[dict]:
    """'\\n\\nHuman: …\\n\\nAssistant: …\\n\\nHuman: …\\n\\nAssistant:' → the turns before the
    final, empty Assistant turn (which must be there), text kept as written."""
    if not isinstance(text, str) or not text.strip():
        raise PeerFormatError(f"{where}: expected a transcript string")
    parts = re.split(r"\n\n(Human|Assistant):", "\n\n" + text.lstrip("\n"))
    if parts[0] != "" or len(parts) < 3:
        raise PeerFormatError(
            f"{where}: expected a transcript of '\\n\\nHuman: …' and '\\n\\nAssistant: …' turns "
            "ending in '\\n\\nAssistant:'"
        )
    turns = [(parts[i], parts[i + 1]) for i in range(1, len(parts), 2)]
    role, tail = turns[-1]
    if role != "Assistant" or tail.strip():
        raise PeerFormatError(
            f"{where}: the transcript must end with an empty final 'Assistant:' turn (the answers "
            f"are 'corrects' and 'incorrects'); it ends with {text[-40:]!r}"
        )
    if len(turns) < 2:
        raise PeerFormatError(f"{where}: no 'Human:' turn before the final 'Assistant:'")
    out = []
    for k, (role, content) in enumerate(turns[:-1]):
        expected = "Human" if k % 2 == 0 else "Assistant"
        if role != expected:
            raise PeerFormatError(
                f"{where}: turn {k + 1} is '{role}:' where '{expected}:' was expected; turns "
                "alternate Human/Assistant, starting with Human"
            )
        if not content.strip():
            raise PeerFormatError(f"{where}: turn {k + 1} ('{role}:') is empty")
        out.append(
            {"role": "user" if role == "Human" else "assistant", "content": _one_space(content)}
        )
    return out


def _one_answer(entry: dict, key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], str):
        got = f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
        raise PeerFormatError(
            f"{where}, '{key}': expected a list with exactly one answer string, got {got}"
        )
    if not value[0].strip():
        raise PeerFormatError(f"{where}, '{key}': the answer is empty")
    return value[0]


def import_rl_few_shots(items: list) -> list[dict]:
    """`RLMadisonFewShotPrompts.json` → comparison few-shots. The correct answer is option
    (A) in even-numbered items and (B) in odd-numbered ones, so that both letters are
    answers."""
    if not isinstance(items, list):
        raise PeerFormatError('expected a list of {"prompt", "corrects", "incorrects"} objects')
    shots = []
    for i, entry in enumerate(items):
        where = f"item {i}"
        if not isinstance(entry, dict) or set(entry) != {"prompt", "corrects", "incorrects"}:
            keys = ", ".join(map(repr, entry)) if isinstance(entry, dict) else type(entry).__name__
            raise PeerFormatError(
                f"{where}: expected the keys 'prompt', 'corrects' and 'incorrects'; got {keys}"
            )
        conversation = _rl_transcript(entry["prompt"], f"{where}, 'prompt'")
        good = _one_answer(entry, "corrects", where)
        bad = _one_answer(entry, "incorrects", where)
        if good.strip() == bad.strip():
            raise PeerFormatError(
                f"{where}, 'incorrects': the same answer as 'corrects'; a comparison needs two "
                "different answers"
            )
        a, b, preferred = (good, bad, "A") if i % 2 == 0 else (bad, good, "B")
        shots.append(
            {"conversation": conversation, "response_a": a, "response_b": b, "preferred": preferred}
        )
    return shots


def import_rl_cot_few_shots(items: list) -> list[dict]:
    """`RLMadisonPrecogFewShotPrompts.json` → comparison few-shots with reasoning."""
    if not isinstance(items, list):
        raise PeerFormatError('expected a list of {"prompt": ...} objects')
    shots = []
    for i, entry in enumerate(items):
        where = f"item {i}"
        if (
            not isinstance(entry, dict)
            or set(entry) != {"prompt"}
            or not isinstance(entry["prompt"], str)
        ):
            raise PeerFormatError(f"{where}: expected an object with one key, 'prompt' (a string)")
        text = entry["prompt"]
        where = f"item {i}, 'prompt'"
        n = text.count("{}")
        if n != 1:
            raise PeerFormatError(
                f"{where}: "
                + ("has no '{}' placeholder" if n == 0 else f"has {n} '{{}}' placeholders")
                + "; expected exactly one, where the comparison instruction goes before the options"
            )
        head, tail = text.split("{}")
        start = head.find("\n\nH:")
        if not head.lstrip().startswith("Human:") or start < 0 or not head.endswith("\n\n"):
            raise PeerFormatError(
                f"{where}: expected 'Human: <intro>' and then the conversation as '\\n\\nH: …' / "
                "'\\n\\nA: …' turns, a blank line, and the '{}' placeholder"
            )
        parts = re.split(r"\n\n(H|A):", head[start:-2])
        turns = [(parts[k], parts[k + 1]) for k in range(1, len(parts), 2)]
        conversation = []
        for k, (role, content) in enumerate(turns):
            if role != ("H" if k % 2 == 0 else "A") or not content.strip():
                raise PeerFormatError(
                    f"{where}: conversation turn {k + 1} ('{role}:') is "
                    + (
                        "out of order; turns alternate H/A, starting with H"
                        if content.strip()
                        else "empty"
                    )
                )
            conversation.append(
                {"role": "user" if role == "H" else "assistant", "content": _one_space(content)}
            )
        if turns[-1][0] != "H":
            raise PeerFormatError(
                f"{where}: the conversation must end with a human turn ('H: …') that both options answer"
            )
        m = _COT_TAIL.fullmatch(tail)
        if not m:
            raise PeerFormatError(
                f"{where}: after the '{{}}' placeholder, expected the options '\\n (A) [[[…]]]' and "
                f"'\\n (B) [[[…]]]', then 'Assistant: {_COT_STEP} <reasoning>' and "
                "'Human:\\nSo the answer is: (A)' or '(B)'"
            )
        if m["a"].strip() == m["b"].strip():
            raise PeerFormatError(
                f"{where}: options (A) and (B) are the same answer; a comparison needs two "
                "different answers"
            )
        reasoning = _one_space(m["reasoning"])
        if not reasoning.strip():
            raise PeerFormatError(f"{where}: no reasoning after '{_COT_STEP}'")
        shots.append(
            {
                "conversation": conversation,
                "response_a": m["a"],
                "response_b": m["b"],
                "preferred": m["answer"],
                "reasoning": reasoning,
            }
        )
    return shots


def _check_keys_order(keys: list[str]) -> tuple[list[str], list[str]]:
    """The critique keys in the file's order, unless a tool sorted them as plain strings
    (`harmful1, harmful10, harmful2`): then in natural order, with a note."""
    natural = sorted(keys, key=_natural_key)
    if keys != natural and keys == sorted(keys):
        return natural, [
            "the critique keys were sorted as plain text (e.g. 'harmful10' before 'harmful2'); "
            "they were put in natural order so that they line up with the RL instructions"
        ]
    return keys, []


def import_anthropic(
    critiques: dict,
    rl: list | None = None,
    few_shots: list | None = None,
    *,
    name: str = "anthropic",
    rl_few_shots: list | None = None,
    rl_cot_few_shots: list | None = None,
    labels: dict[str, str] | None = None,
) -> ImportResult:
    """`labels` maps each kind ('critiques', 'rl', 'few_shots', 'rl_few_shots',
    'rl_cot_few_shots') to its file's name, which errors then name."""
    labels = labels or {}

    def named(kind: str, fallback: str) -> str:
        return labels.get(kind, fallback)

    if not isinstance(critiques, dict) or not critiques:
        raise PeerFormatError(
            f"{named('critiques', 'the critique file')}: must be a JSON object mapping keys to "
            '{"prompt": ["...CritiqueRequest..."], "edit_request": "...RevisionRequest..."}'
        )
    notes: list[str] = []
    keys, order_notes = _check_keys_order(list(critiques))
    notes += order_notes
    principles = []
    for key in keys:
        entry = critiques[key]
        where = f"{named('critiques', 'critique file')}, key '{key}'"
        if not isinstance(entry, dict) or "prompt" not in entry or "edit_request" not in entry:
            raise PeerFormatError(
                f"{where}: expected keys 'prompt' (a list with one string) and 'edit_request'"
            )
        prompt = entry["prompt"]
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not isinstance(entry["edit_request"], str):
            raise PeerFormatError(
                f"{where}: 'prompt' must be a list of strings and 'edit_request' a string"
            )
        critique = _strip_block(prompt, "CritiqueRequest", "Critique", f"{where}, 'prompt'")
        revision = _strip_block(
            entry["edit_request"], "RevisionRequest", "Revision", f"{where}, 'edit_request'"
        )
        principles.append(
            {
                "id": key if re.match(SLUG, key) else _slug(key, f"p{len(principles)}"),
                "title": key,
                "critique_request": critique,
                "revision_request": revision,
            }
        )
    questions = []
    if rl is not None:
        if not isinstance(rl, list) or not all(isinstance(q, str) for q in rl):
            raise PeerFormatError(
                f"{named('rl', 'the RL instructions file')}: must be a JSON list of strings"
            )
        questions = [re.sub(r"\s*Options:\s*$", "", q.strip()).strip() for q in rl]
    for i, p in enumerate(principles):
        if i < len(questions):
            p["preference_question"] = questions[i]
        else:
            p["preference_question"] = _derived_question(p["critique_request"])
            p["tags"] = ["derived"]
    if len(questions) < len(principles):
        notes.append(
            f"{len(principles) - len(questions)} preference question(s) were derived from critique "
            "requests (tagged 'derived'); review them"
        )
    for i, q in enumerate(questions[len(principles) :], start=len(principles)):
        principles.append(
            {
                "id": f"rl-{i}",
                "title": _title_from(q),
                "preference_question": q,
                "critique_request": f"Identify specific ways in which the assistant's last response falls short of this: {q}",
                "revision_request": f"Please rewrite the assistant's response so that it does better on this: {q}",
                "tags": ["derived"],
            }
        )
        notes.append(
            f"RL instruction {i} had no critique pair; its critique and revision requests were derived"
        )
    shots = []
    unmatched: list[str] = []
    multi = 0
    for i, text in enumerate(few_shots or []):
        where = f"{named('few_shots', 'few-shot file')}, item {i}"
        if not isinstance(text, str):
            raise PeerFormatError(f"{where}: expected a transcript string")
        t = _parse_transcript(text, where)
        rounds = t["rounds"]
        multi += len(rounds) > 1
        shots.append(
            _shot_from_rounds(t["conversation"], rounds, principles, f"item {i}", unmatched)
        )
    if multi:
        notes.append(
            f"{multi} few-shot transcript(s) have several critique→revision rounds; each was kept whole as a multi-round few-shot"
        )
    notes += _unmatched_note(unmatched)
    comparisons = []
    for kind, parse, what in (
        ("rl_few_shots", import_rl_few_shots, "comparison few-shot(s)"),
        ("rl_cot_few_shots", import_rl_cot_few_shots, "chain-of-thought comparison few-shot(s)"),
    ):
        items = {"rl_few_shots": rl_few_shots, "rl_cot_few_shots": rl_cot_few_shots}[kind]
        if items is None:
            continue
        try:
            found = parse(items)
        except PeerFormatError as e:
            raise PeerFormatError(f"{named(kind, kind)}: {e}") from None
        comparisons += found
        extra = (
            "; the correct answer is option (A) in even-numbered items and (B) in odd-numbered "
            "ones, so that both letters are answers"
            if kind == "rl_few_shots"
            else " with their reasoning"
        )
        notes.append(f"{len(found)} {what} from {named(kind, kind)}{extra}")
    data = {
        "name": name,
        "description": "Imported from the Anthropic paper repository format.",
        "principles": principles,
        "few_shots": shots,
        "comparison_few_shots": comparisons,
    }
    return ImportResult(constitution_from_data(data, "anthropic import"), "anthropic", notes)


def export_losses(c: Constitution, fmt: str | None = None) -> list[str]:
    """What the peer formats cannot hold of `c`, for the person exporting it (the YAML keeps
    everything): principles' own contrastive prompts, which neither format has; with `fmt`
    ('anthropic' or 'llm-swarm') also what that format loses of the comparison few-shots."""
    out = []
    own = [p.id for p in c.principles if p.positive_prompt or p.negative_prompt]
    if own:
        out.append(
            f"the Anthropic and llm-swarm formats have no contrastive prompts: those of "
            f"{', '.join(own)} are left out of them (the YAML keeps them)"
        )
    if fmt == "llm-swarm" and c.comparison_few_shots:
        out.append(
            f"llm-swarm has no comparison few-shots: {len(c.comparison_few_shots)} are left out "
            "(the YAML and the Anthropic format keep them)"
        )
    if fmt != "anthropic":
        return out
    named = [i for i, s in enumerate(c.comparison_few_shots) if s.principle]
    if named:
        out.append(
            f"the Anthropic RL few-shot files name no principle: comparison few-shot(s) "
            f"{', '.join(map(str, named))} lose theirs (the YAML keeps it)"
        )
    bad = _unexportable_comparisons(c)
    if bad:
        out.append(
            f"comparison few-shot(s) {', '.join(map(str, bad))} contain '{{}}', which the "
            "chain-of-thought file uses as its placeholder; they are left out of it"
        )
    return out


def _unexportable_comparisons(c: Constitution) -> list[int]:
    return [
        i
        for i, s in enumerate(c.comparison_few_shots)
        if s.reasoning
        and any(
            "{}" in t for t in [s.response_a, s.response_b, *(m.content for m in s.conversation)]
        )
    ]


def _requests(c: Constitution, shot) -> tuple[str, str]:
    p = c.principle(shot.principle) if shot.principle else c.principles[0]
    return (
        shot.critique_request or p.critique_request,
        shot.revision_request or p.revision_request,
    )


def _rounds(c: Constitution, shot) -> list[tuple[str, str, str, str]]:
    """Every round of a few-shot as (critique request, critique, revision request, revision)."""
    critique_request, revision_request = _requests(c, shot)
    return [
        (r.critique_request, r.critique, r.revision_request, r.revision)
        for r in shot.earlier_rounds
    ] + [(critique_request, shot.critique, revision_request, shot.revision)]


def export_anthropic(c: Constitution) -> dict[str, object]:
    """Return `{filename: json-able object}`: the critique, RL instruction and few-shot files,
    and the RL comparison few-shot files (plain and chain of thought) when there are any."""
    critiques = {
        p.id: {
            "prompt": [f"\n\nCritiqueRequest: {p.critique_request}\n\nCritique:"],
            "edit_request": f"\n\nRevisionRequest: {p.revision_request}\n\nRevision:",
        }
        for p in c.principles
    }
    rl = [f"\n{p.preference_question} Options:" for p in c.principles]  # the paper's shape
    shots = []
    for s in c.few_shots:
        turns = "".join(
            f"\n\n{'Human' if m.role == 'user' else 'Assistant'}: {m.content}"
            for m in s.conversation
            if m.role != "system"
        )
        for cr, crit, rr, rev in _rounds(c, s):
            turns += f"\n\nCritiqueRequest: {cr}\n\nCritique: {crit}\n\nRevisionRequest: {rr}\n\nRevision: {rev}"
        shots.append(turns)
    files: dict[str, object] = {
        CRITIQUES_FILE: critiques,
        RL_FILE: rl,
        FEW_SHOTS_FILE: shots,
    }
    plain, cot = [], []
    skip = set(_unexportable_comparisons(c))
    for i, s in enumerate(c.comparison_few_shots):
        convo = [m for m in s.conversation if m.role != "system"]
        if s.reasoning:
            if i in skip:
                continue
            turns = "".join(f"\n\n{'H' if m.role == 'user' else 'A'}: {m.content}" for m in convo)
            cot.append(
                {
                    "prompt": f"\n\nHuman: {_COT_HEADER}{turns}\n\n{{}}\n (A) [[[{s.response_a}]]]"
                    f"\n (B) [[[{s.response_b}]]]\n\nAssistant: {_COT_STEP}"
                    f"{_with_space(s.reasoning)}\n\nHuman:\nSo the answer is: ({s.preferred})"
                }
            )
        else:
            turns = "".join(
                f"\n\n{'Human' if m.role == 'user' else 'Assistant'}: {m.content}" for m in convo
            )
            good, bad = (
                (s.response_a, s.response_b) if s.preferred == "A" else (s.response_b, s.response_a)
            )
            plain.append(
                {"prompt": f"{turns}\n\nAssistant:", "corrects": [good], "incorrects": [bad]}
            )
    if plain:
        files[RL_FEW_SHOTS_FILE] = plain
    if cot:
        files[RL_COT_FILE] = cot
    return files


# -- llm-swarm ----------------------------------------------------------------------------

_CHAT_ROLES = ("question", "answer", "critique request", "critique", "revision request", "revision")


def _check_chat(chat, i: int) -> None:
    """A chat is question, answer, then groups of critique request, critique, revision
    request, revision; every message a {"role", "content"} object."""
    shape = (
        "question, answer, then one or more rounds of critique request, critique, revision "
        "request, revision (6, 10, 14, … messages, alternating user/assistant)"
    )
    if not isinstance(chat, list):
        raise PeerFormatError(f"system_chat[{i}]: expected a list of messages: {shape}")
    for k, m in enumerate(chat):
        what = _CHAT_ROLES[k] if k < 2 else _CHAT_ROLES[2 + (k - 2) % 4]
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise PeerFormatError(
                f'system_chat[{i}][{k}]: expected {{"role": ..., "content": str}} (the {what})'
            )
        role = "user" if k % 2 == 0 else "assistant"
        if m.get("role") != role:
            raise PeerFormatError(
                f"system_chat[{i}][{k}].role: '{m.get('role')}' where the {what} ('{role}') "
                f"belongs; the messages are out of order. Expected {shape}"
            )
        if not m["content"].strip():
            raise PeerFormatError(f"system_chat[{i}][{k}].content: the {what} is empty")
    if len(chat) < 6 or (len(chat) - 2) % 4:
        raise PeerFormatError(
            f"system_chat[{i}]: {len(chat)} message{'' if len(chat) == 1 else 's'}; expected {shape}"
        )


def import_llm_swarm(data: dict, *, name: str = "llm-swarm") -> ImportResult:
    if not isinstance(data, dict) or not isinstance(data.get("constitutions"), list):
        raise PeerFormatError(
            'an llm-swarm file must be a JSON object with "constitutions": [{"critic": ..., '
            '"revision": ...}] and optionally "system_chat"'
        )
    principles = []
    for i, entry in enumerate(data["constitutions"]):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("critic"), str)
            or not isinstance(entry.get("revision"), str)
        ):
            raise PeerFormatError(
                f'constitutions[{i}]: expected {{"critic": str, "revision": str}}'
            )
        for key in ("critic", "revision"):
            if not entry[key].strip():
                raise PeerFormatError(f"constitutions[{i}].{key}: empty")
        principles.append(
            {
                "id": f"principle-{i + 1}",
                "title": _title_from(entry["critic"]),
                "critique_request": entry["critic"],
                "revision_request": entry["revision"],
                "preference_question": _derived_question(entry["critic"]),
                "tags": ["derived"],
            }
        )
    chats = data.get("system_chat") or []
    if not isinstance(chats, list):
        raise PeerFormatError('"system_chat": expected a list of chats (lists of messages)')
    shots = []
    unmatched: list[str] = []
    multi = []
    for i, chat in enumerate(chats):
        _check_chat(chat, i)
        rounds = [
            dict(zip(_ROUND, (m["content"] for m in chat[k : k + 4]), strict=True))
            for k in range(2, len(chat), 4)
        ]
        if len(rounds) > 1:
            multi.append(f"system_chat[{i}] ({len(rounds)} rounds)")
        conversation = [dict(role=m["role"], content=m["content"]) for m in chat[:2]]
        shots.append(
            _shot_from_rounds(conversation, rounds, principles, f"system_chat[{i}]", unmatched)
        )
    notes = [
        "llm-swarm has no preference questions; they were derived from the critique requests "
        "(tagged 'derived'); review them"
    ]
    if multi:
        notes.append(
            f"{len(multi)} chat(s) have several critique→revision rounds and were kept whole "
            f"as multi-round few-shots: {', '.join(multi)}"
        )
    notes += _unmatched_note(unmatched)
    body = {
        "name": name,
        "description": "Imported from the llm-swarm format.",
        "principles": principles,
        "few_shots": shots,
    }
    return ImportResult(constitution_from_data(body, "llm-swarm import"), "llm-swarm", notes)


def export_llm_swarm(c: Constitution) -> dict:
    chats = []
    for s in c.few_shots:
        convo = [m for m in s.conversation if m.role != "system"][-2:]
        chats.append(
            [{"role": m.role, "content": m.content} for m in convo]
            + [
                {"role": role, "content": text}
                for r in _rounds(c, s)
                for role, text in zip(("user", "assistant") * 2, r, strict=True)
            ]
        )
    return {
        "constitutions": [
            {"critic": p.critique_request, "revision": p.revision_request} for p in c.principles
        ],
        "system_chat": chats,
    }


# -- files --------------------------------------------------------------------------------

_KIND_NAMES = {
    "critiques": "critique instructions",
    "rl": "RL instructions",
    "few_shots": "critique few-shot",
    "rl_few_shots": "RL comparison few-shot",
    "rl_cot_few_shots": "RL chain-of-thought few-shot",
}


def _classify(obj) -> str:
    if isinstance(obj, dict) and "constitutions" in obj:
        return "llm-swarm"
    if (
        isinstance(obj, dict)
        and obj
        and all(isinstance(v, dict) and "edit_request" in v for v in obj.values())
    ):
        return "critiques"
    if isinstance(obj, list) and obj and all(isinstance(x, str) for x in obj):
        return "few_shots" if any("CritiqueRequest:" in x for x in obj) else "rl"
    if isinstance(obj, list) and obj and all(isinstance(x, dict) and "prompt" in x for x in obj):
        if any("corrects" in x or "incorrects" in x for x in obj):
            return "rl_few_shots"
        return "rl_cot_few_shots"
    if isinstance(obj, dict) and "principles" in obj:
        return "yaml"
    return "unknown"


def import_files(
    files: list[tuple[str, bytes]], fmt: str = "auto", name: str | None = None
) -> ImportResult:
    """Import a constitution from uploaded `(filename, bytes)` pairs or read files.

    `fmt` is one of `auto`, `yaml`, `anthropic`, `llm-swarm`. Nothing is stored here.
    """
    if fmt not in FORMATS:
        raise PeerFormatError(f"unknown import format '{fmt}'; use one of {', '.join(FORMATS)}")
    if not files:
        raise PeerFormatError("no file given")
    if name is not None and not re.match(SLUG, name):
        raise PeerFormatError(
            f"--name '{name}' is not a valid constitution name: it must be a slug (lowercase "
            "letters, digits, '-' or '_', starting with a letter or digit)"
        )
    texts = [(label, decode_user_bytes(data, label)) for label, data in files]
    if fmt == "yaml" or (
        fmt == "auto" and len(texts) == 1 and texts[0][0].lower().endswith((".yaml", ".yml"))
    ):
        if len(texts) != 1:
            raise PeerFormatError("a YAML constitution is a single file")
        label, text = texts[0]
        c = parse_constitution(text, label)
        if name and name != c.name:
            c = c.model_copy(update={"name": name})
        return ImportResult(c, "yaml")
    parsed = {}
    for label, text in texts:
        try:
            parsed[label] = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConstitutionError(
                label, [Problem("", f"invalid JSON: {e.msg}", e.lineno)]
            ) from None
        except RecursionError:
            raise ConstitutionError(label, [Problem("", "the JSON is nested too deeply")]) from None
    kinds = {label: _classify(obj) for label, obj in parsed.items()}
    if fmt == "auto":
        if len(parsed) == 1 and kinds[texts[0][0]] == "yaml":
            return import_files(files, "yaml", name)
        fmt = "llm-swarm" if "llm-swarm" in kinds.values() else "anthropic"
    if fmt == "llm-swarm":
        if len(parsed) != 1:
            raise PeerFormatError("an llm-swarm constitution is a single JSON file")
        label = texts[0][0]
        try:
            return import_llm_swarm(
                parsed[label], name=name or _slug(Path(label).stem, "llm-swarm")
            )
        except PeerFormatError as e:
            raise PeerFormatError(f"{label}: {e}") from None
    by_kind: dict[str, str] = {}
    for label, kind in kinds.items():
        if kind not in _KIND_NAMES:
            raise PeerFormatError(
                f"{label}: not one of the Anthropic files (critique instructions object, RL "
                "instructions list, few-shot transcript list, or RL few-shot list of "
                '{"prompt", "corrects", "incorrects"} or chain-of-thought {"prompt"} objects)'
            )
        if kind in by_kind:
            raise PeerFormatError(
                f"{label} and {by_kind[kind]} are both {_KIND_NAMES[kind]} files; give one of each"
            )
        by_kind[kind] = label
    if "critiques" not in by_kind:
        given = ", ".join(f"{label} ({_KIND_NAMES[kind]} file)" for kind, label in by_kind.items())
        raise PeerFormatError(
            "the Anthropic format needs the critique instructions file (CritiqueRevisionInstructions.json: "
            f'an object of {{"prompt": [...], "edit_request": ...}} entries); given: {given}'
        )

    def part(kind: str):
        return parsed[by_kind[kind]] if kind in by_kind else None

    return import_anthropic(
        part("critiques"),
        part("rl"),
        part("few_shots"),
        name=name or "anthropic",
        rl_few_shots=part("rl_few_shots"),
        rl_cot_few_shots=part("rl_cot_few_shots"),
        labels=by_kind,
    )


def import_paths(
    paths: list[str | Path], fmt: str = "auto", name: str | None = None
) -> ImportResult:
    return import_files([(str(p), read_user_bytes(p)) for p in paths], fmt, name)
