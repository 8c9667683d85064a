"""Import and export constitutions in the formats of two peer projects.

1. Anthropic's Constitutional AI paper repository:
   - `CritiqueRevisionInstructions.json`: `{key: {"prompt": ["\\n\\nCritiqueRequest: ...\\n\\nCritique:"],
     "edit_request": "\\n\\nRevisionRequest: ...\\n\\nRevision:"}}`;
   - `RLMadisonInstructions.json`: a list of comparison instructions, each ending in "Options:";
   - a few-shot file: a list of "\\n\\nHuman: ... \\n\\nAssistant: ..." transcripts with
     CritiqueRequest/Critique/RevisionRequest/Revision blocks.
   The critique file may come alone or with either of the other two.
2. Hugging Face llm-swarm: `{"constitutions": [{"critic": ..., "revision": ...}],
   "system_chat": [[{"role": ..., "content": ...}, ...]]}`, where each dialogue runs
   user → assistant → critique request → critique → revision request → revision.

Neither format has every field we keep. Where a field is missing on import, we derive it and
tag the principle `derived`, and `ImportResult.notes` says what was derived.
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


def _parse_transcript(text: str, where: str) -> dict:
    parts = _BLOCK.split("\n\n" + text.lstrip("\n"))
    blocks = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
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
    rest = dict(blocks[first : first + 4])
    missing = [
        k for k in ("CritiqueRequest", "Critique", "RevisionRequest", "Revision") if k not in rest
    ]
    if missing or not conversation or conversation[-1]["role"] != "assistant":
        raise PeerFormatError(
            f"{where}: expected Human/Assistant turns ending with an Assistant answer, then "
            f"CritiqueRequest, Critique, RevisionRequest and Revision (missing: {', '.join(missing) or 'answer'})"
        )
    return {"conversation": conversation, **rest}


def import_anthropic(
    critiques: dict,
    rl: list | None = None,
    few_shots: list | None = None,
    *,
    name: str = "anthropic",
) -> ImportResult:
    if not isinstance(critiques, dict) or not critiques:
        raise PeerFormatError(
            "the critique file must be a JSON object mapping keys to "
            '{"prompt": ["...CritiqueRequest..."], "edit_request": "...RevisionRequest..."}'
        )
    notes: list[str] = []
    principles = []
    for key, entry in critiques.items():
        where = f"critique file, key '{key}'"
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
        critique = _strip_block(prompt, "CritiqueRequest", "Critique", where)
        revision = _strip_block(entry["edit_request"], "RevisionRequest", "Revision", where)
        principles.append(
            {
                "id": _slug(key, f"p{len(principles)}"),
                "title": key,
                "critique_request": critique,
                "revision_request": revision,
            }
        )
    questions = []
    if rl is not None:
        if not isinstance(rl, list) or not all(isinstance(q, str) for q in rl):
            raise PeerFormatError("the RL instructions file must be a JSON list of strings")
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
    by_request = {p["critique_request"]: p["id"] for p in principles}
    shots = []
    for i, text in enumerate(few_shots or []):
        if not isinstance(text, str):
            raise PeerFormatError(f"few-shot file, item {i}: expected a transcript string")
        t = _parse_transcript(text, f"few-shot file, item {i}")
        shots.append(
            {
                "principle": by_request.get(t["CritiqueRequest"]),
                "conversation": t["conversation"],
                "critique": t["Critique"],
                "revision": t["Revision"],
            }
        )
    data = {
        "name": name,
        "description": "Imported from the Anthropic paper repository format.",
        "principles": principles,
        "few_shots": shots,
    }
    return ImportResult(constitution_from_data(data, "anthropic import"), "anthropic", notes)


def export_losses(c: Constitution) -> list[str]:
    """What the peer formats cannot hold of `c`, for the person exporting it (the YAML keeps
    everything): principles' own contrastive prompts, which neither format has."""
    own = [p.id for p in c.principles if p.positive_prompt or p.negative_prompt]
    if not own:
        return []
    return [
        f"the Anthropic and llm-swarm formats have no contrastive prompts: those of "
        f"{', '.join(own)} are left out of them (the YAML keeps them)"
    ]


def export_anthropic(c: Constitution) -> dict[str, object]:
    """Return `{filename: json-able object}` for the three files."""
    critiques = {
        p.id: {
            "prompt": [f"\n\nCritiqueRequest: {p.critique_request}\n\nCritique:"],
            "edit_request": f"\n\nRevisionRequest: {p.revision_request}\n\nRevision:",
        }
        for p in c.principles
    }
    rl = [f"{p.preference_question}\n\nOptions:" for p in c.principles]
    shots = []
    for s in c.few_shots:
        p = c.principle(s.principle) if s.principle else c.principles[0]
        turns = "".join(
            f"\n\n{'Human' if m.role == 'user' else 'Assistant'}: {m.content}"
            for m in s.conversation
            if m.role != "system"
        )
        shots.append(
            f"{turns}\n\nCritiqueRequest: {p.critique_request}\n\nCritique: {s.critique}"
            f"\n\nRevisionRequest: {p.revision_request}\n\nRevision: {s.revision}"
        )
    return {
        "CritiqueRevisionInstructions.json": critiques,
        "RLMadisonInstructions.json": rl,
        "CritiqueRevisionFewShotPrompts.json": shots,
    }


# -- llm-swarm ----------------------------------------------------------------------------


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
        principles.append(
            {
                "id": f"principle-{i + 1}",
                "title": _title_from(entry["critic"]),
                "critique_request": entry["critic"].strip(),
                "revision_request": entry["revision"].strip(),
                "preference_question": _derived_question(entry["critic"]),
                "tags": ["derived"],
            }
        )
    by_request = {p["critique_request"]: p["id"] for p in principles}
    shots = []
    for i, chat in enumerate(data.get("system_chat") or []):
        ok = (
            isinstance(chat, list)
            and len(chat) == 6
            and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in chat)
            and [m.get("role") for m in chat] == ["user", "assistant"] * 3
        )
        if not ok:
            raise PeerFormatError(
                f"system_chat[{i}]: expected 6 messages alternating user/assistant: question, answer, "
                "critique request, critique, revision request, revision"
            )
        shots.append(
            {
                "principle": by_request.get(chat[2]["content"].strip()),
                "conversation": [dict(role=m["role"], content=m["content"]) for m in chat[:2]],
                "critique": chat[3]["content"],
                "revision": chat[5]["content"],
            }
        )
    notes = [
        "llm-swarm has no preference questions; they were derived from the critique requests "
        "(tagged 'derived'); review them"
    ]
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
        p = c.principle(s.principle) if s.principle else c.principles[0]
        convo = [m for m in s.conversation if m.role != "system"][-2:]
        chats.append(
            [{"role": m.role, "content": m.content} for m in convo]
            + [
                {"role": "user", "content": p.critique_request},
                {"role": "assistant", "content": s.critique},
                {"role": "user", "content": p.revision_request},
                {"role": "assistant", "content": s.revision},
            ]
        )
    return {
        "constitutions": [
            {"critic": p.critique_request, "revision": p.revision_request} for p in c.principles
        ],
        "system_chat": chats,
    }


# -- files --------------------------------------------------------------------------------


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
        if kind not in ("critiques", "rl", "few_shots"):
            raise PeerFormatError(
                f"{label}: not one of the Anthropic files (critique instructions object, RL "
                "instructions list, or few-shot transcript list)"
            )
        if kind in by_kind:
            raise PeerFormatError(
                f"{label} and {by_kind[kind]} are both {kind} files; give one of each"
            )
        by_kind[kind] = label
    if "critiques" not in by_kind:
        given = ", ".join(
            f"{label} ({kind.replace('_', '-')} file)" for kind, label in by_kind.items()
        )
        raise PeerFormatError(
            "the Anthropic format needs the critique instructions file (CritiqueRevisionInstructions.json: "
            f'an object of {{"prompt": [...], "edit_request": ...}} entries); given: {given}'
        )
    try:
        return import_anthropic(
            parsed[by_kind["critiques"]],
            parsed.get(by_kind.get("rl", "")),
            parsed.get(by_kind.get("few_shots", "")),
            name=name or "anthropic",
        )
    except PeerFormatError as e:
        raise PeerFormatError(f"{by_kind['critiques']}: {e}") from None


def import_paths(
    paths: list[str | Path], fmt: str = "auto", name: str | None = None
) -> ImportResult:
    return import_files([(str(p), read_user_bytes(p)) for p in paths], fmt, name)
